"""The contract of issue 16 on every backend: usage attributes a poll records, measured from the job itself."""

from __future__ import annotations

from rsubd.backends.schedd import POLL_PROJECTION, Schedd
from rsubd.polling.observing import usage_of

from .contract_kit import JobKit

COMPLETED = 4


def test_completed_ad_says_what_the_job_used(schedd: Schedd, kit: JobKit) -> None:
    """Names, types and units as a real HTCondor 25 schedd gives them (tests/data/usage_ads.json)."""
    job = kit.submit_job(
        """
        head -c 3145728 /dev/zero > scratch.bin
        python3 -c "import time
        block = bytearray(30 * 1024 * 1024)
        for i in range(0, len(block), 4096): block[i] = 1
        t = time.time()
        while time.time() - t < 2: pass"
        """,
        commands={"request_memory": "256"},
    )
    schedd.spool(job.result)
    kit.wait_status(job, COMPLETED)
    ad = schedd.query(job.constraint, list(POLL_PROJECTION))[0]
    for name in ("RemoteWallClockTime", "RemoteUserCpu", "RemoteSysCpu"):
        assert type(ad[name]) is float, (name, ad[name])
    for name in ("MemoryUsage", "ResidentSetSize", "DiskUsage", "NumJobStarts", "NumShadowStarts", "RequestMemory",
                 "RequestDisk", "RequestCpus", "JobCurrentStartDate"):
        assert type(ad[name]) is int, (name, ad[name])
    assert ad["RemoteWallClockTime"] >= 2  # seconds
    assert ad["RemoteUserCpu"] + ad["RemoteSysCpu"] >= 1  # it spun for two
    assert ad["MemoryUsage"] == (ad["ResidentSetSize"] + 1023) // 1024  # MB from KiB
    assert ad["NumJobStarts"] == 1 and ad["RequestMemory"] == 256 and ad["RequestDisk"] == 10240
    if schedd.name == "contract-local":  # measured at the end (a real starter samples; its figure may lag)
        assert ad["ResidentSetSize"] >= 30 * 1024 and ad["DiskUsage"] >= 3 * 1024
    usage = usage_of(ad)
    assert usage["memory_mb"] == ad["MemoryUsage"] and usage["wall_time"] == ad["RemoteWallClockTime"]
