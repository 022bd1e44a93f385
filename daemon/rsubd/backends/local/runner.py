"""Running jobs for the embedded scheduler: the sandbox, the starter process, the outcome.

A job runs under `rsubd.backends.local.starter` in a session of its own. Its job
directory (job.json in, result.json out) and the starter's command line, which
names that directory (`live_starters`), are all a restarted scheduler needs to
find it again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rsubd.backends.local import jobads, transfer
from rsubd.backends.local.ads import Ad
from rsubd.backends.schedd import HoldCode, JobStatus
from rsubd.platform.crash import crashpoint

# HoldReasonCode 6: the starter could not start the executable.
FAILED_TO_CREATE_PROCESS = 6


def launch(ad: Ad, jobdir: Path, sandbox: Path) -> subprocess.Popen[bytes]:
    """Set up the sandbox from the spool, as file transfer does, and start the starter."""
    shutil.rmtree(sandbox, ignore_errors=True)
    sandbox.mkdir(parents=True, mode=0o700)
    if transfer.direct(ad):
        transfer.stage_direct(ad, sandbox)  # a job not spooled (a DAG node): its inputs from its Iwd
    else:
        for child in Path(ad["Iwd"]).iterdir():
            if child.name not in (transfer.STDOUT, transfer.STDERR):
                transfer.copy_tree(child, sandbox / child.name)
    if ad.get("TransferExecutable") is False:
        executable = ad["Cmd"]
    else:
        executable = str(sandbox / os.path.basename(ad["Cmd"]))
        os.chmod(executable, 0o755)
    # HTCondor gives a job a minimal environment, not the submitter's: PATH plus what it asked for.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **jobads.parse_environment(ad.get("Environment"))}
    env.update(_CONDOR_SCRATCH_DIR=str(sandbox), _CONDOR_JOB_IWD=str(sandbox), TMPDIR=str(sandbox))
    stdin = ad.get("In")
    spec = {
        "sandbox": str(sandbox),
        "executable": executable,
        "arguments": jobads.split_arguments(ad),
        "environment": env,
        "stdin": str(sandbox / os.path.basename(stdin)) if stdin and stdin != os.devnull else None,
        "before": transfer.snapshot(sandbox),
    }
    for stale in ("result.json", "starter.json"):
        (jobdir / stale).unlink(missing_ok=True)
    (jobdir / "job.json").write_text(json.dumps(spec), encoding="utf-8")
    popen = subprocess.Popen(
        [sys.executable, "-m", STARTER, os.path.abspath(jobdir)],  # absolute: what `live_starters` reads back
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    crashpoint("local.after_launch")  # a starter no record names: found again by its command line
    return popen


def result(jobdir: Path) -> dict[str, Any] | None:
    """The starter's report, once the job has ended."""
    path = jobdir / "result.json"
    if not path.exists():
        return None
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return report


STARTER = "rsubd.backends.local.starter"
_STARTER_ARGV = (b"-m", STARTER.encode())


def live_starters() -> dict[str, list[int]]:
    """Every starter running on this machine, by its job directory, found by its command line.

    A pid written down would not do: rsubd may be killed after starting a starter and before
    writing its pid, and a pid written down may have been reused since. A starter's command
    line, `python -m rsubd.backends.local.starter JOBDIR`, names its job for as long as it
    lives (a zombie's reads empty).
    """
    found: dict[str, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) >= 4 and tuple(argv[1:3]) == _STARTER_ARGV:
            found.setdefault(where(os.fsdecode(argv[3])), []).append(int(name))
    return found


def where(jobdir: Path | str) -> str:
    """A job directory as `live_starters` names it: the real path, whichever way the state directory was
    reached when the starter began (a symlink, a relative XDG_STATE_HOME)."""
    return os.path.realpath(jobdir)


def ever_launched(jobdir: Path) -> bool:
    """Whether a starter was ever started for this job directory (job.json is written before it starts)."""
    return (jobdir / "job.json").exists()


def kill_starters(pids: list[int], *, wait: float = 5.0) -> None:
    """Kill these starters' sessions (each job with its starter) and wait, up to `wait` seconds, until they are
    gone: a starter still dying must not write its result beside the next run's."""
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + wait
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if identity(pid) is not None]  # a zombie is dead
        if pids:
            time.sleep(0.01)


def identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time in clock ticks since boot) of a live process, or None if it is gone or a zombie: a pid
    checked against its start time is never another process that was given the same number since."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else (pid, int(fields[19]))  # field 3 is the state, field 22 the start
    except (OSError, IndexError, ValueError):
        return None


def kill(popen: subprocess.Popen[bytes] | None, jobdir: Path, sandbox: Path,
         adopted: tuple[int, int] | None = None) -> None:
    """Kill the job's starter's whole session (the job with it) and clear the sandbox.

    Without the Popen (a starter that outlived a restart: `adopted`, or not yet found), every
    starter of this job directory is looked for by command line and killed.
    """
    if popen is not None:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        popen.wait()
    elif ever_launched(jobdir):
        pids = live_starters().get(where(jobdir), [])
        if adopted is not None and identity(adopted[0]) == adopted and adopted[0] not in pids:
            pids.append(adopted[0])
        kill_starters(pids)
    shutil.rmtree(sandbox, ignore_errors=True)


def signame(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    return {"SIGKILL": "Killed", "SIGTERM": "Terminated", "SIGSEGV": "Segmentation fault"}.get(name, name)


def usage_attrs(ad: Ad, report: dict[str, Any]) -> Ad:
    """What the starter measured, as a schedd's ad holds it after a run (names, types and units of HTCondor 25).

    RemoteUserCpu and RemoteSysCpu are this run's seconds (floats), the Cumulative ones every run's;
    ResidentSetSize is the peak resident set in KiB (an int); MemoryUsage, which a real ad holds as
    the expression `((ResidentSetSize + 1023) / 1024)`, is its value here (MB, an int), as a projected
    query reads it: an expression would cost every poll an evaluation per job. DiskUsage is the sandbox in KiB.
    """
    usage = report.get("usage")
    if not isinstance(usage, dict) or "user_cpu" not in usage:
        return {}
    user, system = float(usage["user_cpu"]), float(usage["sys_cpu"])
    rss = int(usage["max_rss_kib"])
    return {"RemoteUserCpu": user, "RemoteSysCpu": system,
            "CumulativeRemoteUserCpu": float(ad.get("CumulativeRemoteUserCpu") or 0.0) + user,
            "CumulativeRemoteSysCpu": float(ad.get("CumulativeRemoteSysCpu") or 0.0) + system,
            "ResidentSetSize": rss, "ResidentSetSize_RAW": rss, "MemoryUsage": (rss + 1023) // 1024,
            "ImageSize": rss, "ImageSize_RAW": rss,
            "DiskUsage": int(usage.get("disk_kib") or 0), "DiskUsage_RAW": int(usage.get("disk_kib") or 0)}


def memory_overuse(ad: Ad, usage: Ad) -> str | None:
    """HTCondor's hold reason for a job whose peak memory passed its request_memory (MB), or None."""
    asked, peak = ad.get("RequestMemory"), usage.get("MemoryUsage")
    if type(asked) is not int or type(peak) is not int or peak <= asked:
        return None
    return (f"Job has gone over memory limit of {asked} megabytes. Peak usage: {peak} megabytes. "
            "Consider resubmitting with a higher request_memory.")


def outcome(job: str, ad: Ad, report: dict[str, Any], jobdir: Path, sandbox: Path, now: int) -> tuple[Ad, bool]:
    """The attributes a finished job gets, and whether it completed (else it is held)."""
    spec = json.loads((jobdir / "job.json").read_text(encoding="utf-8"))
    wall = float(ad.get("RemoteWallClockTime") or 0.0) + max(0.0, report["ended"] - report["started"])
    common: Ad = {"LastJobStatus": int(JobStatus.RUNNING), "EnteredCurrentStatus": now,
                  "RemoteWallClockTime": round(wall, 3), "RemoteHost": None, **usage_attrs(ad, report)}
    holds = int(ad.get("NumHolds") or 0) + 1
    # The sandbox stays until the scheduler has stored this outcome: killed before that, it collects again.
    if "error" in report:
        return {"JobStatus": int(JobStatus.HELD), "HoldReason": report["error"],
                "HoldReasonCode": FAILED_TO_CREATE_PROCESS, "HoldReasonSubCode": 2, "NumHolds": holds,
                **common}, False
    if "signal" in report:
        exit_attrs: Ad = {"ExitBySignal": True, "ExitSignal": report["signal"],
                          "ExitReason": f"died on signal {report['signal']} ({signame(report['signal'])})"}
    else:
        exit_attrs = {"ExitBySignal": False, "ExitCode": report["exit_code"], "ExitReason": "Exited normally"}
    over = memory_overuse(ad, common)
    if over is not None:
        # As a schedd with cgroup memory limits does: a job over its request_memory is held, code 34.
        return {"JobStatus": int(JobStatus.HELD), "HoldReason": over, "NumHolds": holds,
                "HoldReasonCode": int(HoldCode.JOB_OUT_OF_RESOURCES), "HoldReasonSubCode": 0,
                **exit_attrs, **common}, False
    try:
        spooled = transfer.collect_output(job, ad, sandbox, Path(ad["Iwd"]), spec["before"])
        if transfer.direct(ad):
            transfer.place_std(ad, Path(ad["Iwd"]))
    except (transfer.TransferError, OSError) as e:
        # As a real schedd does: a missing output file holds the job (code 12, subcode ENOENT).
        return {"JobStatus": int(JobStatus.HELD), "HoldReason": str(e),
                "HoldReasonCode": int(HoldCode.TRANSFER_OUTPUT_ERROR), "HoldReasonSubCode": 2,
                "NumHolds": holds, **exit_attrs, **common}, False
    return {"JobStatus": int(JobStatus.COMPLETED), "CompletionDate": now, "TerminationPending": True,
            "NumJobCompletions": int(ad.get("NumJobCompletions") or 0) + 1,
            "SpooledOutputFiles": ",".join(spooled), **exit_attrs, **common}, True

