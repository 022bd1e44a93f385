"""The daemon's CPU time and peak memory for one poll reconciling 100,000 jobs, 10% of them changed.

The poll runs in a fresh process that holds what rsubd holds (rsubd's modules,
the ledger, the poller, structured logging to a file); the embedded scheduler
answers from another process (bench.remote), as a real schedd would through
rsubd's worker process. So:

- daemon_cpu_seconds is this process's CPU (all threads) over `poll_once()`:
  loading the tracked jobs, unpickling the query's 100,000 ads, reconciling,
  the ledger's transactions and the log. The schedd's work is not in it; it is
  reported apart as schedd_cpu_seconds.
- daemon_peak_rss_mb is this process's peak resident memory over the poll
  (VmHWM, reset just before it); it covers the imports and the open ledger too.

A second run keeps the scheduler in the same process, as rsubd with the local
backend does, and reports the poll thread's CPU minus the CPU it spent inside
scheduler calls (inprocess.daemon_cpu_seconds) as a cross-check; its memory is
daemon and scheduler together, so it is reported only as such.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import change_some, copy, dataset, emit, open_schedd

CPU_TARGET = 0.5  # seconds (issue 17: a year's poll of 100,000 tracked)
RSS_TARGET = 250.0  # MB


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    """This process's peak resident memory since the last `_reset_peak` (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Start VmHWM afresh from the current resident size (Linux >= 4.0), so a peak reached
    before the poll (or inherited from the parent across exec) does not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _daemon_setup(state: Path) -> Any:
    import rsubd.app  # noqa: F401 - the daemon's whole import set, so the memory baseline is rsubd's
    from rsubd.ledger.store import Ledger
    from rsubd.platform import logs

    logs.configure("info", stream=open(state.parent / "rsubd.log", "a"))  # noqa: SIM115 - lives as long as the process
    return Ledger(state / "ledger.db")


def measure(state: Path, fraction: float) -> dict[str, Any]:
    """In a fresh process: one poll against the scheduler in another process."""
    from bench.remote import RemoteSchedd
    from rsubd.polling.poller import Poller

    ledger = _daemon_setup(state)
    remote = RemoteSchedd(state)
    try:
        poller = Poller(ledger, remote)  # type: ignore[arg-type]
        # rsubd polls for months: the poll measured is one after another (a quiet one, nothing changed),
        # as every poll but a start's first is. The first's CPU is reported beside it.
        gc.collect()
        first = time.process_time()
        poller.poll_once()
        first = time.process_time() - first
        made = remote.change_some(fraction)
        remote.reset()
        gc.collect()
        peak_before = _peak_mb()
        _reset_peak()
        rss_before = _rss_mb()
        cpu, wall = time.process_time(), time.perf_counter()
        report = poller.poll_once()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        peak = _peak_mb()
        return {
            "made": made, "report": report.__dict__, "calls": remote.calls,
            "daemon_cpu_seconds": round(cpu, 3), "poll_wall_seconds": round(wall, 3),
            "first_quiet_poll_cpu_seconds": round(first, 3),
            "waiting_for_schedd_seconds": round(remote.wait, 3),
            "schedd_cpu_seconds": round(remote.schedd_cpu, 3),
            "daemon_rss_before_poll_mb": round(rss_before, 1), "daemon_peak_rss_mb": round(peak, 1),
            "peak_before_poll_mb": round(peak_before, 1),
        }
    finally:
        remote.close()
        ledger.close()


class _ThreadCPU:
    """Wraps a Schedd and adds up the CPU its calls take on the calling thread."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.cpu = inner, inner.name, 0.0

    def __getattr__(self, op: str) -> Callable[..., Any]:
        method = getattr(self.inner, op)

        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.cpu += time.thread_time() - started

        return call


def measure_inprocess(state: Path, fraction: float) -> dict[str, Any]:
    """In a fresh process: one poll with the scheduler in the same process, as rsubd runs it."""
    from rsubd.polling.poller import Poller

    ledger = _daemon_setup(state)
    local = open_schedd(state)
    try:
        schedd = _ThreadCPU(local)
        poller = Poller(ledger, schedd)  # type: ignore[arg-type]
        poller.poll_once()  # as in `measure`: the poll after another
        made = change_some(local, sorted(local._procs), fraction)
        schedd.cpu = 0.0
        gc.collect()
        _reset_peak()
        cpu, wall = time.thread_time(), time.perf_counter()
        report = poller.poll_once()
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        return {
            "made": made, "report": report.__dict__,
            "poll_thread_cpu_seconds": round(cpu, 3), "inside_scheduler_cpu_seconds": round(schedd.cpu, 3),
            "daemon_cpu_seconds": round(cpu - schedd.cpu, 3), "poll_wall_seconds": round(wall, 3),
            "daemon_and_scheduler_peak_rss_mb": round(_peak_mb(), 1),
        }
    finally:
        local.close()
        ledger.close()


def _child(mode: str, template: Path, fraction: float, tree: Path | None = None) -> dict[str, Any]:
    """One measure in a fresh process over a copy of `template`; with `tree`, that tree's rsubd code."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "daemon"), str(tree / "client"), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="rsub-bench-") as tmp:
        state = Path(tmp) / "state"
        copy(template, state)
        out = subprocess.run([sys.executable, "-m", "bench.poll_cost", f"--{mode}", str(state),
                              "--fraction", str(fraction)], capture_output=True, text=True, check=True, env=env)
        result: dict[str, Any] = json.loads(out.stdout)
        return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="where datasets are kept (default: a temporary directory)")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--fraction", type=float, default=0.10)
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind; the median is reported")
    parser.add_argument("--dataset", type=Path, help="measure over this state directory (bench.year's, say)"
                        " instead of building one")
    parser.add_argument("--before-tree", type=Path, help="another checkout: alternate each run with one over its"
                        " daemon/ and client/ (first on PYTHONPATH), for figures back to back")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure-inprocess", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.fraction)))
        return
    if args.measure_inprocess:
        print(json.dumps(measure_inprocess(args.measure_inprocess, args.fraction)))
        return
    before: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rsub-bench-cache-") as tmp:
        template = args.dataset or dataset(args.cache or Path(tmp), args.jobs, args.clusters)
        separate = []
        for _ in range(args.runs):
            if args.before_tree:
                before.append(_child("measure", template, args.fraction, args.before_tree))
            separate.append(_child("measure", template, args.fraction))
        inprocess = [] if args.before_tree else [_child("measure-inprocess", template, args.fraction)
                                                 for _ in range(args.runs)]
    cpu = statistics.median(r["daemon_cpu_seconds"] for r in separate)
    rss = statistics.median(r["daemon_peak_rss_mb"] for r in separate)
    typical = min(separate, key=lambda r: abs(r["daemon_cpu_seconds"] - cpu))
    emit({
        "bench": "poll_cost", "jobs": args.jobs, "clusters": args.clusters, "changed_fraction": args.fraction,
        "targets": {"daemon_cpu_seconds": CPU_TARGET, "daemon_peak_rss_mb": RSS_TARGET},
        "daemon_cpu_seconds": cpu, "daemon_peak_rss_mb": rss,
        "meets_target": cpu <= CPU_TARGET and rss <= RSS_TARGET,
        "first_quiet_poll_cpu_seconds": statistics.median(r["first_quiet_poll_cpu_seconds"] for r in separate),
        "runs": {"daemon_cpu_seconds": [r["daemon_cpu_seconds"] for r in separate],
                 "first_quiet_poll_cpu_seconds": [r["first_quiet_poll_cpu_seconds"] for r in separate],
                 "daemon_peak_rss_mb": [r["daemon_peak_rss_mb"] for r in separate],
                 "inprocess_daemon_cpu_seconds": [r["daemon_cpu_seconds"] for r in inprocess]},
        "separate_process": typical,
        "inprocess": sorted(inprocess, key=lambda r: r["daemon_cpu_seconds"])[len(inprocess) // 2] if inprocess
        else None,
        **({"before_tree": {
            "tree": str(args.before_tree),
            "daemon_cpu_seconds": statistics.median(r["daemon_cpu_seconds"] for r in before),
            "daemon_peak_rss_mb": statistics.median(r["daemon_peak_rss_mb"] for r in before),
            "first_quiet_poll_cpu_seconds": statistics.median(r["first_quiet_poll_cpu_seconds"] for r in before),
            "runs": {k: [r[k] for r in before] for k in ("daemon_cpu_seconds", "daemon_peak_rss_mb",
                                                         "first_quiet_poll_cpu_seconds")},
            "separate_process": sorted(before, key=lambda r: r["daemon_cpu_seconds"])[len(before) // 2],
        }} if before else {}),
    })


if __name__ == "__main__":
    main()
