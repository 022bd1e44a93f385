#!/usr/bin/env bash
# The whole flow on the embedded scheduler: start rsubd, submit examples/hello.sub, wait, show the output.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="$here/.venv/bin"
work="$here/demo"

if ! "$bin/rsub" ping >/dev/null 2>&1; then
    state="${XDG_STATE_HOME:-$HOME/.local/state}/rsub"
    mkdir -p "$state" && chmod 700 "$state"
    echo "starting rsubd (its log: $state/rsubd.log; $bin/rsub daemon log shows it)"
    # Its stderr is no terminal, so rsubd writes its log to $state/rsubd.log itself (rotated);
    # rsubd.out keeps only what it prints before the log is set up (a bad config).
    nohup "$bin/rsubd" >>"$state/rsubd.out" 2>&1 </dev/null &
    for _ in $(seq 1 100); do
        "$bin/rsub" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    "$bin/rsub" ping || { echo "rsubd did not start; see $state/rsubd.out and $state/rsubd.log" >&2; exit 1; }
else
    echo "rsubd is already running"
fi

rm -rf "$work" && mkdir -p "$work"
cp "$here"/examples/hello.sub "$here"/examples/hello.sh "$here"/examples/names.txt "$here"/examples/input_*.txt "$work"/
cd "$work"
echo
echo "\$ rsub submit hello.sub"
out="$("$bin/rsub" submit --json hello.sub)"
cluster="$(printf '%s' "$out" | "$bin/python" -c 'import json,sys; print(json.load(sys.stdin)["cluster"])')"
printf '%s' "$out" | "$bin/python" -c 'import json,sys; r=json.load(sys.stdin); print("Submitted cluster", r["cluster"], "to schedd", r["schedd"]+":", " ".join(r["jobs"]))'
echo
echo "\$ rsub wait $cluster"
"$bin/rsub" wait --timeout 300 "$cluster"
echo
echo "\$ rsub status $cluster"
"$bin/rsub" status "$cluster"
echo
echo "The output landed in $work:"
for n in alpha beta gamma; do
    for f in "out_$n.txt" "err_$n.txt" "result_$n.txt"; do
        printf '  %-18s ' "$f"; tr '\n' ' ' < "$f"; echo
    done
done
echo
echo "rsubd is still running. Stop it with: $bin/rsub daemon stop"
