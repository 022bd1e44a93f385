"""rsub's LeaveJobInQueue expression, evaluated by HTCondor's own ClassAd library on realistic ads.

The ads in tests/data/leave_in_queue_ads.json are modelled on what a real
HTCondor 25 schedd held at each stage of a spooled job. The expression must keep
a job only while it is completed, not retrieved and younger than the age limit:
everything else (held, idle, running, removed, retrieved, too old) must leave.
"""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import classad2
import pytest

from rsubd.services.submission import leave_in_queue

DATA = Path(__file__).resolve().parent.parent / "data" / "leave_in_queue_ads.json"
LIMIT = 864000  # ten days, what the contract suite submits with

# Attributes holding a time; shifted together so an ad's ages survive being read later.
TIME_ATTRS = {
    "QDate",
    "EnteredCurrentStatus",
    "CompletionDate",
    "JobCurrentStartDate",
    "StageInStart",
    "StageInFinish",
    "StageOutStart",
    "StageOutFinish",
    "ServerTime",
}

# Fixture ad -> does LeaveJobInQueue keep it?
EXPECTED = {
    "held_spooling": False,
    "idle_after_spool": False,
    "running": False,
    "completed_not_retrieved": True,
    "completed_exit_code_3": True,
    "completed_killed_by_signal": True,
    "completed_retrieved": False,
    "held_transfer_output_error": False,
    "held_periodic_hold": False,
    "removed_staging_failed": False,
    "removed_by_user": False,
    "completed_too_old": False,
    # A completed job whose age is unknown is kept until rsub has its output.
    "completed_completion_date_undefined": True,
    "completed_completion_date_zero": True,
    "completed_retrieved_completion_date_undefined": False,
}

# The shapes in which a remote-submit leave_in_queue example goes wrong.
BROKEN = {
    # RETRIEVED moved inside the alternatives: any young completed job is kept, retrieved or not.
    "retrieved_inside_alternatives": (
        "JobStatus == 4 && (RETRIEVED =!= true || CompletionDate =?= undefined || CompletionDate == 0 || "
        f"(time() - CompletionDate) < {LIMIT})"
    ),
    # No parentheses round the alternatives: && binds tighter, so the age test stands on its own.
    "alternatives_unparenthesised": (
        "JobStatus == 4 && RETRIEVED =!= true && CompletionDate =?= undefined || CompletionDate == 0 || "
        f"(time() - CompletionDate) < {LIMIT}"
    ),
}


@cache
def _fixtures() -> dict[str, Any]:
    return json.loads(DATA.read_text(encoding="utf-8"))["ads"]  # type: ignore[no-any-return]


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__expr__"}:
            return classad2.ExprTree(value["__expr__"])
        if set(value) == {"__value__"}:
            assert value["__value__"] == "Undefined", value
            return classad2.Value.Undefined
        return classad2.ClassAd({k: _decode(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def job_ad(name: str, expression: str, *, now: float | None = None) -> classad2.ClassAd:
    """The fixture ad `name`, times moved to the present, `expression` as LeaveJobInQueue."""
    entry = _fixtures()[name]
    shift = int(now if now is not None else time.time()) - int(entry["captured_at"])
    ad = classad2.ClassAd()
    for key, value in entry["ad"].items():
        if (
            key in TIME_ATTRS
            and isinstance(value, int)
            and not isinstance(value, bool)
            and value > 0
        ):
            value += shift
        ad[key] = _decode(value)
    ad["LeaveJobInQueue"] = classad2.ExprTree(expression)
    return ad


def keeps(expression: str, name: str) -> Any:
    return job_ad(name, expression).eval("LeaveJobInQueue")


def test_every_fixture_ad_has_an_expectation() -> None:
    assert set(_fixtures()) == set(EXPECTED)


def test_fixture_ads_are_in_the_stage_they_are_named_for() -> None:
    statuses = {name: entry["ad"]["JobStatus"] for name, entry in _fixtures().items()}
    assert {n for n, s in statuses.items() if s == 4} == {
        n for n in EXPECTED if n.startswith("completed")
    }
    assert {n for n, s in statuses.items() if s == 5} == {
        n for n in EXPECTED if n.startswith("held")
    }
    assert {n for n, s in statuses.items() if s == 3} == {
        n for n in EXPECTED if n.startswith("removed")
    }
    assert statuses["idle_after_spool"] == 1
    assert statuses["running"] == 2


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rsub_expression_keeps_only_completed_unretrieved_young_jobs(name: str) -> None:
    # `is`: the schedd keeps a job only for a literal true; rsub's expression is never undefined.
    assert keeps(leave_in_queue(LIMIT), name) is EXPECTED[name]


def test_retrieved_flag_is_what_releases_a_completed_job() -> None:
    ad = job_ad("completed_not_retrieved", leave_in_queue(LIMIT))
    assert ad.eval("LeaveJobInQueue") is True
    ad["RETRIEVED"] = True
    assert ad.eval("LeaveJobInQueue") is False


def test_a_job_submitted_without_the_retrieved_flag_is_still_kept() -> None:
    ad = job_ad("completed_not_retrieved", leave_in_queue(LIMIT))
    del ad["RETRIEVED"]
    assert ad.eval("LeaveJobInQueue") is True


@pytest.mark.parametrize(
    ("age", "kept"),
    [(0, True), (60, True), (LIMIT - 60, True), (LIMIT + 60, False), (30 * 86400, False)],
)
def test_age_limit(age: int, kept: bool) -> None:
    ad = job_ad("completed_not_retrieved", leave_in_queue(LIMIT))
    ad["CompletionDate"] = int(time.time()) - age
    assert ad.eval("LeaveJobInQueue") is kept


def test_age_limit_is_the_argument() -> None:
    ad = job_ad("completed_not_retrieved", leave_in_queue(100))
    ad["CompletionDate"] = int(time.time()) - 200
    assert ad.eval("LeaveJobInQueue") is False
    ad["LeaveJobInQueue"] = classad2.ExprTree(leave_in_queue(1000))
    assert ad.eval("LeaveJobInQueue") is True


def test_expression_is_valid_submit_text() -> None:
    text = leave_in_queue(LIMIT)
    assert "\n" not in text
    assert str(LIMIT) in text
    classad2.ExprTree(text)  # raises if it does not parse


@pytest.mark.parametrize("variant", sorted(BROKEN))
def test_broken_variants_keep_a_retrieved_job(variant: str) -> None:
    """The suite tells a correct expression from the misparenthesised ones."""
    assert keeps(BROKEN[variant], "completed_retrieved") is True
    assert keeps(leave_in_queue(LIMIT), "completed_retrieved") is False
    wrong = sorted(name for name in EXPECTED if keeps(BROKEN[variant], name) is not EXPECTED[name])
    assert "completed_retrieved" in wrong
