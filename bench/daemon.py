"""A real rsubd for the benchmarks: its own config, state and socket, the embedded scheduler in fake mode."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support import daemon as support
from tests.support.deadlines import wait_until


class Rsubd(support.Rsubd):
    """rsubd over `state` (a bench dataset or an empty directory), polling only at start."""

    start_timeout = stop_timeout = 60.0  # it opens, and at the end closes, a ledger of 100,000 jobs
    rsub_timeout = 600.0  # a submit of 10,000 procs

    def __init__(self, root: Path, state: Path, *, execute: str = "fake", poll_interval: float = 3600,
                 schedds: Sequence[str] = ("local",), extra: str = "") -> None:
        self.socket = root / "run" / "rsubd.sock"
        self.state = state  # its ledger is state / "ledger.db"
        tables = "".join(f"""
            [[schedd]]
            name = "{name}"
            backend = "local"
            poll_interval = {poll_interval}
            {extra}
            """ for name in schedds)
        super().__init__(root, f"""\
            socket = "{self.socket}"
            state_dir = "{state}"
            log_level = "info"
            """ + tables)
        # With RSUB_SOCKET set, rsub does not read the config: the client figures are measured that way.
        self.env |= {"RSUB_SOCKET": str(self.socket), "RSUB_LOCAL_EXECUTE": execute}

    def polls(self, schedd: str = "local") -> int:
        out = self.rsub("daemon", "status", "--json")
        if out.returncode != 0:
            return 0
        status = json.loads(out.stdout)["schedds"][schedd]
        return int(status["polls"]) if status.get("last_outcome") else 0

    def wait_for_poll(self, timeout: float = 120) -> None:
        wait_until(lambda: self.polls() >= 1, timeout, "first poll")


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
