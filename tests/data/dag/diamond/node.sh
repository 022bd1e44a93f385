#!/bin/sh
# usage: node.sh NODE GREETING ; reads input_NODE.txt (and, for D, out_B.txt/out_C.txt), writes out_NODE.txt
node="$1"; greeting="$2"
echo "stdout of node $node: greeting=$greeting user=$(id -un) host=$(hostname) cwd=$(pwd)"
echo "stderr of node $node" >&2
{
  echo "node $node says $greeting"
  echo "input_$node.txt: $(cat input_$node.txt)"
  for f in out_*.txt; do
    [ "$f" = "out_$node.txt" ] && continue
    [ -f "$f" ] && echo "upstream $f: $(head -1 "$f")"
  done
  echo "finished_at $(date +%s)"
} > "out_$node.txt"
exit 0
