"""Unit tests for rsubd.ledger.store against real SQLite files."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rsubd.ledger.schema import MIGRATIONS
from rsubd.ledger.store import JobSelector, Ledger, LedgerError


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.db"


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    led = Ledger(path)
    yield led
    led.close()


def open_fds_to(path: Path) -> list[str]:
    """This process's descriptors open on the ledger file or its WAL sidecars."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if str(target).startswith(str(path)):
            found.append(str(target))
    return found


def intent(ledger: Ledger, request_id: str = "req-1", schedd: str = "local") -> int:
    return ledger.add_submit_intent(
        request_id=request_id, schedd=schedd, tag=f"tag-{request_id}", description="queue\n",
        submitted_description="executable = /bin/true\nqueue\n", submit_dir="/sub", submit_file="job.sub",
    )


def submitted(ledger: Ledger, cluster: int, procs: int = 1, schedd: str = "local") -> int:
    row = intent(ledger, f"req-{schedd}-{cluster}", schedd)
    ledger.record_submitted(row, cluster, [(p, f"/iwd/{p}") for p in range(procs)])
    return row


def job(ledger: Ledger, cluster: int, proc: int = 0, schedd: str = "local") -> dict[str, object]:
    rows = ledger.jobs([JobSelector(cluster, proc, schedd)])
    assert len(rows) == 1
    return rows[0]


def keys(rows: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(r["schedd"], r["cluster"], r["proc"]) for r in rows]


# -- opening ---------------------------------------------------------------


def test_migrations_set_user_version_and_tables(ledger: Ledger, path: Path) -> None:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert {"meta", "clusters", "jobs", "events"} <= tables


def test_reopen_is_idempotent_and_keeps_data_and_instance_id(path: Path) -> None:
    first = Ledger(path)
    instance = first.instance_id
    submitted(first, 10, procs=2)
    first.close()
    second = Ledger(path)
    try:
        assert second.instance_id == instance
        assert len(second.jobs()) == 2
        assert second._conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert second._conn.execute("SELECT count(*) FROM meta WHERE key = 'instance_id'").fetchone()[0] == 1
    finally:
        second.close()


def test_instance_ids_differ_between_ledgers(tmp_path: Path) -> None:
    a, b = Ledger(tmp_path / "a.db"), Ledger(tmp_path / "b.db")
    try:
        assert a.instance_id != b.instance_id
        assert len(a.instance_id) == 32
    finally:
        a.close()
        b.close()


def test_file_is_private_and_in_wal_mode(ledger: Ledger, path: Path) -> None:
    submitted(ledger, 1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for sidecar in (path.with_name("ledger.db-wal"), path.with_name("ledger.db-shm")):
        if sidecar.exists():
            assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ledger._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_wal_lets_a_reader_see_committed_writes(ledger: Ledger, path: Path) -> None:
    submitted(ledger, 3)
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert reader.execute("SELECT cluster, state FROM jobs").fetchall() == [(3, "spooling")]
    finally:
        reader.close()


@pytest.mark.parametrize(
    "content",
    [b"this is my thesis, not a database\n" * 50, b"tiny", b"SQLite format 3\x00" + b"\xff" * 200],
)
def test_non_sqlite_file_is_refused_and_left_alone(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    path.chmod(0o644)
    with pytest.raises(LedgerError) as info:
        Ledger(path)
    message = str(info.value)
    assert str(path) in message
    assert "not a database" in message or "not a readable SQLite database" in message
    assert path.read_bytes() == content
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not path.with_name("ledger.db-wal").exists()
    assert open_fds_to(path) == []


def test_newer_schema_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match=f"schema {len(MIGRATIONS) + 1}, newer than this rsubd knows"):
        Ledger(path)
    assert open_fds_to(path) == []
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'jobs'").fetchone() is None
    finally:
        conn.close()


# -- submit ----------------------------------------------------------------


def test_submit_intent_then_submitted(ledger: Ledger) -> None:
    row = intent(ledger)
    cluster = ledger.cluster_row(row)
    assert cluster is not None
    assert cluster["state"] == "submitting"
    assert cluster["cluster"] is None
    assert ledger.cluster_by_request("req-1") == cluster
    assert ledger.jobs() == []

    ledger.record_submitted(row, 42, [(0, "/a"), (1, "/b")])
    cluster = ledger.cluster_row(row)
    assert cluster is not None
    assert (cluster["state"], cluster["cluster"], cluster["num_procs"]) == ("spooling", 42, 2)
    assert cluster["submitted_at"] is not None
    rows = ledger.jobs()
    assert [(r["cluster"], r["proc"], r["state"], r["iwd"], r["job_status"]) for r in rows] == [
        (42, 0, "spooling", "/a", 5), (42, 1, "spooling", "/b", 5),
    ]
    # One event for the cluster (proc NULL), which each proc's own history shows.
    events = ledger.events("local", 42)
    assert [(e["proc"], e["from_state"], e["to_state"], e["detail"]) for e in events] == [
        (None, None, "spooling", "2 job(s) submitted")
    ]
    assert [e["proc"] for e in ledger.events("local", 42, 1)] == [None]

    ledger.record_spooled(row)
    assert ledger.cluster_row(row)["state"] == "submitted"  # type: ignore[index]


def test_request_id_is_unique(ledger: Ledger) -> None:
    intent(ledger, "same")
    with pytest.raises(sqlite3.IntegrityError):
        intent(ledger, "same")
    assert ledger.cluster_by_request("missing") is None


def test_submit_failed_before_the_schedd_made_a_cluster(ledger: Ledger) -> None:
    row = intent(ledger)
    ledger.record_submit_failed(row, "submit_rejected: no")
    cluster = ledger.cluster_row(row)
    assert cluster is not None
    assert (cluster["state"], cluster["error"]) == ("failed", "submit_rejected: no")
    assert ledger.jobs() == []


def test_submit_failed_after_submit_fails_cluster_and_jobs(ledger: Ledger) -> None:
    row = submitted(ledger, 7, procs=2)
    other = submitted(ledger, 8)
    ledger.record_submit_failed(row, "spool failed: input_missing")
    assert ledger.cluster_row(row)["state"] == "failed"  # type: ignore[index]
    assert ledger.cluster_row(other)["state"] == "spooling"  # type: ignore[index]
    assert [(r["state"], r["error"]) for r in ledger.jobs([JobSelector(7)])] == [
        ("failed", "spool failed: input_missing")
    ] * 2
    assert job(ledger, 8)["state"] == "spooling"
    events = ledger.events("local", 7, 0)
    assert [(e["from_state"], e["to_state"], e["detail"]) for e in events] == [
        (None, "spooling", "2 job(s) submitted"), ("spooling", "failed", "spool failed: input_missing"),
    ]


# -- polling ---------------------------------------------------------------


def test_apply_changes_updates_only_given_rows_and_fields(ledger: Ledger) -> None:
    submitted(ledger, 1, procs=2)
    before = job(ledger, 1, 1)
    n = ledger.apply_changes("local", [(1, 0, {"state": "running", "job_status": 2})])
    assert n == 1
    changed = job(ledger, 1, 0)
    assert (changed["state"], changed["job_status"], changed["iwd"]) == ("running", 2, "/iwd/0")
    assert changed["updated_at"] >= before["updated_at"]  # type: ignore[operator]
    assert job(ledger, 1, 1) == before


def test_apply_changes_is_per_schedd(ledger: Ledger) -> None:
    submitted(ledger, 1, schedd="a")
    submitted(ledger, 1, schedd="b")
    ledger.apply_changes("a", [(1, 0, {"state": "idle"})])
    assert job(ledger, 1, 0, "a")["state"] == "idle"
    assert job(ledger, 1, 0, "b")["state"] == "spooling"


def test_apply_changes_event_only_on_state_change(ledger: Ledger) -> None:
    submitted(ledger, 1)
    ledger.apply_changes("local", [(1, 0, {"job_status": 1})])
    ledger.apply_changes("local", [(1, 0, {"state": "spooling", "hold_code": 16})])
    assert len(ledger.events("local", 1)) == 1
    ledger.apply_changes("local", [(1, 0, {"state": "held", "hold_reason": "by you", "hold_code": 1})])
    events = ledger.events("local", 1)
    assert [(e["from_state"], e["to_state"], e["detail"]) for e in events] == [
        (None, "spooling", "1 job(s) submitted"), ("spooling", "held", "by you"),
    ]


def test_apply_changes_refuses_unknown_fields_and_rolls_back(ledger: Ledger) -> None:
    submitted(ledger, 1, procs=2)
    with pytest.raises(ValueError, match="iwd"):
        ledger.apply_changes("local", [(1, 0, {"state": "idle"}), (1, 1, {"iwd": "/elsewhere"})])
    assert job(ledger, 1, 0)["state"] == "spooling"
    assert job(ledger, 1, 1)["iwd"] == "/iwd/1"
    assert len(ledger.events("local", 1)) == 1


def test_apply_changes_skips_unknown_jobs(ledger: Ledger) -> None:
    submitted(ledger, 1)
    ledger.apply_changes("local", [(99, 0, {"state": "idle"})])
    assert ledger.jobs([JobSelector(99)]) == []
    assert ledger.events("local", 99) == []
    assert ledger.apply_changes("local", []) == 0


def test_tracked_jobs(ledger: Ledger) -> None:
    submitted(ledger, 1, procs=9)
    submitted(ledger, 2, schedd="other")
    states = ["spooling", "idle", "running", "held", "completed", "retrieved", "retrieved", "removed", "failed"]
    ledger.apply_changes("local", [(1, p, {"state": s}) for p, s in enumerate(states)])
    ledger.apply_changes("local", [(1, 6, {"marked_at": 1.0})])
    tracked = ledger.tracked_jobs("local")
    assert sorted(r["proc"] for r in tracked) == [0, 1, 2, 3, 4, 5]
    assert {r["schedd"] for r in tracked} == {"local"}
    assert keys(ledger.tracked_jobs("other")) == [("other", 2, 0)]
    assert ledger.tracked_jobs("nowhere") == []


def test_jobs_filters(ledger: Ledger) -> None:
    submitted(ledger, 1, procs=3)
    submitted(ledger, 2, procs=2)
    submitted(ledger, 1, procs=1, schedd="b")
    ledger.apply_changes("local", [(1, 1, {"state": "removed"}), (2, 0, {"state": "retrieved"})])

    assert keys(ledger.jobs()) == [
        ("b", 1, 0), ("local", 1, 0), ("local", 1, 1), ("local", 1, 2), ("local", 2, 0), ("local", 2, 1),
    ]
    assert keys(ledger.jobs([JobSelector(1)])) == [("b", 1, 0), ("local", 1, 0), ("local", 1, 1), ("local", 1, 2)]
    assert keys(ledger.jobs([JobSelector(1, schedd="local")])) == [("local", 1, 0), ("local", 1, 1), ("local", 1, 2)]
    assert keys(ledger.jobs([JobSelector(1, 2)])) == [("local", 1, 2)]
    assert keys(ledger.jobs([JobSelector(1, 2), JobSelector(2, 1)])) == [("local", 1, 2), ("local", 2, 1)]
    assert keys(ledger.jobs([JobSelector(3)])) == []
    assert keys(ledger.jobs(active=True)) == [("b", 1, 0), ("local", 1, 0), ("local", 1, 2), ("local", 2, 1)]
    assert keys(ledger.jobs([JobSelector(2)], active=True)) == [("local", 2, 1)]
    assert keys(ledger.jobs(limit=2)) == [("b", 1, 0), ("local", 1, 0)]
    assert keys(ledger.jobs(limit=2, offset=4)) == [("local", 2, 0), ("local", 2, 1)]
    assert keys(ledger.jobs(limit=2, offset=6)) == []


def test_counts_by_state(ledger: Ledger) -> None:
    assert ledger.counts_by_state("local") == {}
    submitted(ledger, 1, procs=4)
    submitted(ledger, 2, schedd="b")
    ledger.apply_changes("local", [(1, 0, {"state": "running"}), (1, 1, {"state": "running"}),
                                   (1, 2, {"state": "held"})])
    assert ledger.counts_by_state("local") == {"running": 2, "held": 1, "spooling": 1}
    assert ledger.counts_by_state("b") == {"spooling": 1}


def test_ledger_is_usable_from_another_thread(ledger: Ledger) -> None:
    import threading

    errors: list[BaseException] = []

    def work() -> None:
        try:
            submitted(ledger, 5)
        except BaseException as e:  # noqa: BLE001 - the assertion below reports it
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join(10)
    assert errors == []
    assert job(ledger, 5)["state"] == "spooling"


# -- a ledger of 100,000 jobs --------------------------------------------------------


def plans(ledger: Ledger, call: Callable[[], object]) -> list[str]:
    """The query plan of every SELECT on jobs that `call` runs."""
    seen: list[str] = []
    ledger._conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        ledger._conn.set_trace_callback(None)
    out = []
    for sql in seen:
        if sql.startswith("SELECT") and " jobs " in f"{sql} ":
            out.extend(" ".join(str(c) for c in row[3:]) for row in ledger._conn.execute("EXPLAIN QUERY PLAN " + sql))
    return out


@pytest.mark.parametrize(
    ("what", "call"),
    [
        ("rsub q", lambda led: led.jobs(active=True, limit=1000)),
        ("rsub status C.P", lambda led: led.jobs([JobSelector(5, 3)], limit=1000)),
        ("rsub status C", lambda led: led.jobs([JobSelector(5)], limit=1000)),
        ("rsub status C.P@S", lambda led: led.jobs([JobSelector(5, 3, "local")], limit=1000)),
        ("a poll", lambda led: led.tracked("local")),
    ],
)
def test_reads_use_an_index_in_the_order_shown(ledger: Ledger, what: str, call: Callable[[Ledger], object]) -> None:
    submitted(ledger, 5, procs=5)
    steps = plans(ledger, lambda: call(ledger))
    assert steps, what
    assert not any(s.startswith("SCAN jobs") and "INDEX" not in s for s in steps), (what, steps)
    assert not any("TEMP B-TREE" in s for s in steps), (what, steps)


def test_daemon_status_counts_read_no_job_row(ledger: Ledger) -> None:
    # At every systemd watchdog ping: the kept counts, not a GROUP BY over a year's million jobs (110 ms).
    submitted(ledger, 5, procs=5)
    ledger.apply_changes("local", [(5, 0, {"state": "running"})])
    assert plans(ledger, lambda: ledger.counts_by_state("local")) == []
    counted = dict(ledger._conn.execute("SELECT state, count(*) FROM jobs WHERE schedd = 'local' GROUP BY state"))
    assert ledger.counts_by_state("local") == counted == {"running": 1, "spooling": 4}


def test_tracked_is_compact_tuples_of_what_a_poll_compares(ledger: Ledger) -> None:
    submitted(ledger, 1, procs=3)
    ledger.apply_changes("local", [(1, 1, {"state": "retrieved", "retrieved_at": 2.0}),
                                   (1, 2, {"state": "removed", "remove_reason": "x"})])
    assert sorted(ledger.tracked("local")) == [
        (1, 0, "spooling", 5, None, None, None, None, None, None, None, None, None),
        (1, 1, "retrieved", 5, None, None, None, None, None, None, None, None, None),
    ]
    # The retrieve backoff, and a pause for a person, are one column: not before this time (inf: until asked).
    ledger.apply_changes("local", [(1, 0, {"retrieve_retry_at": 50.0, "retrieve_failures": 2})])
    assert ledger.tracked("local")[0].retrieve_not_before == 50.0
    ledger.apply_changes("local", [(1, 0, {"retrieve_paused": 1})])
    assert ledger.tracked("local")[0].retrieve_not_before == float("inf")
    assert ledger.retrieve_failures("local", [(1, 0), (1, 1)]) == {(1, 0): (2, None), (1, 1): (0, None)}


def test_apply_changes_to_one_job_twice_lands_in_order(ledger: Ledger) -> None:
    submitted(ledger, 1, procs=2)
    ledger.apply_changes("local", [(1, 0, {"state": "running"}), (1, 1, {"state": "idle"}),
                                   (1, 0, {"state": "completed", "exit_code": 0}), (1, 0, {"marked_at": 3.0})])
    row = job(ledger, 1, 0)
    assert (row["state"], row["exit_code"], row["marked_at"]) == ("completed", 0, 3.0)
    assert [(e["from_state"], e["to_state"]) for e in ledger.events("local", 1, 0)][1:] == [
        ("spooling", "running"), ("running", "completed")]


def test_record_submitted_of_ten_thousand_procs_is_one_transaction(ledger: Ledger) -> None:
    seen: list[str] = []
    ledger._conn.set_trace_callback(seen.append)
    submitted(ledger, 9, procs=10_000)
    ledger._conn.set_trace_callback(None)
    assert sum(s.startswith("BEGIN") for s in seen) == 2  # the intent, then the jobs
    assert ledger.counts_by_state("local") == {"spooling": 10_000}
    assert len(ledger.events("local", 9)) == 1


def test_a_ledger_of_schema_1_gains_the_indexes_and_keeps_its_jobs(path: Path) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    conn.execute("INSERT INTO clusters (id, request_id, schedd, cluster, tag, state, description, "
                 "submitted_description, submit_dir, created_at) VALUES (1, 'r', 'local', 3, 't', 'submitted', "
                 "'', '', '/', 0)")
    conn.execute("INSERT INTO jobs (schedd, cluster, proc, cluster_row, state, submitted_at, updated_at) "
                 "VALUES ('local', 3, 0, 1, 'running', 0, 0)")
    conn.commit()
    conn.close()
    led = Ledger(path)
    try:
        assert led._conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        indexes = {r[0] for r in led._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"jobs_cluster", "jobs_state"} <= indexes
        assert [(r[0], r[1], r[2]) for r in led.tracked("local")] == [(3, 0, "running")]
    finally:
        led.close()


def test_a_resubmit_keeps_the_token_profile_its_cluster_went_out_with(ledger: Ledger) -> None:
    """Migration 9: `rsub resubmit` sends jobs again with the credential of the cluster they replace."""
    row = ledger.add_submit_intent(request_id="r1", schedd="fnal", tag="t1", description="d", submitted_description="d",
                                   submit_dir="/tmp", submit_file=None, token_profile="dune")
    ledger.record_submitted(row, 12, [(0, "/tmp"), (1, "/tmp")])
    plain = ledger.add_submit_intent(request_id="r2", schedd="fnal", tag="t2", description="d",
                                     submitted_description="d", submit_dir="/tmp", submit_file=None)
    again = ledger.add_resubmit_intent(request_id="r3", schedd="fnal", tag="t3", description="d",
                                       submitted_description="d", submit_dir="/tmp", replaces=[(12, 1)])
    assert ledger.cluster_row(row)["token_profile"] == "dune"  # type: ignore[index]
    assert ledger.cluster_row(plain)["token_profile"] is None  # type: ignore[index]
    assert ledger.cluster_row(again)["token_profile"] == "dune"  # type: ignore[index]
