"""Schedd calls per poll with 10, 1,000 and 100,000 tracked jobs, in 1 and in 1,000 clusters.

Each case runs three polls against the embedded scheduler (fake execution, in
this process, behind a counter of calls):

- quiet: nothing changed since the last poll;
- changes: 10% of the jobs changed (half completed, a fifth started, a tenth
  held, a fifth removed by someone else, so they left the queue for history);
  the completed jobs are retrieved, but not yet marked;
- after: the next poll, whose query shows their output fetched
  (StageOutFinish), so it marks them (1 edit).

Target: exactly 1 query per poll, and at most 1 history, 1 retrieve and 1 edit.
After each poll the ledger is checked against the schedd's queue.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    CountingSchedd,
    change_some,
    copy,
    dataset,
    disagreements,
    emit,
    open_schedd,
    quiet,
    timed,
)
from rsubd.ledger.store import Ledger
from rsubd.polling.poller import Poller

SIZES = (10, 1000, 100_000)
CLUSTERS = (1, 1000)


def run_case(cache: Path, jobs: int, clusters: int) -> dict[str, Any]:
    template = dataset(cache, jobs, clusters)
    with tempfile.TemporaryDirectory(prefix="rsub-bench-") as tmp:
        state = Path(tmp) / "state"
        copy(template, state)
        ledger = Ledger(state / "ledger.db")
        local = open_schedd(state)
        schedd = CountingSchedd(local)
        poller = Poller(ledger, schedd)
        try:
            keys = [(r[0], r[1]) for r in ledger.tracked(schedd.name)]
            polls: dict[str, Any] = {}
            for name in ("quiet", "changes", "after"):
                changed = change_some(local, keys, 0.10) if name == "changes" else {}
                schedd.take()
                seconds, report = timed(poller.poll_once)
                calls = schedd.take()
                polls[name] = {
                    "calls": {k: v for k, v in calls.items() if k in ("query", "history", "retrieve", "edit")},
                    "changed": report.changed, "vanished": report.vanished, "retrieved": report.retrieved,
                    "marked": report.marked, "seconds": round(seconds, 3),
                    "disagreements": len(disagreements(ledger, local, ledger.instance_id)),
                    **({"made": changed} if changed else {}),
                }
            ok = all(p["calls"]["query"] == 1 and max(p["calls"].values()) <= 1 and p["disagreements"] == 0
                     for p in polls.values())
            return {"jobs": jobs, "clusters": min(clusters, jobs), "polls": polls, "meets_target": ok}
        finally:
            local.close()
            ledger.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="where datasets are kept (default: a temporary directory)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args(argv)
    quiet()
    with tempfile.TemporaryDirectory(prefix="rsub-bench-cache-") as tmp:
        cache = args.cache or Path(tmp)
        cases = [run_case(cache, jobs, clusters) for jobs in args.sizes for clusters in CLUSTERS]
    emit({"bench": "calls", "target": "1 query per poll; at most 1 history, 1 retrieve, 1 edit",
          "meets_target": all(c["meets_target"] for c in cases), "cases": cases})


if __name__ == "__main__":
    main()
