"""Faults on this machine: a full disk or an unwritable output directory at retrieve, a ledger rsubd
cannot use, a second rsubd. Nothing is lost or overwritten, the error is shown, and the work
finishes once the fault is gone."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import BIN, Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e

CONFIG = """
[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.5
poll_jitter = 0
poll_backoff_max = 2
early_poll_every = 0.5
"""
MB = 1 << 20


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[Rsubd]:
    d = Rsubd(short_tmp, CONFIG)
    d.start()
    yield d
    d.stop()
    d.kill_leftover_jobs()


# -- helpers -----------------------------------------------------------------


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tiny tmpfs mounted on `where` for the test's duration (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if _run("umount", str(where)).returncode != 0:
            _run("umount", "-l", str(where))


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def submit_waiting(daemon: Rsubd, work: Path, script: str) -> tuple[int, Path]:
    """Submit one job writing into work/out; it runs `script` only once the returned go-file exists."""
    go = work.parent / f"go-{time.monotonic_ns()}"
    write_job(work, "job.sh", f"""
        i=0
        while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
        {script}
    """)
    (work / "job.sub").write_text("executable = job.sh\narguments = $(Cluster)\ninitialdir = out\n"
                                  "output = job_$(Cluster).$(Process).out\nerror = job_$(Cluster).$(Process).err\n"
                                  "queue\n")
    result = daemon.rsub("submit", "--json", "job.sub", cwd=work)
    assert result.returncode == 0, result.stderr
    cluster: int = json.loads(result.stdout)["cluster"]
    return cluster, go


def job_of(daemon: Rsubd, cluster: int) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = daemon.json("status", str(cluster))["jobs"]
    assert len(jobs) == 1
    return jobs[0]


def retrieve_calls(daemon: Rsubd) -> int:
    return int(daemon.json("daemon", "status")["schedds"]["local"]["retrieve_calls"])


def ledger_row(daemon: Rsubd, cluster: int) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{daemon.state_dir / 'ledger.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM jobs WHERE cluster = ? AND proc = 0", (cluster,)).fetchone())
    finally:
        conn.close()


def queue_ad(daemon: Rsubd, cluster: int) -> dict[str, Any] | None:
    """The job's ad in the embedded schedd's own queue (cluster ad under proc ad), keys lower-cased."""
    conn = sqlite3.connect(f"file:{daemon.state_dir / 'local' / 'local' / 'queue.db'}?mode=ro", uri=True)
    try:
        shared = conn.execute("SELECT ad FROM clusters WHERE cluster = ?", (cluster,)).fetchone()
        own = conn.execute("SELECT ad FROM jobs WHERE cluster = ? AND proc = 0", (cluster,)).fetchone()
    finally:
        conn.close()
    if own is None:
        return None
    merged = {**json.loads(shared[0]), **json.loads(own[0])} if shared else json.loads(own[0])
    return {k.lower(): v for k, v in merged.items()}


def polls(daemon: Rsubd) -> int:
    return int(daemon.json("daemon", "status")["schedds"]["local"]["polls"])


def assert_held_back(daemon: Rsubd, cluster: int, out: Path, os_message: str) -> None:
    """A failed retrieve that may heal: shown, retried after a growing backoff (not every poll), never marked."""
    job = wait_until(lambda: (j := job_of(daemon, cluster))["error"] and j, 60, "the retrieve to fail")
    assert job["state"] == "completed" and job["retrieved_at"] is None, job
    assert job["error"].startswith("retrieve failed:") and os_message in job["error"], job["error"]
    assert str(out / f"job_{cluster}.0.out") in job["error"]  # the user's file, not a temporary name
    assert job["needs_attention"] is False and job["retrieve_retry_at"] is not None, job
    # Retried on later polls, failing the same way each time, 2 s then 4 s apart: not at every poll.
    calls, polled = retrieve_calls(daemon), polls(daemon)
    wait_until(lambda: retrieve_calls(daemon) >= calls + 2, 20, "two more retrieve attempts")
    assert polls(daemon) - polled >= 6  # polls every 0.5 s meanwhile
    job = job_of(daemon, cluster)
    assert job["state"] == "completed" and os_message in job["error"]
    assert job["retrieve_failures"] >= 3 and "retrying in" in job["error"]
    row = ledger_row(daemon, cluster)
    assert row["state"] == "completed" and row["retrieved_at"] is None and row["marked_at"] is None
    ad = queue_ad(daemon, cluster)
    assert ad is not None and ad.get("retrieved") is not True  # the schedd still keeps the job and its spool
    assert daemon.json("daemon", "status")["pid"] == daemon.proc.pid  # type: ignore[union-attr]


def assert_needs_attention(daemon: Rsubd, cluster: int, out: Path, os_message: str) -> None:
    """A retrieve that cannot succeed: reported, not retried, never marked; `rsub wait` ends with exit 9."""
    job = wait_until(lambda: (j := job_of(daemon, cluster))["needs_attention"] and j, 60, "needs attention")
    assert job["state"] == "completed" and job["retrieved_at"] is None, job
    assert os_message in job["attention"] and f"rsub retrieve {cluster}.0@local" in job["attention"], job
    assert job["retrieve_retry_at"] is None
    waited = daemon.rsub("wait", "--timeout", "30", str(cluster))
    assert waited.returncode == 9, waited.stdout + waited.stderr
    assert "NEEDS ATTENTION" in waited.stdout and "need attention" in waited.stderr
    calls, polled = retrieve_calls(daemon), polls(daemon)
    wait_until(lambda: polls(daemon) >= polled + 4, 20, "four more polls")
    assert retrieve_calls(daemon) == calls  # paused: no poll tries it again
    assert ledger_row(daemon, cluster)["marked_at"] is None
    ad = queue_ad(daemon, cluster)
    assert ad is not None and ad.get("retrieved") is not True


def assert_retrieved(daemon: Rsubd, cluster: int, out: Path, expected: bytes) -> None:
    """Once the fault is gone: retrieved on a later poll, with the right bytes, then marked on the schedd."""
    waited = daemon.rsub("wait", "--timeout", "60", str(cluster))
    assert waited.returncode == 0, waited.stderr + waited.stdout
    job = job_of(daemon, cluster)
    assert job["state"] == "retrieved" and job["error"] is None, job
    assert (out / f"job_{cluster}.0.out").read_bytes() == expected
    assert (out / f"job_{cluster}.0.err").read_bytes() == b""
    assert not [p.name for p in out.iterdir() if "rsub-" in p.name]
    wait_until(lambda: ledger_row(daemon, cluster)["marked_at"] is not None, 30, "RETRIEVED = true on the schedd")
    wait_until(lambda: queue_ad(daemon, cluster) is None, 30, "the job to leave the queue")


# -- retrieve into a full disk or an unwritable directory -----------------------


def test_a_full_disk_at_retrieve_leaves_the_job_unretrieved_until_there_is_space(daemon: Rsubd, workdir: Path) -> None:
    out = workdir / "out"
    out.mkdir()
    with tmpfs(out, "256k"):
        cluster, go = submit_waiting(daemon, workdir, "yes hello | head -c 1048576\n")  # 1 MB into 256 KB
        go.touch()
        assert_held_back(daemon, cluster, out, "(errno 28) No space left on device")
        assert list(out.iterdir()) == []  # no truncated output, under its own name or a temporary one
        assert free_bytes(out) > 200 * 1024  # and no space held by a leftover partial file
        assert _run("mount", "-o", "remount,size=4m", str(out)).returncode == 0
        assert_retrieved(daemon, cluster, out, (b"hello\n" * (MB // 6 + 1))[:MB])


def _undo(*cmd: str) -> Callable[[], None]:
    def undo() -> None:
        done = _run(*cmd)
        assert done.returncode == 0, done.stderr
    return undo


def _read_only_mount(out: Path, cluster: int) -> Callable[[], None]:
    assert _run("mount", "-o", "remount,ro", str(out)).returncode == 0
    return _undo("mount", "-o", "remount,rw", str(out))


def _immutable(out: Path, cluster: int) -> Callable[[], None]:
    made = _run("chattr", "+i", str(out))
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {made.stderr.strip()}")
    return _undo("chattr", "-i", str(out))


def _immutable_file(out: Path, cluster: int) -> Callable[[], None]:
    target = out / f"job_{cluster}.0.out"
    target.write_text("an old copy, made immutable\n")
    made = _run("chattr", "+i", str(target))
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {made.stderr.strip()}")
    undo = _undo("chattr", "-i", str(target))

    def free() -> None:
        undo()
        target.unlink()
    return free


def _a_file_in_its_place(out: Path, cluster: int) -> Callable[[], None]:
    aside = out.with_name("out.moved")
    out.rename(aside)
    out.write_text("not a directory\n")

    def undo() -> None:
        out.unlink()
        aside.rename(out)
    return undo


# Root ignores permission bits (chmod 0500 would not stop it), so each technique is one that stops
# root too: a read-only mount (EROFS), an immutable directory or file (chattr +i: EPERM for everyone),
# and the directory replaced by a file (ENOTDIR; this one needs no root, so it runs for any user).
# An immutable directory or file is the user's own to free: retried. A read-only file system or a
# file where the directory must be cannot heal by waiting: a person must act, then `rsub retrieve`.
UNWRITABLE = {
    "read-only mount": (_read_only_mount, "(errno 30) Read-only file system", True, True),
    "immutable directory": (_immutable, "(errno 1) Operation not permitted", True, False),
    "immutable file": (_immutable_file, "(errno 1) Operation not permitted", True, False),
    "a file in its place": (_a_file_in_its_place, "(errno 20) Not a directory", False, True),
}


@pytest.mark.parametrize("how", list(UNWRITABLE))
def test_an_unwritable_output_directory_leaves_the_job_unretrieved_until_it_is_fixed(
    daemon: Rsubd, workdir: Path, how: str
) -> None:
    breaker, os_message, needs_root, permanent = UNWRITABLE[how]
    out = workdir / "out"
    out.mkdir()
    if needs_root and os.geteuid() != 0:
        pytest.skip(f"a {how} needs root")
    with tmpfs(out, "4m") if how == "read-only mount" else _nothing(out):
        cluster, go = submit_waiting(daemon, workdir, 'echo "hello $1"\n')  # submit checks it is writable
        undo = breaker(out, cluster)
        try:
            go.touch()  # the job runs and completes only now that its output directory is unwritable
            if permanent:
                assert_needs_attention(daemon, cluster, out, os_message)
            else:
                assert_held_back(daemon, cluster, out, os_message)
            if out.is_dir():
                assert [p.name for p in out.iterdir() if p.name.startswith("job_")] in (
                    [], [f"job_{cluster}.0.out"] if how == "immutable file" else [])
        finally:
            undo()
        if permanent:
            again = daemon.rsub("retrieve", f"{cluster}.0")
            assert again.returncode == 0, again.stdout + again.stderr
            assert f"{cluster}.0@local: retrieved into {out}" in again.stdout
            assert job_of(daemon, cluster)["needs_attention"] is False
        assert_retrieved(daemon, cluster, out, f"hello {cluster}\n".encode())


def test_rsub_retrieve_dest_fetches_output_that_cannot_go_home_elsewhere(daemon: Rsubd, workdir: Path) -> None:
    out = workdir / "out"
    out.mkdir()
    cluster, go = submit_waiting(daemon, workdir, 'echo "hello $1"; echo "oops" >&2\n')
    undo = _a_file_in_its_place(out, cluster)
    try:
        go.touch()
        assert_needs_attention(daemon, cluster, out, "(errno 20) Not a directory")
        refused = daemon.rsub("retrieve", f"{cluster}.0", "--dest", str(out / "x"))
        assert refused.returncode == 2 and "Not a directory" in refused.stderr, refused.stderr
        elsewhere = workdir / "elsewhere"
        got = daemon.rsub("retrieve", f"{cluster}.0", "--dest", str(elsewhere), "--json")
        assert got.returncode == 0, got.stdout + got.stderr
        job = json.loads(got.stdout)["jobs"][0]
        assert (job["state"], job["retrieved_to"], job["needs_attention"]) == ("retrieved", str(elsewhere), False)
        assert (elsewhere / f"job_{cluster}.0.out").read_text() == f"hello {cluster}\n"
        assert (elsewhere / f"job_{cluster}.0.err").read_text() == "oops\n"
        wait_until(lambda: ledger_row(daemon, cluster)["marked_at"] is not None, 30, "RETRIEVED = true")
        # Asking again says where the output already is.
        again = daemon.rsub("retrieve", f"{cluster}.0")
        assert again.returncode == 2 and str(elsewhere) in again.stderr
    finally:
        undo()


@contextmanager
def _nothing(path: Path) -> Iterator[Path]:
    yield path


# -- a ledger rsubd cannot use -------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(64 * 1024))


def _newer(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE jobs (x); CREATE TABLE from_the_future (y); PRAGMA user_version = 99;")
    conn.close()


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT);"
                       "INSERT INTO photos (name) VALUES ('cat.jpg');")
    conn.close()


BAD_LEDGERS = {
    "garbage": (_garbage, "is not a readable SQLite database"),
    "from a newer rsub": (_newer, "is at schema 99, newer than this rsubd knows"),
    "not rsub's": (_foreign, "is an SQLite database but not an rsub ledger"),
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_refused(daemon: Rsubd, within: float) -> str:
    """Run rsubd, which must exit 1 within `within` seconds; returns its stderr."""
    started = time.monotonic()
    proc = subprocess.run([str(BIN / "rsubd")], env=daemon.env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert elapsed < within, f"refusing took {elapsed:.1f} s"
    return proc.stderr


@pytest.mark.parametrize("kind", list(BAD_LEDGERS))
def test_a_ledger_rsubd_cannot_use_is_refused_and_left_byte_for_byte(short_tmp: Path, kind: str) -> None:
    make, expected = BAD_LEDGERS[kind]
    daemon = Rsubd(short_tmp, CONFIG)
    daemon.state_dir.mkdir(parents=True, mode=0o700)
    ledger = daemon.state_dir / "ledger.db"
    make(ledger)
    before, mode = digest(ledger), ledger.stat().st_mode
    stderr = start_refused(daemon, within=20)
    assert "rsubd: cannot start: " in stderr and expected in stderr and str(ledger) in stderr, stderr
    assert "untouched" in stderr and ("move it out of the way" in stderr or "upgrade" in stderr), stderr
    assert "Traceback" not in stderr
    assert digest(ledger) == before and ledger.stat().st_mode == mode
    assert sorted(p.name for p in daemon.state_dir.glob("ledger.db*")) == ["ledger.db"]  # no -wal, no -shm
    assert daemon.rsub("ping").returncode == 3  # nothing serves
    # Moved out of the way, as the message says: rsubd starts with a new ledger and the old file is kept.
    ledger.rename(ledger.with_name("ledger.db.bad"))
    daemon.start()
    try:
        assert daemon.json("status")["jobs"] == []
        assert digest(ledger.with_name("ledger.db.bad")) == before
    finally:
        daemon.stop()


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(120)
"""


def test_a_locked_ledger_is_refused_in_bounded_time_naming_the_holder(short_tmp: Path, workdir: Path) -> None:
    daemon = Rsubd(short_tmp, CONFIG)
    daemon.start()
    write_job(workdir, "job.sh", "echo hi\n")
    (workdir / "job.sub").write_text("executable = job.sh\noutput = hi.out\nqueue\n")
    submitted = daemon.rsub("submit", "--json", "job.sub", cwd=workdir)
    assert submitted.returncode == 0, submitted.stderr
    cluster = json.loads(submitted.stdout)["cluster"]
    assert daemon.rsub("wait", "--timeout", "60", str(cluster)).returncode == 0
    daemon.stop()
    ledger = daemon.state_dir / "ledger.db"
    before = digest(ledger)
    # Only the ledger is locked; rsubd.lock (rsubd's own flock) is free, so this is not "already running".
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(ledger)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        stderr = start_refused(daemon, within=20)  # the busy timeout is 5 s: it never hangs
        assert f"the ledger {ledger} is locked by another process (pid {holder.pid}" in stderr, stderr
        assert "already running" not in stderr and "Traceback" not in stderr
        assert digest(ledger) == before
        assert daemon.rsub("ping").returncode == 3
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert digest(ledger) == before
    # The lock gone, rsubd starts on the same ledger and still knows the job.
    daemon.start()
    try:
        assert daemon.states(str(cluster)) == {f"{cluster}.0@local": "retrieved"}
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()


# -- a second rsubd --------------------------------------------------------------


def test_a_second_rsubd_is_refused_and_the_first_keeps_serving(daemon: Rsubd, workdir: Path) -> None:
    (workdir / "out").mkdir()
    cluster, go = submit_waiting(daemon, workdir, 'echo "hello $1"\n')
    socket = daemon.root / "run" / "rsub" / "rsubd.sock"
    inode = socket.stat().st_ino
    first = daemon.json("daemon", "status")["pid"]
    for _ in range(2):  # refused every time, and each refusal leaves the first one's socket alone
        stderr = start_refused(daemon, within=20)
        assert f"another rsubd is already running with state in {daemon.state_dir}" in stderr, stderr
        assert "Traceback" not in stderr
        assert socket.stat().st_ino == inode
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert daemon.json("daemon", "status")["pid"] == first
    go.touch()  # the first one still polls, retrieves and marks
    assert daemon.rsub("wait", "--timeout", "60", str(cluster)).returncode == 0
    assert (workdir / "out" / f"job_{cluster}.0.out").read_text() == f"hello {cluster}\n"

