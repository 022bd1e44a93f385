"""The embedded scheduler releases a spooled job as a real schedd does: about a second after `spool()`."""

from __future__ import annotations

from pathlib import Path

from rsubd.backends.local.scheduler import SPOOL_RELEASE_SECONDS, LocalSchedd
from rsubd.backends.schedd import SubmitRequest

PROJECTION = ["ProcId", "JobStatus", "HoldReasonCode", "StageInStart", "StageInFinish", "LastHoldReasonCode",
              "ReleaseReason"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _submit(schedd: LocalSchedd, tmp_path: Path) -> int:
    text = f"executable = /bin/true\ninitialdir = {tmp_path}\ntransfer_executable = false\nqueue 2\n"
    result = schedd.submit(SubmitRequest(text=text, cwd=str(tmp_path)))
    schedd.spool(result)
    return result.cluster


def test_spooled_jobs_stay_held_with_code_16_until_the_release_delay(tmp_path: Path) -> None:
    clock = Clock()
    schedd = LocalSchedd("local", tmp_path / "q", execute="fake", release_delay=1.0, clock=clock, autostart=False)
    try:
        cluster = _submit(schedd, tmp_path)
        ads = schedd.query(f"ClusterId == {cluster}", PROJECTION)
        # What 03_after_spool recorded: still 5/16, StageInStart added, StageInFinish not yet.
        assert [(a["JobStatus"], a["HoldReasonCode"]) for a in ads] == [(5, 16), (5, 16)]
        assert all(isinstance(a["StageInStart"], int) and "StageInFinish" not in a for a in ads)
        clock.now += 0.9
        assert {a["JobStatus"] for a in schedd.query(f"ClusterId == {cluster}", PROJECTION)} == {5}
        clock.now += 0.2
        ads = schedd.query(f"ClusterId == {cluster}", PROJECTION)
        # ... and 03b_released_after_spool: idle, the spool hold now the last one.
        assert [(a["JobStatus"], a["HoldReasonCode"], a["LastHoldReasonCode"]) for a in ads] == [(1, None, 16)] * 2
        assert {a["ReleaseReason"] for a in ads} == {"Data files spooled"}
        assert all(isinstance(a["StageInFinish"], int) for a in ads)
    finally:
        schedd.close()


def test_a_restart_inside_the_delay_releases_at_the_first_tick(tmp_path: Path) -> None:
    clock = Clock()
    first = LocalSchedd("local", tmp_path / "q", execute="fake", release_delay=60.0, clock=clock, autostart=False)
    cluster = _submit(first, tmp_path)
    first.close()
    again = LocalSchedd("local", tmp_path / "q", execute="fake", release_delay=60.0, clock=clock, autostart=False)
    try:
        again.tick()
        assert {a["JobStatus"] for a in again.query(f"ClusterId == {cluster}", PROJECTION)} == {1}
    finally:
        again.close()


def test_the_default_delay_is_a_real_schedds_in_real_mode_and_none_in_fake_mode(tmp_path: Path) -> None:
    assert SPOOL_RELEASE_SECONDS == 1.0
    real = LocalSchedd("a", tmp_path / "a", execute="real", autostart=False)
    fake = LocalSchedd("b", tmp_path / "b", execute="fake", autostart=False)
    try:
        assert (real.release_delay, fake.release_delay) == (1.0, 0.0)
    finally:
        real.close()
        fake.close()
