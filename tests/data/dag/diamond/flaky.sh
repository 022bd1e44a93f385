#!/bin/sh
# usage: flaky.sh NODE RETRY GREETING ; exits 7 when RETRY is 0, else writes out_NODE.txt
node="$1"; retry="$2"; greeting="$3"
echo "stdout of node $node attempt retry=$retry greeting=$greeting"
if [ "$retry" = "0" ]; then
  echo "node $node failing on purpose (retry=$retry)" >&2
  exit 7
fi
echo "stderr of node $node retry=$retry" >&2
{
  echo "node $node says $greeting (retry=$retry)"
  echo "input_$node.txt: $(cat input_$node.txt)"
  echo "finished_at $(date +%s)"
} > "out_$node.txt"
exit 0
