"""The tracked jobs kept in memory between polls (ledger/trackedcache.py) always read as the ledger does."""

from __future__ import annotations

import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from rsubd.ledger.schema import TrackedJob
from rsubd.ledger.store import Ledger

Key = tuple[int, int]


def submit(ledger: Ledger, cluster: int, procs: int, schedd: str = "local") -> None:
    row = ledger.add_submit_intent(request_id=f"req-{schedd}-{cluster}", schedd=schedd, tag=f"t{cluster}",
                                   description="queue\n", submitted_description="queue\n", submit_dir="/sub",
                                   submit_file="job.sub")
    ledger.record_submitted(row, cluster, [(p, f"/iwd/{p}") for p in range(procs)])


def fresh(ledger: Ledger, schedd: str = "local") -> dict[Key, TrackedJob]:
    """What the ledger itself says, past any copy in memory."""
    return {(r.cluster, r.proc): r for r in Ledger.tracked(ledger, schedd)}


class Reads:
    """Counts the ledger's reads of the tracked rows, so a test can tell the copy was used."""

    def __init__(self, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        inner = ledger.tracked

        def counted(schedd: str) -> list[TrackedJob]:
            self.count += 1
            return inner(schedd)

        monkeypatch.setattr(ledger, "tracked", counted)


CHANGES: list[dict[str, Any]] = [
    {"state": "running", "job_status": 2, "wall_time": 12.0},
    {"state": "held", "job_status": 5, "hold_reason": "because", "hold_code": 21},
    {"state": "idle", "job_status": 1, "hold_reason": None, "hold_code": None},
    {"state": "completed", "job_status": 4, "exit_code": 0, "completed_at": 1000.0, "retrieve_started_at": 1001.0},
    {"retrieve_failures": 1, "retrieve_retry_at": 2000.0, "retrieve_paused": 0, "error": "retrieve failed"},
    {"retrieve_failures": 2, "retrieve_retry_at": None, "retrieve_paused": 1, "attention": "fix it"},
    {"retrieve_started_at": 1500.0, "retrieve_paused": 0, "retrieve_retry_at": None},
    {"state": "retrieved", "retrieved_at": 1002.0, "error": None, "retrieve_failures": 0, "retrieve_failing_since": None,
     "retrieve_retry_at": None, "retrieve_paused": 0, "attention": None},
    {"marked_at": 1003.0},
    {"state": "removed", "job_status": 3, "remove_reason": "by someone"},
    {"state": "failed", "error": "left the queue"},
]
LOSING: list[dict[str, Any]] = [
    {"retrieve_failures": 1, "retrieve_retry_at": 2000.0},  # if paused, the row does not say its retry_at
    {"retrieve_retry_at": 3000.0},  # while paused: not told exactly from the row, so the copy goes
    {"hold_code": "21"},  # text in an INTEGER column reads back as a number: the copy goes
]


def test_the_copy_reads_as_the_ledger_through_a_poll_s_changes(ledger: Ledger, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    submit(ledger, 1, 40)
    submit(ledger, 2, 40, schedd="other")
    reads = Reads(ledger, monkeypatch)
    rng = random.Random(7)
    for cluster, choices in ((1, CHANGES), (3, CHANGES + LOSING)):
        if cluster == 3:
            submit(ledger, 3, 40)  # a submit: the next read reads the ledger again
        for _ in range(20):
            jobs = sorted(fresh(ledger))
            picked = rng.sample(jobs, min(len(jobs), 5))
            ledger.apply_changes("local", [(c, p, dict(rng.choice(choices))) for c, p in picked])
            assert ledger.tracked_by_key("local") == fresh(ledger)
            assert ledger.tracked_by_key("other") == fresh(ledger, "other")
        if choices is CHANGES:
            assert reads.count == 2  # each schedd's read once: every poll's news went to the copy
    assert reads.count > 4  # after the submit, the changes it cannot tell exactly made it read again


def test_a_poll_shaped_change_keeps_the_copy(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(ledger, 1, 3)
    submit(ledger, 2, 3, schedd="other")
    ledger.tracked_by_key("local")
    ledger.tracked_by_key("other")
    reads = Reads(ledger, monkeypatch)
    ledger.apply_changes("local", [(1, 0, {"state": "running", "job_status": 2}),
                                   (1, 1, {"state": "removed", "job_status": 3, "remove_reason": "x"})])
    ledger.apply_changes("other", [(2, 2, {"state": "held", "job_status": 5, "hold_code": 1, "hold_reason": "y"})])
    local, other = ledger.tracked_by_key("local"), ledger.tracked_by_key("other")
    assert reads.count == 0
    assert local == fresh(ledger) and other == fresh(ledger, "other")
    assert local[(1, 0)].state == "running" and (1, 1) not in local
    assert other[(2, 2)].hold_reason == "y"


def test_the_copy_is_the_caller_s_own(ledger: Ledger) -> None:
    submit(ledger, 1, 2)
    first = ledger.tracked_by_key("local")
    ledger.apply_changes("local", [(1, 0, {"state": "running", "job_status": 2})])
    assert first[(1, 0)].state == "spooling"  # what the poll began with stays as it was read
    assert ledger.tracked_by_key("local")[(1, 0)].state == "running"


def test_any_other_write_reads_the_ledger_again(ledger: Ledger, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    submit(ledger, 1, 2)
    assert len(ledger.tracked_by_key("local")) == 2
    submit(ledger, 2, 3)  # a submit
    assert len(ledger.tracked_by_key("local")) == 5
    ledger._conn.execute("UPDATE jobs SET state = 'removed' WHERE cluster = 2")  # any code's write
    assert sorted(ledger.tracked_by_key("local")) == [(1, 0), (1, 1)]
    other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)  # another connection's commit
    other.execute("UPDATE jobs SET state = 'running', job_status = 2 WHERE cluster = 1 AND proc = 1")
    other.close()
    assert ledger.tracked_by_key("local")[(1, 1)].state == "running"
    reads = Reads(ledger, monkeypatch)
    ledger.apply_changes("local", [(7, 0, {"state": "running"})])  # a job the copy does not hold
    assert ledger.tracked_by_key("local") == fresh(ledger)
    assert reads.count == 1  # the copy went


def test_a_paused_retrieve_reads_back_inf(ledger: Ledger) -> None:
    submit(ledger, 1, 1)
    ledger.tracked_by_key("local")
    ledger.apply_changes("local", [(1, 0, {"state": "completed", "job_status": 4, "retrieve_paused": 1})])
    assert math.isinf(ledger.tracked_by_key("local")[(1, 0)].retrieve_not_before or 0)
    assert ledger.tracked_by_key("local") == fresh(ledger)


def test_events_from_memory_are_those_the_ledger_would_write(tmp_path: Path) -> None:
    """The same changes to a ledger whose tracked jobs are in memory and to one that reads each job's state."""
    warm, cold = Ledger(tmp_path / "warm.db"), Ledger(tmp_path / "cold.db")
    try:
        rng = random.Random(3)
        for led in (warm, cold):
            submit(led, 1, 30)
        for _ in range(30):
            jobs = sorted(fresh(cold))
            picked = rng.sample(jobs, min(len(jobs), 6))
            changes = [(c, p, dict(rng.choice(CHANGES + LOSING))) for c, p in picked]
            if picked and rng.random() < 0.2:
                changes.append((*picked[0], {"state": "held", "job_status": 5}))  # one job twice in a poll
            warm.tracked_by_key("local")  # as each poll begins
            warm.apply_changes("local", changes)
            cold.apply_changes("local", changes)
        events = "SELECT schedd, cluster, proc, from_state, to_state, detail FROM events ORDER BY cluster, proc, id"
        assert warm._query(events) == cold._query(events)
        assert len(cold._query(events)) > 60
    finally:
        warm.close()
        cold.close()
