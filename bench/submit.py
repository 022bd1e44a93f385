"""Submitting one cluster of 10,000 jobs through `rsub submit`, against submitting it straight to the backend.

Both sides use the embedded scheduler in fake mode (no job runs, no file is
copied into the spool; inputs are still checked), so the ratio isolates what
rsub adds: the client, the socket, checking the description, the ledger's
intent and job rows, and the reply listing 10,000 job ids.

- rsub: wall time of `rsub submit job.sub` (a `queue 10000` description) against
  a running rsubd with an empty ledger and queue (a fresh one per run).
- direct: wall time of `LocalSchedd.submit()` + `spool()` of the same description
  in a warm process, the least a program calling the backend could pay; and
  `direct_process`, the same in a fresh Python process (what a command such as
  condor_submit pays to start).

Target: rsub at most 1.3x direct.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import description, emit, open_schedd, quiet, workdir
from bench.daemon import Rsubd, summary
from rsubd.backends.schedd import SubmitRequest

TARGET = 1.3
PROCS = 10_000


def direct(root: Path) -> float:
    """submit + spool straight to a fresh embedded scheduler, in this process."""
    work = workdir(root)
    schedd = open_schedd(root / "state")
    try:
        started = time.perf_counter()
        result = schedd.submit(SubmitRequest(text=description(PROCS), cwd=str(work)))
        schedd.spool(result)
        seconds = time.perf_counter() - started
    finally:
        schedd.close()
    assert result.num_procs == PROCS
    return seconds


def direct_process(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench.submit", "--direct", str(root)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def through_rsub(root: Path) -> float:
    work = workdir(root)
    (work / "job.sub").write_text(description(PROCS))
    daemon = Rsubd(root, root / "state")
    daemon.start()
    try:
        started = time.perf_counter()
        out = daemon.rsub("submit", "-v", "job.sub", cwd=work)  # -v: every id, as before issue 14
        seconds = time.perf_counter() - started
        if out.returncode != 0 or len(out.stdout.splitlines()) != PROCS + 1:
            raise RuntimeError(f"rsub submit failed: {out.returncode} {out.stderr[-2000:]}")
    finally:
        daemon.stop()
    return seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--direct", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quiet()
    if args.direct:
        print(json.dumps({"seconds": direct(args.direct)}))
        return
    times: dict[str, list[float]] = {"rsub": [], "direct": [], "direct_process": []}
    for _ in range(args.runs):
        for name, fn in (("direct", direct), ("direct_process", direct_process), ("rsub", through_rsub)):
            with tempfile.TemporaryDirectory(prefix="rsb-", dir="/tmp") as tmp:
                times[name].append(fn(Path(tmp)))
    medians: dict[str, Any] = {name: summary(t) for name, t in times.items()}
    ratio = statistics.median(times["rsub"]) / statistics.median(times["direct"])
    ratio_process = statistics.median(times["rsub"]) / statistics.median(times["direct_process"])
    emit({"bench": "submit", "procs": PROCS, "target_ratio": TARGET, "wall": medians,
          "ratio_vs_direct": round(ratio, 2), "ratio_vs_direct_process": round(ratio_process, 2),
          "meets_target": ratio <= TARGET})


if __name__ == "__main__":
    main()
