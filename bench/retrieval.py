"""5,000 jobs completing between two polls: one retrieve call brings them home, with a bounded number of fsyncs.

A dataset of 5,000 idle jobs in 50 clusters (the embedded scheduler in fake mode);
all of them complete at once, each with a stdout and a stderr in its spool
directory (written by the bench, as a job's run would leave them). Then one
poll, behind a call-counting wrapper and with `os.fsync` counted:

- calls: the schedd calls of the poll: 1 query, 1 retrieve (whatever the number of
  jobs; the target), and of the next poll: 1 query, 1 edit (the mark);
- fsyncs: of files and of directories during the poll. Each output file is fsynced
  before its rename (its content), and each directory it lands in is fsynced once
  for the whole batch (the renames), not once per file; the ledger's commits fsync
  its WAL (a few per poll). Target: one fsync per output file, and directories and
  ledger together at most 10, however many jobs;
- the poll's CPU (this process, scheduler included: the retrieve copies 10,000
  files) and wall time; every file checked home after it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import CountingSchedd, copy, dataset, emit, ids, open_schedd, quiet
from rsubd.backends.schedd import JobStatus
from rsubd.ledger.store import Ledger
from rsubd.polling.poller import Poller

JOBS, CLUSTERS = 5000, 50


def _counting_fsync() -> tuple[Counter[str], Any]:
    counts: Counter[str] = Counter()
    real = os.fsync

    def fsync(fd: int) -> None:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if os.path.isdir(target):
            kind = "dirs"
        elif "ledger.db" in target:
            kind = "ledger"
        elif "queue.db" in target:
            kind = "scheduler_queue"
        else:
            kind = "output_files"
        counts[kind] += 1
        real(fd)

    return counts, fsync


def measure(cache: Path, jobs: int, clusters: int) -> dict[str, Any]:
    template = dataset(cache, jobs, clusters)
    with tempfile.TemporaryDirectory(prefix="rsub-bench-") as tmp:
        state = Path(tmp) / "state"
        copy(template, state)
        local = open_schedd(state)
        ledger = Ledger(state / "ledger.db")
        try:
            keys = sorted(local._procs)
            local.fake_advance(ids(keys), JobStatus.COMPLETED)
            work = Path(str(local.ad(keys[0])["SUBMIT_Iwd"]))  # out.$(Process): the clusters' procs share names
            for name in os.listdir(work):
                if name.startswith(("out.", "err.")):
                    os.unlink(work / name)  # left by an earlier run over the same dataset
            for key in keys:  # what a run leaves in the spool: the job's stdout and stderr
                spool = Path(str(local.ad(key)["Iwd"]))
                spool.mkdir(parents=True, exist_ok=True)
                (spool / "_condor_stdout").write_text(f"hello {key[1]}\n")
                (spool / "_condor_stderr").write_text("")
            schedd = CountingSchedd(local)
            poller = Poller(ledger, schedd)
            counts, fsync = _counting_fsync()
            statements: list[str] = []
            ledger._conn.set_trace_callback(statements.append)  # its commits: SQLite fsyncs in C, not os.fsync
            os.fsync = fsync  # type: ignore[assignment]  # counted for the poll only
            try:
                cpu, wall = time.process_time(), time.perf_counter()
                report = poller.poll_once()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            finally:
                os.fsync = _REAL_FSYNC
                ledger._conn.set_trace_callback(None)
            counts["ledger_commits"] = sum(1 for sql in statements if sql.strip().upper() == "COMMIT")
            calls = schedd.take()
            names = {f"{kind}.{p}" for _, p in keys for kind in ("out", "err")}
            home = sum(1 for name in names if (work / name).exists())
            mark = poller.poll_once()
            mark_calls = schedd.take()
        finally:
            local.close()
            ledger.close()
    return {
        "jobs": jobs, "clusters": clusters, "retrieved": report.retrieved, "marked_next_poll": mark.marked,
        "calls": calls, "next_poll_calls": mark_calls,
        # A ledger commit (WAL, synchronous=FULL) is one fsync of the WAL, two at a checkpoint.
        "fsyncs": {k: counts[k] for k in ("output_files", "dirs", "ledger_commits", "scheduler_queue")},
        "output_files_written": 2 * jobs,
        "poll_cpu_seconds": round(cpu, 3), "poll_wall_seconds": round(wall, 3),
        "distinct_output_names_home": f"{home} of {len(names)}",
        "meets_target": calls["retrieve"] == 1 and report.retrieved == jobs and home == len(names)
        and counts["dirs"] + counts["ledger_commits"] <= 10 and counts["output_files"] <= 2 * jobs,
    }


_REAL_FSYNC = os.fsync


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="where datasets are kept (default: a temporary directory)")
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--clusters", type=int, default=CLUSTERS)
    args = parser.parse_args(argv)
    quiet()
    with tempfile.TemporaryDirectory(prefix="rsub-bench-cache-") as tmp:
        emit({"bench": "retrieval", **measure(args.cache or Path(tmp), args.jobs, args.clusters)})


if __name__ == "__main__":
    main()
