"""What is wrong with a ledger at open, said in one line with what to do about it.

rsubd refuses a ledger it cannot use without writing a byte to it: these checks
only read, and each refusal names the file and leaves it as it was.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from rsubd.ledger.schema import LEDGER_TABLES, MIGRATIONS


class LedgerError(Exception):
    """The ledger cannot be opened or is not rsub's."""


def check_ours(conn: sqlite3.Connection, path: Path) -> int:
    """The ledger's schema version, once it is known to be an rsub ledger this rsubd can use."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    if version > len(MIGRATIONS):
        raise LedgerError(
            f"the ledger {path} is at schema {version}, newer than this rsubd knows ({len(MIGRATIONS)}):"
            f" it was written by a newer rsub; run that rsubd, or upgrade this one. rsubd left the file untouched"
        )
    if (version == 0 and tables) or (version > 0 and not tables >= LEDGER_TABLES):
        shown = ", ".join(sorted(tables)[:5]) or "none"
        raise LedgerError(
            f"{path} is an SQLite database but not an rsub ledger (schema {version}, tables: {shown});"
            f" rsubd left it untouched: move it out of the way, or set state_dir in the config to another directory"
        )
    # A damaged page is found now (about 20 ms for 100,000 jobs), not by a poll that then fails forever.
    problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    if problem != "ok":
        raise LedgerError(refusal(path, sqlite3.DatabaseError(f"database disk image is malformed: {problem}")))
    return version


def refusal(path: Path, error: sqlite3.DatabaseError) -> str:
    """What went wrong opening the ledger, and what to do, in one line."""
    code, text = getattr(error, "sqlite_errorcode", None), str(error)
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in text:
        holders = lock_holders(path)
        by = f" ({', '.join(holders)})" if holders else ""
        return (f"the ledger {path} is locked by another process{by}; stop it (or let it finish) and start"
                f" rsubd again. rsubd left the file untouched")
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT) or "not a database" in text or "malformed" in text:
        return (f"the ledger {path} is not a readable SQLite database ({error}); rsubd left it untouched:"
                f" restore it from a backup, or move it out of the way to start with an empty ledger"
                f" (rsub then forgets the jobs it recorded)")
    return f"cannot open the ledger {path}: {error}"


def lock_holders(path: Path) -> list[str]:
    """Other processes holding a lock on the ledger or its WAL index, from /proc/locks (Linux; else none)."""
    inodes = set()
    for name in (path.name, f"{path.name}-shm", f"{path.name}-wal"):
        try:
            st = os.stat(path.with_name(name))
        except OSError:
            continue
        inodes.add(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
    pids: dict[int, bool] = {}  # pid -> holds a write lock
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if len(fields) >= 6 and fields[5] in inodes and fields[4].isdigit():
            pid = int(fields[4])
            if pid not in (0, os.getpid()):
                pids[pid] = pids.get(pid, False) or fields[3] == "WRITE"
    writers = [p for p, w in pids.items() if w] or list(pids)
    out = []
    for pid in sorted(writers):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        out.append(f"pid {pid}: {cmd[:80]}" if cmd else f"pid {pid}")
    return out
