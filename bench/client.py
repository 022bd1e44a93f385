"""`rsub q` and `rsub status ID` wall time with 100,000 jobs in the ledger, against `python3 -c pass`.

A real rsubd runs over a ledger of 100,000 active jobs in 1,000 clusters (and
an embedded scheduler in fake mode holding the same jobs, so the two agree); its
first poll is over before any timing starts and the next is an hour away. Each
round runs, in turn, the baseline `python3 -c pass`, `rsub q` (the first 1,000
active jobs, the client's default page), `rsub status C.P` (one job) and
`rsub status C` (one cluster of 100 jobs), output discarded; the figures are
medians over the rounds. Target: rsub at most 2x the baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import copy, dataset, emit
from bench.daemon import Rsubd, summary, system_python, wall
from tests.support.daemon import BIN

TARGET = 2.0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="where datasets are kept (default: a temporary directory)")
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rsub-bench-cache-") as tmp_cache:
        template = dataset(args.cache or Path(tmp_cache), 100_000, 1000)
        # A short path: the socket lives under it, and Unix socket paths are limited to about 108 bytes.
        with tempfile.TemporaryDirectory(prefix="rsb-", dir="/tmp") as tmp:
            root = Path(tmp)
            state = root / "state"
            copy(template, state)
            daemon = Rsubd(root, state)
            daemon.start()
            try:
                daemon.wait_for_poll()
                figures = rounds(daemon, args.rounds)
            finally:
                daemon.stop()
    emit({"bench": "client", "jobs_in_ledger": 100_000, "target_ratio": TARGET, **figures,
          "meets_target": all(v <= TARGET for k, v in figures["ratios"].items() if k.endswith("vs_python3"))})


def rounds(daemon: Rsubd, count: int) -> dict[str, Any]:
    rsub = str(BIN / "rsub")
    commands = {
        "python3 -c pass": [system_python(), "-c", "pass"],
        "venv python -c pass": [sys.executable, "-c", "pass"],
        "rsub --version": [rsub, "--version"],
        "rsub q": [rsub, "q"],
        "rsub status 500.50": [rsub, "status", "500.50"],
        "rsub status 500": [rsub, "status", "500"],
    }
    # As installed for real: Python reads compiled modules. (A session or CI that sets
    # PYTHONDONTWRITEBYTECODE would otherwise recompile rsub's modules at every start.)
    env = {k: v for k, v in daemon.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for argv in commands.values():
        wall(argv, env=env)  # warm the page cache and the daemon, and write rsub's .pyc files
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(count):
        for name, argv in commands.items():
            times[name].append(wall(argv, env=env))
    medians = {name: summary(t) for name, t in times.items()}
    base = medians["python3 -c pass"]["median_ms"]
    venv = medians["venv python -c pass"]["median_ms"]
    ratios = {}
    for name in ("rsub q", "rsub status 500.50", "rsub status 500"):
        ratios[f"{name} vs_python3"] = round(medians[name]["median_ms"] / base, 2)
        ratios[f"{name} vs_venv_python"] = round(medians[name]["median_ms"] / venv, 2)
    return {"python3": system_python(), "wall": medians, "ratios": ratios}


if __name__ == "__main__":
    main()
