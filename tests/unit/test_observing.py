"""What a poll reads from an ad: an exit code or signal only from a completed job's ad."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsubd.ledger.schema import TrackedJob
from rsubd.polling.observing import OBSERVED, fields_from_ad, observe

ADS = json.loads((Path(__file__).parents[1] / "data" / "evicted_ads.json").read_text())
ROW = TrackedJob(186, 0, "running", 2, None, None, None, None, None, None, None, None, None)


@pytest.mark.parametrize(("name", "state", "exit_code", "exit_signal"), [
    ("running_again", "running", None, None),  # the eviction's SIGTERM is not the job's exit
    ("removed", "removed", None, None),
    ("completed_by_signal", "completed", None, 9),
    ("completed_exit_3", "completed", 3, None),
])
def test_exit_code_and_signal_come_only_from_a_completed_ad(name: str, state: str, exit_code: int | None,
                                                           exit_signal: int | None) -> None:
    ad = ADS[name]
    fields = fields_from_ad(ad)
    assert (fields["state"], fields["exit_code"], fields["exit_signal"]) == (state, exit_code, exit_signal)
    seen = dict(zip(OBSERVED, observe(ad, ROW), strict=True))
    assert (seen["state"], seen["exit_code"], seen["exit_signal"]) == (state, exit_code, exit_signal)
