"""Compaction of old final jobs: their events go, their rows and what the views show of them stay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rsub.wire.vocabulary import FINAL_STATES
from rsubd.ledger import compaction
from rsubd.ledger.compaction import Compactor, compact
from rsubd.ledger.schema import FINAL_SQL, MIGRATIONS
from rsubd.ledger.store import Ledger


def _cluster(ledger: Ledger, cluster: int, procs: int, schedd: str = "local") -> None:
    row = ledger.add_submit_intent(request_id=f"r{schedd}{cluster}", schedd=schedd, tag=f"t{cluster}",
                                   description="queue\n", submitted_description="executable = /bin/true\nqueue\n",
                                   submit_dir="/sub", submit_file=None)
    ledger.record_submitted(row, cluster, [(p, "/iwd") for p in range(procs)])


def _live(ledger: Ledger, cluster: int, procs: range, *, to: str, schedd: str = "local") -> None:
    """Take jobs through idle and running to `to` (retrieved and marked, removed, or completed), change by change."""
    steps: list[dict[str, object]] = [{"state": "idle", "job_status": 1}, {"state": "running", "job_status": 2}]
    if to == "removed":
        steps.append({"state": "removed", "job_status": 3, "remove_reason": "by hand"})
    else:
        steps.append({"state": "completed", "job_status": 4, "exit_code": 3, "completed_at": time.time()})
        if to != "completed":
            steps.append({"state": "retrieved", "retrieved_at": time.time()})
            steps.append({"marked_at": time.time()} if to == "marked" else {})
    for fields in steps:
        if fields:
            ledger.apply_changes(schedd, [(cluster, p, dict(fields)) for p in procs])
        time.sleep(0.002)  # distinct event times


def _history(ledger: Ledger) -> dict[tuple[int, int], dict[str, object]]:
    rows = ledger.job_page(states=list(FINAL_STATES), newest_first=True, limit=1000)
    keep = ("state", "exit_code", "run_started_at", "run_left_at", "finished_at", "retrieved_at")
    return {(r["cluster"], r["proc"]): {k: r[k] for k in keep} for r in rows}


def _own_events(ledger: Ledger, cluster: int) -> int:
    return len([e for e in ledger.events("local", cluster) if e["proc"] is not None])


def test_compaction_drops_the_events_and_history_shows_the_same(ledger: Ledger) -> None:
    _cluster(ledger, 1, 3)
    _live(ledger, 1, range(3), to="marked")
    _cluster(ledger, 2, 2)
    _live(ledger, 2, range(2), to="removed")
    _cluster(ledger, 3, 1)
    _live(ledger, 3, range(1), to="retrieved")  # not yet marked: the schedd still holds it, a poll tracks it
    _cluster(ledger, 4, 1)
    _live(ledger, 4, range(1), to="completed")  # active
    before = _history(ledger)
    assert len(before) == 6 and all(v["run_started_at"] is not None for v in before.values())
    assert compact(ledger, "local", time.time() + 1, now=time.time()) == 5
    assert _own_events(ledger, 1) == 0 and _own_events(ledger, 2) == 0
    assert _own_events(ledger, 3) > 0 and _own_events(ledger, 4) > 0  # tracked jobs keep theirs
    assert [e["to_state"] for e in ledger.events("local", 1)] == ["spooling"]  # the cluster's submit stays
    assert _history(ledger) == before  # same jobs, states, exit codes and run times
    assert compact(ledger, "local", time.time() + 1, now=time.time()) == 0  # nothing twice


def test_a_job_final_later_is_compacted_by_a_later_run(ledger: Ledger) -> None:
    _cluster(ledger, 1, 1)
    _live(ledger, 1, range(1), to="marked")
    assert compact(ledger, "local", time.time(), now=time.time()) == 1
    _cluster(ledger, 2, 1)
    _live(ledger, 2, range(1), to="marked")
    assert compact(ledger, "local", time.time(), now=time.time()) == 1  # past the watermark: found
    assert _own_events(ledger, 2) == 0


def test_only_old_enough_jobs_and_only_that_schedd(ledger: Ledger) -> None:
    _cluster(ledger, 1, 2)
    _live(ledger, 1, range(2), to="marked")
    _cluster(ledger, 1, 2, schedd="other")
    _live(ledger, 1, range(2), to="marked", schedd="other")
    assert compact(ledger, "local", time.time() - 3600, now=time.time()) == 0  # finished just now: too young
    assert compact(ledger, "local", time.time() + 1, now=time.time()) == 2
    assert len([e for e in ledger.events("other", 1) if e["proc"] is not None]) > 0


def test_batches_carry_on_where_the_last_stopped(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    _cluster(ledger, 1, 5)
    _live(ledger, 1, range(5), to="marked")
    for expected in (2, 2, 1, 0):
        assert compact(ledger, "local", time.time() + 1, now=time.time(), limit=2) == expected
    assert _own_events(ledger, 1) == 0


def test_compactor_runs_while_there_is_a_backlog_then_pauses(ledger: Ledger,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _cluster(ledger, 1, 3)
    _live(ledger, 1, range(3), to="marked")
    monkeypatch.setattr(compaction, "BATCH", 2)
    clock = [time.time() + 3 * compaction.PAUSE]
    compactor = Compactor(ledger, 2 * compaction.PAUSE, clock=lambda: clock[0])
    assert compactor.maybe("local") == 2
    assert compactor.maybe("local") == 1  # a full batch: the next poll goes on
    _cluster(ledger, 2, 1)
    _live(ledger, 2, range(1), to="marked")
    # Retrieved after the first runs' cut-off, as a job that becomes final now always is.
    ledger.apply_changes("local", [(2, 0, {"retrieved_at": clock[0]})])
    clock[0] += 100
    assert compactor.maybe("local") == 0  # within the pause
    clock[0] += 3 * compaction.PAUSE
    assert compactor.maybe("local") == 1
    assert Compactor(ledger, 0).maybe("local") == 0  # compact_after_days = 0: never


def test_history_walks_the_partial_index(ledger: Ledger) -> None:
    mine = next(m for m in MIGRATIONS if "jobs_finished" in m)
    assert FINAL_SQL in " ".join(mine.split())  # the query says what the index says, to the letter
    seen: list[str] = []
    ledger._conn.set_trace_callback(seen.append)
    ledger.job_page(states=list(FINAL_STATES), newest_first=True, limit=10)
    ledger._conn.set_trace_callback(None)
    sql = next(s for s in seen if "WITH page" in s)
    plan = " ".join(str(r) for r in ledger._conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall())
    assert "jobs_finished" in plan


def test_job_counts_follow_every_write(ledger: Ledger) -> None:
    """The counts the triggers keep (q's and history's totals) equal a count of the rows, after each kind of write."""

    def check() -> None:
        for states in (list(FINAL_STATES), ["idle", "running", "completed", "spooling"], ["failed"], ["removed"]):
            for schedd in (None, "local", "other"):
                args: list[object] = list(states)
                sql = f"SELECT count(*) FROM jobs WHERE state IN ({', '.join('?' * len(states))})"
                if schedd is not None:
                    sql, args = sql + " AND schedd = ?", [*args, schedd]
                assert ledger.job_count(states=states, schedd=schedd) == ledger._conn.execute(sql, args).fetchone()[0]

    _cluster(ledger, 1, 4)
    check()
    _live(ledger, 1, range(2), to="marked")
    _live(ledger, 1, range(2, 4), to="removed")
    _cluster(ledger, 2, 3, schedd="other")
    _live(ledger, 2, range(3), to="completed", schedd="other")
    check()
    row = ledger.add_submit_intent(request_id="f", schedd="local", tag="tf", description="q", submitted_description="q",
                                   submit_dir="/s", submit_file=None)
    ledger.record_submitted(row, 3, [(0, "/i"), (1, "/i")])
    ledger.record_submit_failed(row, "spool failed")
    check()
    compact(ledger, "local", time.time() + 1, now=time.time())
    check()
    assert ledger.job_count(states=list(FINAL_STATES)) == 6


def test_a_ledger_from_before_the_counts_gets_them(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    before = next(i for i, m in enumerate(MIGRATIONS) if "job_counts" in m)  # the ledger as it was just before
    for number, migration in enumerate(MIGRATIONS[:before], start=1):
        for statement in migration.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO clusters (request_id, schedd, tag, state, description, submitted_description,"
                 " submit_dir, created_at) VALUES ('r', 'local', 't', 'submitted', 'q', 'q', '/s', 0)")
    for proc, state in enumerate(["retrieved", "retrieved", "removed", "idle"]):
        conn.execute("INSERT INTO jobs (schedd, cluster, proc, cluster_row, state, submitted_at, updated_at)"
                     " VALUES ('local', 1, ?, 1, ?, 0, 0)", (proc, state))
    conn.close()
    ledger = Ledger(path)
    try:
        assert ledger.job_count(states=list(FINAL_STATES)) == 3
        assert ledger.job_count(states=["idle"], schedd="local") == 1
    finally:
        ledger.close()
