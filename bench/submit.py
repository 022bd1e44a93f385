"""`rsub submit` against a fresh process submitting and spooling the same description straight to the backend.

At 1, 100, 1,000 and 10,000 jobs (one cluster each):

- rsub: wall time of `rsub submit job.sub` (what a user runs; one line out) against
  a running rsubd with an empty ledger (a fresh rsubd per run, its start not timed).
- direct_process: wall time of a fresh Python process that submits and spools
  the same description straight to the same backend (`python -m bench.submit
  --direct`): what a script calling the backend itself pays, start included.
- direct: the submit and spool alone, inside that process.
- cpu: CPU seconds of each side (the rsub client and rsubd over the submit; the
  fresh process), the figure a loaded machine disturbs least. The rsubd of the
  bench makes no early poll after the timed submit (`early_poll_every = 3600`,
  its budget spent by the warm-up): that poll is rsubd's next piece of work.
- parts: where rsubd's side of the time goes (wall_ms, and cpu_ms: the steps' own CPU, which
  a loaded machine disturbs least), step by step in a warm process on
  the embedded scheduler (the same calls rsubd makes, in its order): prepare
  (parse, expand, check, render), the ledger's intent, the backend's submit, the
  job rows, the spool, the spooled mark, the reply's view and its JSON.

Backends: the embedded scheduler in fake mode (both sides: no job runs, no file is
copied into the spool, inputs are still checked), or a real pool when
RSUB_BENCH_CONDOR_CONFIG names an HTCondor config file (as tests/contract takes
RSUB_TEST_CONDOR_CONFIG): rsubd then uses backend "htcondor" with that
condor_config and the schedd named by RSUB_BENCH_SCHEDD_NAME (default: this
host's name), the direct side the htcondor2 bindings; every cluster is removed
after it is timed. Target: rsub at most 1.2x direct_process at every size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.light import description, workdir

# Not bench.common nor bench.daemon here: the --direct process must import only what a script
# submitting straight to the backend would (they are imported where the other parts need them).

TARGET = 1.2
SIZES = (1, 100, 1000, 10_000)
CONDOR_ENV = "RSUB_BENCH_CONDOR_CONFIG"
SCHEDD_NAME_ENV = "RSUB_BENCH_SCHEDD_NAME"


def condor_config() -> str | None:
    return os.environ.get(CONDOR_ENV) or None


def schedd_name() -> str:
    return os.environ.get(SCHEDD_NAME_ENV) or socket.getfqdn()


def direct(root: Path, procs: int) -> float:
    """In this (fresh) process: submit + spool straight to the backend; the seconds those two calls took."""
    work = workdir(root)
    text = description(procs)
    if condor_config():
        import htcondor2

        os.chdir(work)  # the bindings resolve a relative executable against the process's cwd
        ad = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, schedd_name())
        schedd = htcondor2.Schedd(ad)
        started = time.perf_counter()
        result = schedd.submit(htcondor2.Submit(text), spool=True)
        schedd.spool(result)
        seconds = time.perf_counter() - started
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {result.cluster()}")
        return seconds
    from rsubd.backends.local.scheduler import LocalSchedd
    from rsubd.backends.schedd import SubmitRequest

    schedd = LocalSchedd("local", root / "state" / "local" / "local", execute="fake", autostart=False)
    try:
        started = time.perf_counter()
        made = schedd.submit(SubmitRequest(text=text, cwd=str(work)))
        schedd.spool(made)
        seconds = time.perf_counter() - started
    finally:
        schedd.close()
    assert made.num_procs == procs
    return seconds


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct_process(root: Path, procs: int) -> tuple[float, float, float]:
    """(wall of the fresh process, seconds of its submit + spool, its CPU seconds)."""
    cpu = children_cpu()
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bench.submit", "--direct", str(root), "--procs", str(procs)],
                         check=True, capture_output=True, text=True)
    return time.perf_counter() - started, float(json.loads(out.stdout)["seconds"]), children_cpu() - cpu


def daemon_for(root: Path) -> Any:
    from bench.daemon import Rsubd

    config = condor_config()
    if config is None:
        # No early poll after the timed submit (the warm-up's spent the budget): the poll that follows a
        # submit is rsubd's next piece of work, not the submit's, and would share the two cores with it.
        return Rsubd(root, root / "state", extra="early_poll_every = 3600")
    daemon = Rsubd(root, root / "state")
    cfg = root / "config" / "rsub" / "config.toml"
    cfg.write_text(f"""socket = "{daemon.socket}"
state_dir = "{root / 'state'}"

[[schedd]]
name = "{schedd_name()}"
backend = "htcondor"
condor_config = "{config}"
poll_interval = 3600
""")
    return daemon


def through_rsub(root: Path, procs: int) -> tuple[float, float]:
    """(wall of `rsub submit`, CPU seconds of the client and of rsubd over it)."""
    work = workdir(root)
    (work / "job.sub").write_text(description(procs))
    daemon = daemon_for(root)
    daemon.start()
    try:
        # rsubd runs for months: its first request's one-off costs (lazy imports, the thread pool) are
        # paid before timing, by a submit of one job, as some earlier submit of the user's paid them.
        (work / "warm.sub").write_text(description(1))
        warm = daemon.rsub("submit", "--json", "warm.sub", cwd=work)
        if condor_config() and warm.returncode == 0:
            daemon.rsub("rm", str(json.loads(warm.stdout)["cluster"]))
        assert daemon.proc is not None
        cpu, daemon_cpu = children_cpu(), proc_cpu(daemon.proc.pid)
        started = time.perf_counter()
        out = daemon.rsub("submit", "--json", "job.sub", cwd=work)
        seconds = time.perf_counter() - started
        cpu = children_cpu() - cpu + proc_cpu(daemon.proc.pid) - daemon_cpu
        if out.returncode != 0:
            raise RuntimeError(f"rsub submit failed: {out.returncode} {out.stderr[-2000:]}")
        if condor_config():
            daemon.rsub("rm", str(json.loads(out.stdout)["cluster"]))
    finally:
        daemon.stop()
    return seconds, cpu


def parts(root: Path, procs: int) -> dict[str, dict[str, float]]:
    """rsubd's steps for one submit, timed one by one in this process on the embedded scheduler."""
    from rsubd.backends.local.scheduler import LocalSchedd
    from rsubd.ledger.store import Ledger
    from rsubd.services.submission import prepare
    from rsubd.services.views import submitted_view

    work = workdir(root)
    ledger = Ledger(root / "state" / "ledger.db")
    schedd = LocalSchedd("local", root / "state" / "local" / "local", execute="fake", autostart=False)
    text = description(procs)
    took: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def step(name: str, fn: Any) -> Any:
        started, used = time.perf_counter(), time.process_time()
        value = fn()
        took[name] = round((time.perf_counter() - started) * 1000, 1)
        cpu[name] = round((time.process_time() - used) * 1000, 1)
        return value

    try:
        p = step("prepare", lambda: prepare(text, cwd=str(work), instance_id=ledger.instance_id,
                                            max_age_seconds=864000))
        row = step("ledger_intent", lambda: ledger.add_submit_intent(
            request_id=uuid.uuid4().hex, schedd="local", tag=p.tag, description=text,
            submitted_description=p.request.text, submit_dir=str(work), submit_file=None))
        made = step("backend_submit", lambda: schedd.submit(p.request))
        step("ledger_job_rows", lambda: ledger.record_submitted(row, made.cluster,
                                                                list(zip(made.procs, p.iwds, strict=False))))
        step("backend_spool", lambda: schedd.spool(made))
        step("ledger_spooled", lambda: ledger.record_spooled(row))
        view = step("reply_view", lambda: submitted_view(ledger.cluster_row(row) or {}, replaced=()))
        step("reply_json", lambda: json.dumps(view))
    finally:
        schedd.close()
        ledger.close()
    return {"wall_ms": took, "cpu_ms": cpu}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--direct", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--procs", type=int, default=10_000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.direct:
        print(json.dumps({"seconds": direct(args.direct, args.procs)}))
        return
    from bench.common import emit, quiet
    from bench.daemon import summary

    quiet()
    figures: dict[str, Any] = {}
    for procs in args.sizes:
        times: dict[str, list[float]] = {"rsub": [], "direct_process": [], "direct": []}
        cpus: dict[str, list[float]] = {"rsub": [], "direct_process": []}
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="rsb-", dir="/tmp") as tmp:
                wall, inner, cpu = direct_process(Path(tmp), procs)
                times["direct_process"].append(wall)
                times["direct"].append(inner)
                cpus["direct_process"].append(cpu)
            with tempfile.TemporaryDirectory(prefix="rsb-", dir="/tmp") as tmp:
                wall, cpu = through_rsub(Path(tmp), procs)
                times["rsub"].append(wall)
                cpus["rsub"].append(cpu)
        with tempfile.TemporaryDirectory(prefix="rsb-", dir="/tmp") as tmp:
            steps = parts(Path(tmp), procs)
        ratio = statistics.median(times["rsub"]) / statistics.median(times["direct_process"])
        cpu_ratio = statistics.median(cpus["rsub"]) / statistics.median(cpus["direct_process"])
        figures[str(procs)] = {"wall": {k: summary(v) for k, v in times.items()},
                               "cpu": {k: summary(v) for k, v in cpus.items()},
                               "ratio_vs_direct_process": round(ratio, 2), "cpu_ratio": round(cpu_ratio, 2),
                               "parts": steps}
    emit({"bench": "submit", "backend": "htcondor" if condor_config() else "local (fake execution)",
          "target_ratio": TARGET, "sizes": figures,
          "meets_target": all(f["ratio_vs_direct_process"] <= TARGET for f in figures.values()),
          "meets_target_in_cpu": all(f["cpu_ratio"] <= TARGET for f in figures.values())})


if __name__ == "__main__":
    main()
