"""Holds kept for jobs still spooling: a release cancels them, and a poll never sends one a release cancelled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rsubd.backends.schedd import Action, ActResult, HoldCode, JobStatus
from rsubd.ledger.store import Ledger
from rsubd.services.spoolholds import SpoolHolds, cancel_intent


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
    assert cancel_intent(schedd, ledger, "local", ["5.0", "6.0"]) == ["5.0"]  # type: ignore[arg-type]
    assert set(ledger.pending_holds("local")) == {(5, 1)}
    assert schedd.queries == []  # ids need no query


def test_a_release_by_constraint_asks_the_schedd_which_jobs_it_names(ledger: Ledger) -> None:
    ledger.add_pending_holds("local", [(5, 0), (5, 1), (7, 0)], "wrong input", 1.0)
    schedd = StubSchedd([ad(5, 0, JobStatus.HELD, HoldCode.SPOOLING_INPUT), ad(5, 1, JobStatus.IDLE)])
    assert cancel_intent(schedd, ledger, "local", "ClusterId == 5") == ["5.0", "5.1"]  # type: ignore[arg-type]
    assert schedd.queries == ["ClusterId == 5"]
    assert set(ledger.pending_holds("local")) == {(7, 0)}


def test_nothing_pending_asks_nothing(ledger: Ledger) -> None:
    schedd = StubSchedd([ad(5, 0, JobStatus.IDLE)])
    assert cancel_intent(schedd, ledger, "local", "true") == []  # type: ignore[arg-type]
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
