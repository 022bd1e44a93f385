"""A poll's quick pass over unchanged ads (`observing.quiet`) never hides a change `observe` would see."""

from __future__ import annotations

import itertools
from typing import Any

from rsubd.ledger.schema import TrackedJob
from rsubd.polling.observing import OBSERVED_END, observe, quiet

STATUSES: list[Any] = [None, 1, 2, 3, 4, 5, 6, 7, 1.0, True, "1"]
HOLD_CODES: list[Any] = [None, 16, 21]
COMPLETIONS: list[Any] = [None, 0, 1000, 1000.0, 2000, -1, "x"]
STATES = ["idle", "running", "held", "spooling", "completed", "retrieved"]


def row(state: str, status: Any, hold: Any, completed_at: Any, exit_code: Any = None) -> TrackedJob:
    return TrackedJob(1, 0, state, status, "why" if hold else None, hold, exit_code, None, None, completed_at,
                      None, None, None)


def test_quiet_means_observe_sees_no_change() -> None:
    seen_quiet = 0
    for status, code, completion, state, row_status, row_hold, row_completed, exit_code in itertools.product(
            STATUSES, HOLD_CODES, COMPLETIONS, STATES, [None, 1, 2, 5, 7], [None, 21], [None, 1000.0], [None, 0]):
        ad = {"JobStatus": status, "HoldReasonCode": code, "HoldReason": "why", "CompletionDate": completion,
              "ExitCode": 0}
        job = row(state, row_status, row_hold, row_completed, exit_code)
        if quiet(ad, job):
            seen_quiet += 1
            assert observe(ad, job) == job[2:OBSERVED_END], (ad, job)
    assert seen_quiet > 0


def test_the_common_ads_are_quiet() -> None:
    assert quiet({"JobStatus": 1, "CompletionDate": 0}, row("idle", 1, None, None))
    assert quiet({"JobStatus": 2}, row("running", 2, None, None))
    assert quiet({"JobStatus": 2, "CompletionDate": 1000}, row("running", 2, None, 1000.0))  # requeued after a run
    assert not quiet({"JobStatus": 2}, row("idle", 1, None, None))  # started
    assert not quiet({"JobStatus": 1, "CompletionDate": 1500}, row("idle", 1, None, 1000.0))
    assert not quiet({"JobStatus": 4}, row("completed", 4, None, 1000.0))  # its retrieve is the poll's business
