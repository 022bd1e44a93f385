"""rsub poke: an early poll when the budget allows, a clear 'not now' when it does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.daemon import Rsubd

pytestmark = pytest.mark.e2e


def test_poke_is_granted_then_rate_limited(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp, """
[[schedd]]
name = "local"
backend = "local"
poll_interval = 30
early_poll_every = 60
""")
    daemon.start()
    try:
        granted = [json.loads(daemon.rsub("poke", "--json").stdout)["schedds"]["local"]["poked"] for _ in range(4)]
        # One early poll per minute (burst 1): at most one of four pokes in a row makes rsubd query.
        assert granted.count(True) <= 1
        again = daemon.rsub("poke")
        assert again.returncode == 0 and "local: not now" in again.stdout
        info = json.loads(daemon.rsub("poke", "--json").stdout)["schedds"]["local"]
        refused = sum(n for k, n in info["early_polls"].items() if k != "granted")
        assert refused >= 4
        assert daemon.rsub("poke", "--schedd", "nope").returncode == 4
    finally:
        daemon.stop()
