"""Usage attributes: read from a real schedd's ads, produced alike by the embedded scheduler, summarised."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import classad2

from rsubd.backends.classads import plain_ad
from rsubd.backends.local.ads import to_classad
from rsubd.backends.local.runner import usage_attrs
from rsubd.backends.schedd import POLL_PROJECTION
from rsubd.polling.observing import USAGE, usage_of
from rsubd.services.usage import cluster_summary, wall_seconds, would_do

DATA = json.loads((Path(__file__).parent.parent / "data" / "usage_ads.json").read_text())


def evaluated(ad: dict[str, Any]) -> dict[str, Any]:
    """The ad as a projected query hands it over: expressions evaluated (the condor worker's plain_ad)."""
    text = "[ " + "; ".join(f"{k} = {v['__expr__'] if isinstance(v, dict) else json.dumps(v)}"
                            for k, v in ad.items()) + " ]"
    return plain_ad(classad2.ClassAd(text))


def test_usage_attributes_are_in_the_poll_projection() -> None:
    assert set(USAGE) <= set(POLL_PROJECTION)


def test_usage_of_a_real_completed_ad() -> None:
    ad = evaluated(DATA["completed_in_queue"])
    usage = usage_of(ad)
    assert usage["wall_time"] == 8.0 and usage["memory_mb"] == 2  # (1750 + 1023) / 1024, integer division
    assert usage["rss_kb"] == 1750 and usage["disk_kb"] == 17
    assert (usage["request_memory"], usage["request_disk"], usage["request_cpus"]) == (64, 10240, 1)
    assert usage["job_starts"] == 1 and usage["shadow_starts"] == 1 and usage["run_start"] == 1795289702.0


def test_embedded_scheduler_gives_the_real_names_and_types() -> None:
    report = {"usage": {"user_cpu": 0.25, "sys_cpu": 0.05, "max_rss_kib": 41000.0, "disk_kib": 2100}}
    attrs = usage_attrs({}, report)
    real = DATA["completed_in_queue"]
    for name in ("RemoteUserCpu", "RemoteSysCpu", "ResidentSetSize", "ResidentSetSize_RAW", "DiskUsage",
                 "DiskUsage_RAW", "CumulativeRemoteUserCpu", "CumulativeRemoteSysCpu"):
        assert type(attrs[name]) is type(real[name]), name
    # MemoryUsage is the real ad's expression evaluated: MB from the KiB of ResidentSetSize.
    local = evaluated({"ResidentSetSize": attrs["ResidentSetSize"],
                       "MemoryUsage": DATA["completed_in_queue"]["MemoryUsage"]})
    assert attrs["MemoryUsage"] == local["MemoryUsage"] == 41
    assert plain_ad(to_classad(attrs))["MemoryUsage"] == 41


def row(state: str, **usage: Any) -> dict[str, Any]:
    return {"state": state, "exit_code": usage.pop("exit_code", 0), "exit_signal": None, **usage}


def test_summary_figures_and_advice() -> None:
    rows = [row("retrieved", wall_time=10.0, memory_mb=800, request_memory=4096, user_cpu=9.0, sys_cpu=1.0),
            row("retrieved", wall_time=30.0, memory_mb=812, request_memory=4096, exit_code=2),
            row("running", wall_time=0.0, memory_mb=5000, request_memory=4096, exit_code=None)]
    s = cluster_summary(rows, {})
    assert s["states"] == {"retrieved": 2, "running": 1} and s["exit_codes"] == {"0": 1, "2": 1}
    assert s["wall_seconds"] == {"median": 20.0, "max": 30.0, "jobs": 2}
    assert s["memory_mb"]["max"] == 812  # a run not over yet is left out
    assert s["advice"] == ["request_memory 4096 MB, max used 812 MB: 1024 would do"]
    over = cluster_summary([row("retrieved", wall_time=1.0, memory_mb=900, request_memory=512)], {})
    assert over["advice"] == ["request_memory 512 MB, max used 900 MB: raise it to 2048"]
    assert would_do(812) == 1024 and would_do(1) == 2 and would_do(13, 128) == 128


def test_run_time_from_remote_wall_clock() -> None:
    assert wall_seconds({"state": "retrieved", "wall_time": 8.0}, now=0) == 8.0
    assert wall_seconds({"state": "running", "wall_time": 5.0, "run_start": 100.0}, now=130.0) == 35.0
    assert wall_seconds({"state": "idle", "wall_time": 0.0}, now=0) is None
    assert wall_seconds({"state": "running"}, now=0) is None
