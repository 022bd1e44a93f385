"""What rsubd costs with nothing to do: CPU seconds and wakeups over 5 minutes, and RSS at the start and end.

A real rsubd (the console script) with an empty ledger and its default config for
the backend: the embedded scheduler, or, with RSUB_BENCH_CONDOR_CONFIG naming an
HTCondor config, a real pool's schedd through rsubd's binding worker process.
After it answers (and a settling pause), the bench samples /proc over
`--seconds` (300 by default):

- cpu_seconds: rsubd's user + system CPU over the window (utime + stime);
- wakeups: context switches of all its threads over the window (voluntary ones are
  the wakeups of a sleeping thread: a timer, a poll, a select), per thread too;
- rss_mb at the start and the end of the window, of rsubd and of each child process
  (the binding workers; the embedded scheduler has none).

Target: no CPU between polls (under 1 s of CPU over the 5 minutes; the wakeups are
the polls' own: `wakeups_per_poll`, with the embedded scheduler's default 2 s poll
interval and the liveness check at the same pace) and the RSS flat (end within 5%
of start).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import emit

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def switches(pid: int) -> dict[str, int]:
    """Voluntary context switches of each thread (a sleeping thread woken: a timer, a select), by thread id.

    Involuntary ones (preempted by another process) say how loaded the machine is, not what rsubd does.
    """
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue
        out[task.name] = sum(int(line.split()[1]) for line in status.splitlines()
                             if line.startswith("voluntary_ctxt_switches"))
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def main(argv: Sequence[str] | None = None) -> None:
    from bench.daemon import Rsubd
    from bench.submit import condor_config, daemon_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after rsubd answers, before sampling")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rsb-", dir="/tmp") as tmp:
        root = Path(tmp)
        daemon: Rsubd = daemon_for(root)
        if condor_config() is None:  # the embedded scheduler's own default poll interval, not the benches' hour
            cfg = root / "config" / "rsub" / "config.toml"
            cfg.write_text(cfg.read_text().replace("poll_interval = 3600\n", ""))
        proc = daemon.start()
        try:
            time.sleep(args.settle)
            pid = proc.pid
            kids = children(pid)
            start: dict[str, Any] = {"cpu": cpu_seconds(pid), "switches": switches(pid), "rss": rss_mb(pid),
                                     "children_rss": {k: rss_mb(k) for k in kids}}
            time.sleep(args.seconds)
            end_switches = switches(pid)
            figures: dict[str, Any] = {
                "seconds": args.seconds, "cpu_seconds": round(cpu_seconds(pid) - start["cpu"], 2),
                "wakeups": sum(end_switches.get(t, 0) - start["switches"].get(t, 0) for t in end_switches),
                "wakeups_by_thread": {t: end_switches[t] - start["switches"].get(t, 0) for t in end_switches},
                "rss_mb": {"rsubd": {"start": start["rss"], "end": rss_mb(pid)},
                           **{f"worker {k}": {"start": v, "end": rss_mb(k) if Path(f"/proc/{k}").exists() else None}
                              for k, v in start["children_rss"].items()}},
            }
        finally:
            daemon.stop()
    per_second = figures["wakeups"] / args.seconds
    interval = 60.0 if condor_config() else 2.0  # the backends' default poll intervals (config.DEFAULT_POLL)
    rss = figures["rss_mb"]["rsubd"]
    emit({"bench": "idle", "backend": "htcondor" if condor_config() else "local", "poll_interval": interval,
          **figures, "wakeups_per_second": round(per_second, 2),
          "wakeups_per_poll": round(figures["wakeups"] / (args.seconds / interval), 1),
          "meets_target": figures["cpu_seconds"] < 1.0 and rss["end"] <= rss["start"] * 1.05})


if __name__ == "__main__":
    main()
