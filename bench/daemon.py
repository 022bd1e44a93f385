"""A real rsubd for the benchmarks: its own config, state and socket, the embedded scheduler in fake mode."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent  # the venv's bin: rsubd and rsub are console scripts beside python


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        time.sleep(0.05)


class Rsubd:
    """rsubd over `state` (a bench dataset or an empty directory), polling only at start."""

    def __init__(self, root: Path, state: Path, *, execute: str = "fake", poll_interval: float = 3600) -> None:
        self.root = root
        self.socket = root / "run" / "rsubd.sock"
        config = root / "rsubd.toml"
        config.write_text(textwrap.dedent(f"""\
            socket = "{self.socket}"
            state_dir = "{state}"
            log_level = "info"

            [[schedd]]
            name = "local"
            backend = "local"
            poll_interval = {poll_interval}
            """))
        self.env = {**os.environ, "RSUB_CONFIG": str(config), "RSUB_SOCKET": str(self.socket),
                    "RSUB_LOCAL_EXECUTE": execute}
        self.log = root / "rsubd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "rsubd")], env=self.env, stdout=log, stderr=log)
        wait_until(lambda: self.rsub("ping").returncode == 0 or self.proc.poll() is not None,  # type: ignore[union-attr]
                   60, "answer from rsubd")
        if self.proc.poll() is not None:
            raise RuntimeError(f"rsubd exited: {self.log.read_text()[-2000:]}")

    def rsub(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "rsub"), *args], env=self.env, cwd=cwd, capture_output=True, text=True,
                              timeout=600, check=False)

    def polls(self) -> int:
        out = self.rsub("daemon", "status", "--json")
        if out.returncode != 0:
            return 0
        status = json.loads(out.stdout)["schedds"]["local"]
        return int(status["polls"]) if status.get("last_outcome") else 0

    def wait_for_poll(self, timeout: float = 120) -> None:
        wait_until(lambda: self.polls() >= 1, timeout, "first poll")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.rsub("daemon", "stop")
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wall(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    """Wall seconds of one command, its output discarded; it must succeed."""
    started = time.perf_counter()
    subprocess.run(list(argv), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - started


def summary(times: Sequence[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(times) * 1000, 1), "min_ms": round(min(times) * 1000, 1),
            "max_ms": round(max(times) * 1000, 1), "runs": len(times)}


def system_python() -> str:
    """The interpreter the venv is made from, for the baseline `python3 -c pass`.

    Not `python3` from PATH, which may be a wrapper script (pyenv's shim takes
    100 ms before Python even starts) and would flatter rsub.
    """
    for name in ("python3", "python"):
        candidate = Path(sys.base_prefix) / "bin" / name
        if candidate.exists():
            return str(candidate)
    return shutil.which("python3") or sys.executable
