"""End-to-end fixtures: a real rsubd process on a short temporary socket, driven by real rsub commands."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Rsubd:
    """One rsubd process with its own state, runtime and config directories."""

    def __init__(self, root: Path, config: str | None = None) -> None:
        self.root = root
        self.env = {
            **os.environ,
            "XDG_STATE_HOME": str(root / "state"),
            "XDG_RUNTIME_DIR": str(root / "run"),
            "XDG_CONFIG_HOME": str(root / "config"),
        }
        self.env.pop("RSUB_CONFIG", None)
        self.env.pop("RSUB_SOCKET", None)
        if config is not None:
            cfg = root / "config" / "rsub" / "config.toml"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(textwrap.dedent(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "rsubd.log"

    @property
    def state_dir(self) -> Path:
        return self.root / "state" / "rsub"

    def start(self, wait: bool = True) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "rsubd")], env=self.env, stdout=log, stderr=log)
        if wait:
            wait_until(lambda: self.rsub("ping").returncode == 0 or self.proc.poll() is not None, 15, "rsubd to answer")
            assert self.proc.poll() is None, f"rsubd exited: {self.log.read_text()}"
        return self.proc

    def rsub(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "rsub"), *args], env=self.env, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout)

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

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.rsub("daemon", "stop")
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path: Unix socket paths are limited to about 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rsub-e2e-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def rsubd(short_tmp: Path) -> Iterator[Rsubd]:
    daemon = Rsubd(short_tmp)
    daemon.start()
    yield daemon
    daemon.stop()
    _kill_leftover_jobs(daemon)


def _kill_leftover_jobs(daemon: Rsubd) -> None:
    """Starters run in sessions of their own and outlive rsubd by design; tests clean theirs up."""
    for shadow in (daemon.state_dir / "local").glob("*/spool/*/*/shadow.json"):
        try:
            os.killpg(json.loads(shadow.read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


def write_job(directory: Path, name: str, script: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(0o755)
    return path


@pytest.fixture
def workdir(short_tmp: Path) -> Path:
    path = short_tmp / "work"
    path.mkdir()
    return path
