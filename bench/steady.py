"""rsubd's memory under a steady workload: does its RSS level off, or grow with every job it has seen?

A real rsubd (the console script) on the embedded scheduler in real mode, polling
every 5 s; a client submits one cluster of 4 short jobs (each writes a stdout, a
stderr and the cluster's event log, all retrieved home) every `--every` seconds for
`--minutes`, so the queue stays small while the ledger and the history grow. RSS of
rsubd is sampled every 30 s. The embedded scheduler runs inside rsubd, so its
queue, its history store and its ClassAds are in the figure too; the job processes
are not (each runs in a session of its own).

Figures: the samples; `rss_mb` after the warm-up (`--warmup` minutes: imports,
SQLite caches and the scheduler's indexes filling) and at the end; `growth_kb_per_job`
after the warm-up. Target: RSS flat after the warm-up (end within 5% of the
warm-up figure), the liveness issue's soak condition without its restarts, which
would hide a leak.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import emit
from bench.idle import rss_mb

JOB = "#!/bin/sh\necho out $1\necho err $1 >&2\n"
SUBMIT = """executable = job.sh
arguments = $(Process)
output = o/$(Cluster).$(Process).out
error = o/$(Cluster).$(Process).err
log = o/$(Cluster).log
queue 4
"""


def main(argv: Sequence[str] | None = None) -> None:
    from bench.daemon import Rsubd
    from tests.support.daemon import BIN

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="minutes before the growth is counted")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between submits")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rsb-", dir="/tmp") as tmp:
        root = Path(tmp)
        daemon = Rsubd(root, root / "state", execute="real", poll_interval=5)
        work = root / "work"
        (work / "o").mkdir(parents=True)
        (work / "job.sh").write_text(JOB)
        (work / "job.sh").chmod(0o755)
        (work / "job.sub").write_text(SUBMIT)
        proc = daemon.start()
        samples: list[tuple[float, float, int]] = []  # (seconds, RSS MB, clusters submitted)
        submitted = failed = 0
        try:
            started = time.monotonic()
            next_sample = started
            while (now := time.monotonic()) - started < args.minutes * 60:
                if now >= next_sample:
                    samples.append((round(now - started), rss_mb(proc.pid), submitted))
                    next_sample += 30
                out = subprocess.run([str(BIN / "rsub"), "submit", "job.sub"], cwd=work, env=daemon.env,
                                     capture_output=True, check=False)
                submitted += 1
                failed += out.returncode != 0
                time.sleep(max(0.0, args.every - (time.monotonic() - now)))
            time.sleep(15)  # the last jobs run, come home and leave the queue
            samples.append((round(time.monotonic() - started), rss_mb(proc.pid), submitted))
            retrieved = sum(1 for _ in (work / "o").glob("*.out"))
        finally:
            daemon.stop()
    warm = next((s for s in samples if s[0] >= args.warmup * 60), samples[0])
    end = samples[-1]
    jobs_after = (end[2] - warm[2]) * 4
    emit({"bench": "steady", "minutes": args.minutes, "every_seconds": args.every,
          "clusters_submitted": submitted, "submits_failed": failed, "jobs_home": retrieved,
          "samples": [{"seconds": s, "rss_mb": r, "clusters": c} for s, r, c in samples],
          "rss_mb": {"start": samples[0][1], "after_warmup": warm[1], "end": end[1]},
          "growth_kb_per_job": round((end[1] - warm[1]) * 1024 / jobs_after, 2) if jobs_after else None,
          "meets_target": end[1] <= warm[1] * 1.05})


if __name__ == "__main__":
    main()
