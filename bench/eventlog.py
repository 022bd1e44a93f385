"""The job event log's cost at retrieve: a 1,000-proc cluster whose procs come home one at a time.

The worst case for rsub's log bookkeeping (services/eventlog.py, services/retrieval.py): each
retrieve of one proc names that proc's per-proc log (`log_targets`, which expands the
cluster's description) and merges its three events into the user's log (the whole file is
read, sorted and replaced, so the merges together grow with the square of the cluster).

- log_targets: seconds for all 1,000 calls. The expansion is made once per cluster and
  kept, so this stays linear; target under 1 s (it was about 17 s when each call expanded
  the procs up to the one asked for);
- merge: seconds for all 1,000 merges, and the log's final size; target under 20 s.
  Batches of several procs per poll, the usual case, divide it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import emit
from rsubd.services import eventlog, retrieval

TEXT = ("executable = /bin/true\ninitialdir = {dir}\narguments = $(Process)\noutput = out.$(Process)\n"
        "rsub_log = job.log\nlog = $(rsub_log).rsub-$(ClusterId).$(ProcId)\nqueue {n}\n")


def _event(code: int, proc: int, second: int) -> str:
    return f"{code:03d} (007.{proc:03d}.000) 2026-12-01 12:{second // 60 % 60:02d}:{second % 60:02d} Job event\n...\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rsub-bench-eventlog-") as tmp:
        where = Path(tmp)
        text = TEXT.format(dir=where, n=args.procs)
        started = time.perf_counter()
        targets = [retrieval.log_targets(text, str(where), 7, [p])[p] for p in range(args.procs)]
        targets_s = time.perf_counter() - started
        started = time.perf_counter()
        for proc, (copies, user_log) in enumerate(targets):
            part = copies[0]  # where the retrieve writes it: the initialdir, under the copy's basename
            part.write_text(_event(0, proc, 0) + _event(1, proc, proc) + _event(5, proc, proc + 5))
            eventlog.merge(user_log, [part])
        merge_s = time.perf_counter() - started
        size = (where / "job.log").stat().st_size
    emit({"procs": args.procs, "log_targets_seconds": round(targets_s, 3), "merge_seconds": round(merge_s, 2),
          "log_bytes": size, "target": "log_targets < 1 s, merge < 20 s for 1,000 procs",
          "meets_target": targets_s < 1 and merge_s < 20})


if __name__ == "__main__":
    main()
