"""Holds kept for jobs still spooling: a release cancels them, and a poll never sends one a release cancelled."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from rsubd.backends.schedd import Action, ActResult, ErrorKind, HoldCode, JobStatus, ScheddError
from rsubd.ledger.store import Ledger
from rsubd.services.spoolholds import SpoolHolds, cancel_intent, restore_intent


class StubSchedd:
    """Answers queries from `ads` and records each act."""

    name = "local"

    def __init__(self, ads: Sequence[dict[str, Any]]) -> None:
        self.ads = list(ads)
        self.queries: list[str] = []
        self.acts: list[tuple[Action, list[str], str | None]] = []

    def query(self, constraint: str, projection: Sequence[str]) -> list[dict[str, Any]]:
        self.queries.append(constraint)
        return self.ads

    def act(self, action: Action, jobs: list[str], reason: str | None) -> ActResult:
        self.acts.append((action, list(jobs), reason))
        return ActResult(success=len(jobs))


def ad(cluster: int, proc: int, status: JobStatus, code: int | None = None) -> dict[str, Any]:
    return {"ClusterId": cluster, "ProcId": proc, "JobStatus": int(status), "HoldReasonCode": code}


def test_a_release_by_id_drops_only_the_named_jobs_kept_holds(ledger: Ledger) -> None:
    ledger.add_pending_holds("local", [(5, 0), (5, 1)], "wrong input", 1.0)
    schedd = StubSchedd([])
    assert cancel_intent(schedd, ledger, "local", ["5.0", "6.0"]) == {(5, 0): ("wrong input", 1.0)}  # type: ignore[arg-type]
    assert set(ledger.pending_holds("local")) == {(5, 1)}
    assert schedd.queries == []  # ids need no query


def test_a_release_by_constraint_asks_the_schedd_which_jobs_it_names(ledger: Ledger) -> None:
    ledger.add_pending_holds("local", [(5, 0), (5, 1), (7, 0)], "wrong input", 1.0)
    schedd = StubSchedd([ad(5, 0, JobStatus.HELD, HoldCode.SPOOLING_INPUT), ad(5, 1, JobStatus.IDLE)])
    assert list(cancel_intent(schedd, ledger, "local", "ClusterId == 5")) == [(5, 0), (5, 1)]  # type: ignore[arg-type]
    assert schedd.queries == ["ClusterId == 5"]
    assert set(ledger.pending_holds("local")) == {(7, 0)}


def test_nothing_pending_asks_nothing(ledger: Ledger) -> None:
    schedd = StubSchedd([ad(5, 0, JobStatus.IDLE)])
    assert cancel_intent(schedd, ledger, "local", "true") == {}  # type: ignore[arg-type]
    assert schedd.queries == []


def test_a_poll_does_not_send_a_hold_a_release_cancelled_after_the_poll_read_it(ledger: Ledger) -> None:
    ledger.add_pending_holds("local", [(5, 0), (5, 1)], "wrong input", 1.0)
    schedd = StubSchedd([])
    holds = SpoolHolds(ledger, schedd)  # type: ignore[arg-type]
    read_by_the_poll = holds.pending()
    cancel_intent(schedd, ledger, "local", ["5.0"])  # type: ignore[arg-type]
    spooled = {(5, 0): ad(5, 0, JobStatus.IDLE), (5, 1): ad(5, 1, JobStatus.IDLE)}
    held = holds.settle(read_by_the_poll, spooled)  # type: ignore[arg-type]
    assert schedd.acts == [(Action.HOLD, ["5.1"], "wrong input")]
    assert [(c, p) for c, p, _ in held] == [(5, 1)]
    assert ledger.pending_holds("local") == {}


def test_a_failed_release_gets_its_kept_holds_back_as_they_were(ledger: Ledger) -> None:
    ledger.add_pending_holds("local", [(5, 0)], "wrong input", 1.0)
    ledger.add_pending_holds("local", [(5, 1)], "other", 2.0)
    dropped = cancel_intent(StubSchedd([]), ledger, "local", ["5.0", "5.1"])  # type: ignore[arg-type]
    assert ledger.pending_holds("local") == {}
    restore_intent(ledger, "local", dropped)
    assert ledger.pending_holds("local") == {(5, 0): ("wrong input", 1.0), (5, 1): ("other", 2.0)}


def test_a_constraint_the_schedd_cannot_answer_drops_nothing_and_raises(ledger: Ledger) -> None:
    ledger.add_pending_holds("local", [(5, 0)], "wrong input", 1.0)

    class Down(StubSchedd):
        def query(self, constraint: str, projection: Sequence[str]) -> list[dict[str, Any]]:
            raise ScheddError(ErrorKind.UNREACHABLE, "Failed to connect")

    with pytest.raises(ScheddError):
        cancel_intent(Down([]), ledger, "local", "ClusterId == 5")  # type: ignore[arg-type]
    assert set(ledger.pending_holds("local")) == {(5, 0)}


def test_a_release_waits_while_a_poll_sends_the_kept_holds_so_none_lands_after_it(ledger: Ledger) -> None:
    """The poll holds the lock from reading the pending holds again to dropping them: a release asked for
    meanwhile finds them sent and dropped (its own release then comes after the hold)."""
    ledger.add_pending_holds("local", [(5, 0)], "wrong input", 1.0)
    sending, go_on = threading.Event(), threading.Event()

    class Slow(StubSchedd):
        def act(self, action: Action, jobs: list[str], reason: str | None) -> ActResult:
            sending.set()
            assert go_on.wait(5)
            return super().act(action, jobs, reason)

    schedd = Slow([])
    holds = SpoolHolds(ledger, schedd)  # type: ignore[arg-type]
    poll = threading.Thread(target=holds.settle, args=(holds.pending(), {(5, 0): ad(5, 0, JobStatus.IDLE)}))
    poll.start()
    assert sending.wait(5)
    got: list[object] = []
    release = threading.Thread(target=lambda: got.append(cancel_intent(schedd, ledger, "local", ["5.0"])))  # type: ignore[arg-type]
    release.start()
    time.sleep(0.2)
    assert got == []  # waiting for the poll's hold to be sent
    go_on.set()
    poll.join(5)
    release.join(5)
    assert got == [{}] and schedd.acts == [(Action.HOLD, ["5.0"], "wrong input")]
