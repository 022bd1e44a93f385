"""The htcondor worker's calls for rsub why: a job's ad with its expressions kept, and the pool's slot ads."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import classad2

from rsubd.backends.condor.worker import CondorSettings, _Worker


class FakeCollector:
    asked: ClassVar[list[tuple[Any, list[str]]]] = []

    def __init__(self, pool: str | None) -> None:
        self.pool = pool

    def query(self, ad_type: Any, projection: list[str]) -> list[classad2.ClassAd]:
        FakeCollector.asked.append((ad_type, projection))
        return [classad2.ClassAd('[Name = "slot1@h"; Memory = 2048; START = TARGET.RequestMemory < 4096]')]


def worker() -> _Worker:
    w = _Worker(CondorSettings(name="s", pool="cm.example.org"), {})
    w.h = SimpleNamespace(Collector=FakeCollector, AdType=SimpleNamespace(Startd="startd"))
    job = classad2.ClassAd('[ClusterId = 7; ProcId = 0; RequestMemory = 64;'
                           ' Requirements = TARGET.Memory >= RequestMemory && TARGET.HasQuantum]')
    w._schedd = SimpleNamespace(query=lambda constraint: [job] if constraint == "ClusterId == 7 && ProcId == 0" else [])
    return w


def test_the_job_ad_keeps_its_requirements_as_an_expression() -> None:
    ad = worker().op_match_ad(7, 0)
    assert ad is not None and ad["RequestMemory"] == 64 and ad["ClusterId"] == 7
    assert ad["Requirements"] == {"__expr__": "TARGET.Memory >= RequestMemory && TARGET.HasQuantum"}
    assert worker().op_match_ad(7, 1) is None


def test_slot_ads_are_one_projected_collector_query_with_start_kept() -> None:
    FakeCollector.asked.clear()
    slots = worker().op_slot_ads(("Name", "Memory", "START"))
    assert FakeCollector.asked == [("startd", ["Name", "Memory", "START"])]
    assert slots == [{"Name": "slot1@h", "Memory": 2048, "START": {"__expr__": "TARGET.RequestMemory < 4096"}}]


def test_slot_ads_are_cached_a_minute_per_projection(monkeypatch: Any) -> None:
    from rsubd.backends.condor import client

    calls: list[tuple[Any, ...]] = []
    schedd = client.CondorSchedd(CondorSettings(name="s"))
    monkeypatch.setattr(schedd, "_call", lambda op, *args: calls.append((op, *args)) or [{"Name": "slot1@h"}])
    clock = [1000.0]
    monkeypatch.setattr(client.time, "monotonic", lambda: clock[0])
    assert schedd.slot_ads(["Name", "Memory"]) == [{"Name": "slot1@h"}]
    schedd.slot_ads(["Memory", "Name"])  # the same projection in another order: cached
    clock[0] += 59
    schedd.slot_ads(["Name", "Memory"])
    assert calls == [("slot_ads", ("Memory", "Name"))]
    clock[0] += 2
    schedd.slot_ads(["Name", "Memory"])
    schedd.slot_ads(["Name"])
    assert len(calls) == 3
