"""A real rsubd process for the tests, the benchmarks and the tools: its own XDG directories, real `rsub` commands.

The root must be a short path (`short_root()`): rsubd's socket lives under it, and
Unix socket paths stop at about 108 bytes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rsubd.platform.crash import ENV as CRASH_ENV
from tests.support.deadlines import wait_until

BIN = Path(sys.executable).parent  # the venv's bin: rsubd and rsub are console scripts beside python


def short_root(prefix: str) -> Path:
    """A new temporary directory under /tmp, short enough for a socket below it."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class StartFailure(AssertionError):
    """rsubd did not answer within its deadline, or exited: a test fails on it, a tool stops."""


class Rsubd:
    """One rsubd process with its own state, runtime and config directories."""

    start_timeout = 15.0  # seconds rsubd may take to answer its first ping
    stop_timeout = 15.0  # seconds `rsub daemon stop` may take before rsubd is SIGKILLed
    rsub_timeout = 120.0  # seconds one rsub command may take

    def __init__(self, root: Path, config: str | None = None, *, runtime: Path | None = None,
                 log_to_stderr: bool = True) -> None:
        self.root = root
        # rsubd's log goes to its stderr, which `log` captures (with whatever else it prints), unless the test
        # is about where rsubd puts its log by itself: then `log` holds only its stderr.
        self.args: list[str] = ["--log-file", "-"] if log_to_stderr else []
        self.env = {
            **os.environ,
            "XDG_STATE_HOME": str(root / "state"),
            "XDG_RUNTIME_DIR": str(runtime or root / "run"),
            "XDG_CONFIG_HOME": str(root / "config"),
        }
        # Set by whoever runs the suite, these would point rsubd elsewhere or make it crash on purpose.
        for name in ("RSUB_CONFIG", "RSUB_SOCKET", CRASH_ENV, "RSUB_LOCAL_EXECUTE", "RSUB_LOCAL_SPOOL_RELEASE"):
            self.env.pop(name, None)
        if config is not None:
            cfg = root / "config" / "rsub" / "config.toml"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(textwrap.dedent(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "rsubd.log"

    @property
    def state_dir(self) -> Path:
        return self.root / "state" / "rsub"

    @property
    def log_file(self) -> Path:
        """Where rsubd writes its log by default when its stderr is neither a terminal nor the journal."""
        return self.state_dir / "rsubd.log"

    def start(self, wait: bool = True, *, timeout: float | None = None, extra_env: Mapping[str, str] | None = None,
              note: str | None = None) -> subprocess.Popen[bytes]:
        """Start rsubd (with `extra_env` on top of `env`, `note` marking the log) and wait until it answers."""
        with open(self.log, "ab") as log:
            if note is not None:
                log.write(f"--- {note}\n".encode())
                log.flush()
            proc = subprocess.Popen([str(BIN / "rsubd"), *self.args], env={**self.env, **(extra_env or {})}, stdout=log,
                                    stderr=log)
        self.proc = proc
        if wait:
            limit = self.start_timeout if timeout is None else timeout
            try:
                wait_until(lambda: self.ping() or proc.poll() is not None, limit, "rsubd to answer")
            except AssertionError as e:
                raise StartFailure(f"{e}\n{self.log_tail()}") from None
            if proc.poll() is not None:
                raise StartFailure(f"rsubd exited {proc.returncode}:\n{self.log_tail()}")
        return proc

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def ping(self) -> bool:
        """Whether rsubd answers now (a hung socket counts as no)."""
        try:
            return subprocess.run([str(BIN / "rsub"), "ping"], env=self.env, capture_output=True,
                                  timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def rsub(self, *args: str, cwd: Path | None = None,
             timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "rsub"), *args], env=self.env, cwd=cwd, capture_output=True, text=True,
                              timeout=self.rsub_timeout if timeout is None else timeout)

    def json(self, *args: str, cwd: Path | None = None) -> Any:
        result = self.rsub(*args, "--json", cwd=cwd)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def states(self, ids: str) -> dict[str, str]:
        return {j["id"]: j["state"] for j in self.json("status", ids)["jobs"]}

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=15)

    def stop(self, timeout: float | None = None) -> None:
        """`rsub daemon stop`; SIGKILL if rsubd is still there after `timeout` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.rsub("daemon", "stop")
        try:
            self.proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill_leftover_jobs(self) -> None:
        """Starters run in sessions of their own and outlive rsubd by design; whoever started jobs cleans up.

        Found by command line (runner.live_starters), so that a starter whose pid rsubd never wrote down
        (killed right after starting it) goes too."""
        from rsubd.backends.local.runner import kill_starters, live_starters, where

        mine = where(self.state_dir / "local") + os.sep
        kill_starters([pid for jobdir, pids in live_starters().items() if jobdir.startswith(mine) for pid in pids])
