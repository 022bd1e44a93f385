"""Runs one job of the embedded scheduler, as HTCondor's starter does.

Started as `python -m rsubd.backends.local.starter JOBDIR` in a session of its own, so the
job outlives an rsubd restart. It reads JOBDIR/job.json, runs the executable in
its sandbox with stdout and stderr captured, and writes JOBDIR/result.json
(temporary file, fsync, rename) when the job ends, so whoever looks next, the
same rsubd or a restarted one, learns the exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that a reader sees the old file or the whole new one."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def wait_measured(child: subprocess.Popen[bytes]) -> dict[str, float]:
    """Wait for the job and measure it as a starter does: its CPU times and peak resident set.

    os.wait4 reaps the child and gives its rusage, which on Linux covers the descendants it
    waited for too; ru_maxrss is in KiB, the unit of HTCondor's ResidentSetSize.
    """
    while True:
        try:
            _, status, rusage = os.wait4(child.pid, 0)
            break
        except ChildProcessError:  # reaped elsewhere (it cannot be here): nothing measured
            child.wait()
            return {}
        except InterruptedError:
            continue
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"user_cpu": rusage.ru_utime, "sys_cpu": rusage.ru_stime, "max_rss_kib": float(rusage.ru_maxrss)}


def disk_kib(sandbox: Path) -> int:
    """The sandbox's size in KiB, as the starter reports DiskUsage: blocks in use, every file under it."""
    total = 0
    for root, dirs, files in os.walk(sandbox):
        for name in (*dirs, *files):
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return (total + 1023) // 1024


def run(jobdir: Path) -> int:
    spec = json.loads((jobdir / "job.json").read_text(encoding="utf-8"))
    sandbox = Path(spec["sandbox"])
    started = time.time()
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    stdin_path = spec.get("stdin") or os.devnull
    result: dict[str, Any]
    try:
        with (
            open(stdin_path, "rb") as stdin,
            open(sandbox / "_condor_stdout", "wb") as stdout,
            open(sandbox / "_condor_stderr", "wb") as stderr,
        ):
            child = subprocess.Popen(
                [spec["executable"], *spec["arguments"]],
                cwd=sandbox,
                env=spec["environment"],
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                close_fds=True,
            )
            write_atomic(jobdir / "starter.json", {"pid": os.getpid(), "job_pid": child.pid})
            usage = wait_measured(child)
            code = child.returncode
        result = {"signal": -code} if code < 0 else {"exit_code": code}
        result["usage"] = {**usage, "disk_kib": disk_kib(sandbox)}
    except OSError as e:
        # The executable could not be started: report it as HTCondor does, as a failure to execute.
        result = {"error": f"Error from starter: Failed to execute '{spec['executable']}': {e.strerror}"}
    result["started"] = started
    result["ended"] = time.time()
    write_atomic(jobdir / "result.json", result)
    return 0


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m rsubd.backends.local.starter JOBDIR", file=sys.stderr)
        return 2
    return run(Path(sys.argv[1]))


if __name__ == "__main__":
    sys.exit(main())
