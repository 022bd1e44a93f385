"""Run every rsub benchmark and print one JSON document with all their figures.

    .venv/bin/python -m bench            # everything, about 35 minutes (idle takes five, steady fifteen)
    .venv/bin/python -m bench calls      # one or some of: calls poll_cost client submit dag retrieval year idle

Each benchmark is also a module of its own (`python -m bench.calls --help`).
The 100,000-job datasets are built once per run and shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from typing import Any

BENCHES = ("calls", "poll_cost", "client", "submit", "dag", "retrieval", "eventlog", "year", "idle", "steady")
NO_CACHE = ("submit", "eventlog", "idle", "steady")  # they build nothing to share


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHES)
    unknown = [b for b in chosen if b not in BENCHES]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rsub-bench-cache-") as cache:
        for name in chosen:
            args = [sys.executable, "-m", f"bench.{name}"] + ([] if name in NO_CACHE else ["--cache", cache])
            print(f"bench: running {name} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            out = subprocess.run(args, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                results[name] = {"error": out.stderr[-3000:]}
                continue
            results[name] = json.loads(out.stdout)
            results[name]["bench_seconds"] = round(time.perf_counter() - t, 1)
    summary = {name: r.get("meets_target") for name, r in results.items()}
    json.dump({"meets_target": summary, "total_seconds": round(time.perf_counter() - started, 1), **results},
              sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if all(summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
