"""The hold policy: which holds it releases, how often, with what backoff; never code 16, never a user's hold."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rsubd.backends.schedd import Action, ActResult
from rsubd.ledger.store import Ledger
from rsubd.services.automation import Automation
from rsubd.services.notify import Notifier, NotifyConfig
from rsubd.services.policyconfig import DEFAULT_RELEASE_CODES, PolicyConfig, parse_policy


@dataclass
class FakeSchedd:
    acts: list[tuple[Action, list[str], str | None]] = field(default_factory=list)

    def act(self, action: Action, jobs: list[str], reason: str | None = None) -> ActResult:
        self.acts.append((action, list(jobs), reason))
        return ActResult(success=len(jobs))


@dataclass
class Hooks:
    schedd: FakeSchedd

    def submitter(self, schedd: str, profile: str | None) -> FakeSchedd:
        return self.schedd

    def poke(self, name: str | None = None, *, force: bool = False) -> dict[str, Any]:
        return {}


@dataclass
class Subs:
    ledger: Ledger
    hooks: Hooks


def held_ledger(tmp_path: Path, codes: list[int]) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.db")
    row = ledger.add_submit_intent(request_id="r", schedd="local", tag="t", description="d",
                                   submitted_description="d", submit_dir="/", submit_file=None)
    ledger.record_submitted(row, 7, [(p, "/") for p in range(len(codes))])
    ledger.apply_changes("local", [(7, p, {"state": "held", "job_status": 5, "hold_code": c, "hold_reason": f"c{c}"})
                                   for p, c in enumerate(codes)])
    return ledger


def test_only_healing_codes_are_released_after_a_doubling_backoff(tmp_path: Path) -> None:
    ledger = held_ledger(tmp_path, [16, 1, 13, 26])
    schedd = FakeSchedd()
    told: list[Any] = []
    notifier = Notifier(NotifyConfig(command=("notify-me",)), spawn=lambda argv, env: told.append(argv))
    subs: Any = Subs(ledger, Hooks(schedd))  # what Automation uses of Submissions: its ledger and hooks
    auto = Automation(PolicyConfig(enabled=True, backoff=10, max_releases=2), subs, notifier)
    assert asyncio.run(auto.apply_policy("local", now=1000.0)) == 0  # first seen: the backoff starts
    assert asyncio.run(auto.apply_policy("local", now=1005.0)) == 0
    assert asyncio.run(auto.apply_policy("local", now=1010.0)) == 1
    assert schedd.acts == [(Action.RELEASE, ["7.2"], "rsub hold policy: released automatically, 1st time "
                            "(hold code 13, of at most 2)")]
    job = {r["proc"]: r for r in ledger.jobs()}
    assert job[2]["auto_releases"] == 1 and job[0]["auto_releases"] == 0 and job[1]["auto_releases"] == 0
    assert any(e["detail"].startswith("released automatically, 1st time") for e in ledger.events("local", 7, 2)
               if e["detail"])
    assert told and told[0][-2] == "released"
    # Held again: the second release waits twice as long; there is no third.
    asyncio.run(auto.apply_policy("local", now=2000.0))
    assert asyncio.run(auto.apply_policy("local", now=2019.0)) == 0
    assert asyncio.run(auto.apply_policy("local", now=2020.0)) == 1
    for later in (3000.0, 9000.0, 99000.0):
        assert asyncio.run(auto.apply_policy("local", now=later)) == 0
    assert [a[1] for a in schedd.acts] == [["7.2"], ["7.2"]]  # never 16 (spooling), 1 (the user's) or 26


def test_the_policy_is_off_by_default_and_refuses_codes_it_must_never_touch() -> None:
    assert PolicyConfig().enabled is False and parse_policy({}).release_codes == DEFAULT_RELEASE_CODES
    for code in (16, 1):
        with pytest.raises(ValueError, match=f"may not hold {code}"):
            parse_policy({"enabled": True, "release_codes": [13, code]})
    with pytest.raises(ValueError, match="unknown key"):
        parse_policy({"enable": True})
    with pytest.raises(ValueError, match="max_releases"):
        parse_policy({"max_releases": -1})


def test_the_config_takes_a_policy_table_and_refuses_a_bad_one() -> None:
    from rsubd.config import ConfigError, from_dict

    assert from_dict({"policy": {"enabled": True, "max_releases": 5}}).policy.max_releases == 5
    assert from_dict({}).policy.enabled is False
    with pytest.raises(ConfigError, match="may not hold 16"):
        from_dict({"policy": {"release_codes": [16]}})
