"""`rsub q` and `rsub status ID` wall time with 100,000 jobs in the ledger, against the venv's `python -c pass`.

A real rsubd runs over a ledger of 100,000 active jobs in 1,000 clusters (and
an embedded scheduler in fake mode holding the same jobs, so the two agree); its
first poll is over before any timing starts and the next is an hour away. Each
round runs, in turn, the baselines (`python -c pass` of the venv rsub runs on,
and of the interpreter it was made from), `rsub q` (the first 1,000 active
jobs, the client's default page), `rsub status C.P` (one job), `rsub status C`
(one cluster of 100 jobs) and `rsub history --limit 1000`, output discarded; the
figures are medians over the rounds. Target: rsub at most 2x the venv's python.

Where the time goes is printed too: the client's imports (`python -X
importtime`, summed) and rsubd's reply time for each request, measured from a
warm process over the socket (what the client waits for after its first byte).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
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
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the ledger, in clusters of 100")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rsub-bench-cache-") as tmp_cache:
        template = dataset(args.cache or Path(tmp_cache), args.jobs, max(1, args.jobs // 100))
        # A short path: the socket lives under it, and Unix socket paths are limited to about 108 bytes.
        with tempfile.TemporaryDirectory(prefix="rsb-", dir="/tmp") as tmp:
            root = Path(tmp)
            state = root / "state"
            copy(template, state)
            daemon = Rsubd(root, state)
            daemon.start()
            try:
                daemon.wait_for_poll()
                figures = rounds(daemon, args.rounds, cluster=max(1, args.jobs // 200))
            finally:
                daemon.stop()
    emit({"bench": "client", "jobs_in_ledger": args.jobs, "target_ratio": TARGET, **figures,
          "meets_target": all(v <= TARGET for k, v in figures["ratios"].items()
                              if k.endswith("vs_venv_python") and "history" not in k)})


def import_ms(argv: Sequence[str], env: dict[str, str]) -> dict[str, float]:
    """`python -X importtime` of a command: the ms spent importing, all of it and rsub's own modules."""
    out = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True,
                         check=True)
    total = ours = 0.0
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|(\s*)(\S+)", line)
        if m:
            total += int(m.group(1)) / 1000
            if m.group(3).startswith("rsub"):
                ours += int(m.group(1)) / 1000
    return {"all_imports_ms": round(total, 1), "rsub_modules_ms": round(ours, 1)}


def reply_ms(socket: str, kind: str, count: int = 11, **fields: Any) -> float:
    """rsubd's median time to answer one request, from a warm client over the socket."""
    from rsub.wire.protocol import Connection

    times = []
    for _ in range(count):
        with Connection(socket) as conn:
            started = time.perf_counter()
            reply = conn.call(kind, **fields)
            times.append(time.perf_counter() - started)
        if not reply.get("ok"):
            # An rsubd from before `rows` (or `brief`): ask as its own client did.
            if fields.pop("rows", None) or fields.pop("brief", None):
                return reply_ms(socket, kind, count, **fields)
            raise RuntimeError(f"rsubd refused {kind}: {reply.get('error')}")
    return round(statistics.median(times) * 1000, 1)


def touch(ledger: Path) -> None:
    """A write to rsubd's ledger from another connection (a meta row of the bench's own, set to the time): as after
    a poll that changed something, rsubd has no page kept. (Pessimistic: another connection's commit also empties
    SQLite's page cache in rsubd, which its own writes do not.) An rsubd that keeps no page is not affected.
    The value must change: SQLite writes nothing for a row set to what it holds, and no other connection sees it."""
    import sqlite3

    conn = sqlite3.connect(ledger, isolation_level=None, timeout=30)
    try:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('bench_touch', ?)", (repr(time.time()),))
    finally:
        conn.close()


def cold_reply_ms(socket: str, ledger: Path, count: int = 11, **fields: Any) -> float:
    """reply_ms of a page rsubd has not kept: the ledger touched before each request."""
    times = []
    for _ in range(count):
        touch(ledger)
        times.append(reply_ms(socket, "status", 1, **fields))
    return round(statistics.median(times), 1)


def rounds(daemon: Rsubd, count: int, cluster: int = 500) -> dict[str, Any]:
    rsub = str(BIN / "rsub")
    commands = {
        "python3 -c pass": [system_python(), "-c", "pass"],
        "venv python -c pass": [sys.executable, "-c", "pass"],
        "rsub --version": [rsub, "--version"],
        "rsub q": [rsub, "q"],
        "rsub q, page not kept": [rsub, "q"],  # the ledger touched before each run: rsubd reads the page again
        "rsub status C.P": [rsub, "status", f"{cluster}.50"],
        "rsub status C": [rsub, "status", str(cluster)],
        "rsub history --limit 1000": [rsub, "history", "--limit", "1000"],
    }
    # As installed for real: Python reads compiled modules. (A session or CI that sets
    # PYTHONDONTWRITEBYTECODE would otherwise recompile rsub's modules at every start.)
    env = {k: v for k, v in daemon.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    ledger = daemon.state / "ledger.db"
    for argv in commands.values():
        wall(argv, env=env)  # warm the page cache and the daemon, and write rsub's .pyc files
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(count):
        for name, argv in commands.items():
            if name.endswith("not kept"):
                touch(ledger)
            times[name].append(wall(argv, env=env))
    medians = {name: summary(t) for name, t in times.items()}
    base = medians["python3 -c pass"]["median_ms"]
    venv = medians["venv python -c pass"]["median_ms"]
    ratios = {}
    for name in ("rsub q", "rsub q, page not kept", "rsub status C.P", "rsub status C", "rsub history --limit 1000"):
        ratios[f"{name} vs_python3"] = round(medians[name]["median_ms"] / base, 2)
        ratios[f"{name} vs_venv_python"] = round(medians[name]["median_ms"] / venv, 2)
    sock = env["RSUB_SOCKET"]
    replies = {
        "rsub q": reply_ms(sock, "status", active=True, limit=1000, brief=True, rows=True),  # what rsub q asks
        "rsub q, page not kept": cold_reply_ms(sock, ledger, active=True, limit=1000, brief=True, rows=True),
        "rsub status C.P": reply_ms(sock, "status", ids=[f"{cluster}.50"]),
        "rsub status C": reply_ms(sock, "status", ids=[str(cluster)]),
        "rsub history --limit 1000": reply_ms(sock, "history", limit=1000, brief=True, rows=True),
    }
    imports = {name: import_ms([rsub, *argv[1:]], env) for name, argv in commands.items()
               if name.startswith("rsub") and not name.endswith("not kept")}
    return {"python3": system_python(), "cluster": cluster, "wall": medians, "ratios": ratios,
            "daemon_reply_ms": replies, "client_imports": imports}


if __name__ == "__main__":
    main()
