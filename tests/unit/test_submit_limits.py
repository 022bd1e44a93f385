"""A schedd's submission limits: the embedded scheduler refuses as a schedd does, and rsub refuses first."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsub.wire.vocabulary import ErrorCode, RequestError
from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import ErrorKind, ScheddError, SubmitRequest
from rsubd.config import ConfigError, from_dict
from rsubd.services.limits import SubmitLimits, check


def _schedd(tmp_path: Path, **limits: int) -> LocalSchedd:
    return LocalSchedd("local", tmp_path / "q", execute="fake", autostart=False, **limits)


def _request(tmp_path: Path, procs: int) -> SubmitRequest:
    (tmp_path / "job.sh").write_text("#!/bin/sh\n")
    return SubmitRequest(text=f"executable = job.sh\nqueue {procs}\n", cwd=str(tmp_path))


def test_local_schedd_refuses_past_max_jobs_per_submission(tmp_path: Path) -> None:
    schedd = _schedd(tmp_path, max_jobs_per_submission=5)
    try:
        assert schedd.submit(_request(tmp_path, 5)).num_procs == 5  # the limit itself is allowed
        with pytest.raises(ScheddError) as e:
            schedd.submit(_request(tmp_path, 6))
        assert e.value.kind is ErrorKind.REJECTED
        assert "Number of submitted jobs would exceed MAX_JOBS_PER_SUBMISSION" in str(e.value)
        assert len(schedd.query("true", ["ClusterId"])) == 5  # nothing of the refused submit was made
    finally:
        schedd.close()


def test_local_schedd_refuses_past_max_jobs_per_owner(tmp_path: Path) -> None:
    schedd = _schedd(tmp_path, max_jobs_per_owner=8)
    try:
        schedd.submit(_request(tmp_path, 5))
        with pytest.raises(ScheddError, match="would exceed MAX_JOBS_PER_OWNER"):
            schedd.submit(_request(tmp_path, 4))
        assert schedd.submit(_request(tmp_path, 3)).num_procs == 3  # up to the limit
    finally:
        schedd.close()


def test_local_schedd_defaults_are_a_schedds(tmp_path: Path) -> None:
    schedd = _schedd(tmp_path)
    try:
        assert (schedd.max_jobs_per_submission, schedd.max_jobs_per_owner) == (20_000, 100_000)
    finally:
        schedd.close()


def test_check_names_the_limit_and_says_nothing_was_sent() -> None:
    check("s", SubmitLimits(10, 100), 10, 90)  # at both limits: allowed
    with pytest.raises(RequestError) as e:
        check("s", SubmitLimits(10, 100), 11, 0)
    assert e.value.code is ErrorCode.BAD_SUBMIT
    assert "MAX_JOBS_PER_SUBMISSION" in e.value.message and "11 jobs" in e.value.message
    assert "nothing was sent" in e.value.message and "max_jobs_per_submission" in e.value.message
    with pytest.raises(RequestError, match=r"MAX_JOBS_PER_OWNER.*has 95 there.*makes 6"):
        check("s", SubmitLimits(10, 100), 6, 95)


def test_config_takes_the_limits_per_schedd() -> None:
    a, b = from_dict({"schedd": [{"name": "a", "max_jobs_per_submission": 50, "max_jobs_per_owner": 70},
                                 {"name": "b"}]}).schedds
    assert a.submit_limits == (50, 70) and b.submit_limits == (20_000, 100_000)
    with pytest.raises(ConfigError, match="max_jobs_per_submission"):
        from_dict({"schedd": [{"name": "a", "max_jobs_per_submission": 0}]})
