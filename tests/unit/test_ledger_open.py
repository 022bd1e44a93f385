"""Opening the ledger: one that is not this rsubd's to use is refused with a message saying what to do,
and not a byte of it is written."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rsubd.ledger.schema import MIGRATIONS
from rsubd.ledger.store import JobSelector, Ledger, LedgerError


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "state" / "ledger.db"
    p.parent.mkdir(mode=0o700)
    return p


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sidecars(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def refused(path: Path, *expected: str, busy_timeout: float = 5.0) -> str:
    """Ledger(path) must refuse, naming the file; the file and its directory are left exactly as they were."""
    before, mode, others = digest(path), stat.S_IMODE(path.stat().st_mode), sidecars(path)
    with pytest.raises(LedgerError) as info:
        Ledger(path, busy_timeout=busy_timeout)
    message = str(info.value)
    assert str(path) in message
    for text in expected:
        assert text in message, message
    assert digest(path) == before
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert sidecars(path) == others  # no -wal, -shm or -journal left behind
    return message


def a_ledger(path: Path, jobs: int = 3) -> None:
    """A real rsub ledger with a few jobs in it, closed."""
    led = Ledger(path)
    row = led.add_submit_intent(request_id="r", schedd="local", tag="t", description="queue\n",
                                submitted_description="queue\n", submit_dir="/s", submit_file="job.sub")
    led.record_submitted(row, 7, [(p, "/iwd") for p in range(jobs)])
    led.close()


# -- corrupt -------------------------------------------------------------------


@pytest.mark.parametrize("content", [os.urandom(64 * 1024), b"x" * 100, b"SQLite format 3\x00" + b"\x00" * 84])
def test_garbage_is_refused_with_what_to_do(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    path.chmod(0o644)
    message = refused(path, "is not a readable SQLite database", "untouched", "move it out of the way")
    assert "restore it from a backup" in message


@pytest.mark.parametrize("damage", ["garbled pages", "truncated"])
def test_a_damaged_rsub_ledger_is_refused_not_used(path: Path, damage: str) -> None:
    a_ledger(path, jobs=200)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    if damage == "garbled pages":
        data[page:] = b"\xab" * (len(data) - page)  # page 1 (the header and the schema) intact
    else:
        del data[len(data) // 2:]
    path.write_bytes(bytes(data))
    refused(path, "is not a readable SQLite database", "malformed", "untouched")


def test_one_damaged_page_deep_in_the_jobs_is_found_at_open(path: Path) -> None:
    """Damage that opening alone would not meet (the meta table reads fine) is found before rsubd starts on it."""
    a_ledger(path, jobs=2000)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    last = len(data) - page
    data[last:] = b"\xab" * page  # only the last page
    path.write_bytes(bytes(data))
    conn = sqlite3.connect(path)
    try:  # what a start without the check would have read, and found fine
        assert conn.execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone() is not None
    finally:
        conn.close()
    refused(path, "malformed", "untouched")


# -- not rsub's, or from a newer rsub -----------------------------------------------


@pytest.mark.parametrize("version", [0, 2])
def test_another_programs_database_is_refused(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(f"CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT);"
                       f"INSERT INTO photos (name) VALUES ('cat.jpg'); PRAGMA user_version = {version};")
    conn.close()
    message = refused(path, "is an SQLite database but not an rsub ledger", "photos", "untouched",
                      "move it out of the way")
    assert f"schema {version}" in message
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["photos"]
    finally:
        conn.close()


def test_a_ledger_from_a_newer_rsub_is_refused_unchanged(path: Path) -> None:
    a_ledger(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    refused(path, f"schema {len(MIGRATIONS) + 5}, newer than this rsubd knows ({len(MIGRATIONS)})",
            "written by a newer rsub", "untouched")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()


def test_an_empty_file_is_a_new_ledger(path: Path) -> None:
    path.touch()
    led = Ledger(path)
    try:
        assert led._conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        led.close()


def test_a_new_ledger_is_never_world_readable(path: Path) -> None:
    old = os.umask(0o022)
    try:
        Ledger(path).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_older_rsub_ledger_is_still_migrated_and_kept(path: Path) -> None:
    """The checks refuse what is not rsub's, never a ledger an earlier rsub left."""
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + ";" + MIGRATIONS[1] + ";PRAGMA user_version = 2;")
    conn.execute("INSERT INTO clusters (id, request_id, schedd, cluster, tag, state, description, "
                 "submitted_description, submit_dir, created_at) VALUES (1, 'r', 'local', 7, 't', 'submitted', "
                 "'', '', '/', 0)")
    conn.execute("INSERT INTO jobs (schedd, cluster, proc, cluster_row, state, submitted_at, updated_at) "
                 "VALUES ('local', 7, 0, 1, 'running', 0, 0)")
    conn.commit()
    conn.close()
    led = Ledger(path)
    try:
        assert led._conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert [j["state"] for j in led.jobs([JobSelector(7)])] == ["running"]
    finally:
        led.close()


# -- locked --------------------------------------------------------------------


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[2] == "rollback":
    conn.execute("PRAGMA journal_mode = DELETE")
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def lock_holder() -> Iterator[Callable[[Path, str], subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def hold(path: Path, mode: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), mode], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("mode", ["wal", "rollback"])
def test_a_locked_ledger_is_refused_in_bounded_time_naming_the_holder(
    path: Path, mode: str, lock_holder: Callable[[Path, str], subprocess.Popen[str]]
) -> None:
    a_ledger(path)
    holder = lock_holder(path, mode)
    started = time.monotonic()
    message = refused(path, "is locked by another process", "untouched", busy_timeout=0.5)
    assert time.monotonic() - started < 5
    assert f"(pid {holder.pid}: " in message and "python" in message
    holder.kill()
    holder.wait()
    led = Ledger(path)  # the lock gone, the same file opens, with its jobs
    try:
        assert len(led.jobs()) == 3
    finally:
        led.close()


def test_the_default_busy_timeout_is_bounded(
    path: Path, lock_holder: Callable[[Path, str], subprocess.Popen[str]]
) -> None:
    a_ledger(path)
    lock_holder(path, "wal")
    started = time.monotonic()
    refused(path, "is locked by another process")
    assert 4 <= time.monotonic() - started < 15


def test_a_refused_ledger_leaves_no_descriptor_open(path: Path) -> None:
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(LedgerError):
        Ledger(path)
    fds = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith(str(path)):
            fds.append(target)
    assert fds == []
