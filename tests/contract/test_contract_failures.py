"""The contract of issue 16 on every backend: usage attributes a poll records, measured from the job itself."""

from __future__ import annotations

from rsubd import submitdesc
from rsubd.backends.schedd import POLL_PROJECTION, Schedd, SlotSource, SubmitRequest
from rsubd.polling.observing import usage_of
from rsubd.services.rerun import rerun_description
from rsubd.services.submission import leave_in_queue
from rsubd.services.why import analyse_idle, slot_projection
from tests.support.deadlines import holds_for

from .contract_kit import MAX_AGE_SECONDS, Cluster, JobKit

COMPLETED, IDLE = 4, 1


def test_completed_ad_says_what_the_job_used(schedd: Schedd, kit: JobKit) -> None:
    """Names, types and units as a real HTCondor 25 schedd gives them (tests/data/usage_ads.json)."""
    job = kit.submit_job(
        """
        head -c 3145728 /dev/zero > scratch.bin
        python3 -c "import time
        block = bytearray(30 * 1024 * 1024)
        for i in range(0, len(block), 4096): block[i] = 1
        for i in range(5000000): pass
        time.sleep(2)"
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
    assert ad["RemoteUserCpu"] + ad["RemoteSysCpu"] >= 0.05  # a fixed count of loops: CPU time whatever the load
    assert ad["MemoryUsage"] == (ad["ResidentSetSize"] + 1023) // 1024  # MB from KiB
    assert ad["NumJobStarts"] == 1 and ad["RequestMemory"] == 256 and ad["RequestDisk"] == 10240
    if schedd.name == "contract-local":  # measured at the end (a real starter samples; its figure may lag)
        assert ad["ResidentSetSize"] >= 30 * 1024 and ad["DiskUsage"] >= 3 * 1024
    usage = usage_of(ad)
    assert usage["memory_mb"] == ad["MemoryUsage"] and usage["wall_time"] == ad["RemoteWallClockTime"]


def test_rerun_of_two_items_lands_beside_the_others(schedd: Schedd, kit: JobKit) -> None:
    """`rsub resubmit`'s description: items 1 and 3 of a `queue from` cluster again, as they ran."""
    commands = {"arguments": "$(item) $(Process)", "output": "out_$(item).txt", "error": "err_$(item).txt"}
    job = kit.submit_job('echo "item $1 proc $2 try $(cat try.txt 2>/dev/null || echo none)"', commands=commands,
                         inputs={"try.txt": "1"}, queue="queue item from (\nw\nx\ny\nz\n)")
    schedd.spool(job.result)
    kit.wait_status(job, COMPLETED)
    schedd.retrieve(job.constraint)
    assert job.read("out_x.txt") == "item x proc 1 try none\n"  # try.txt was not sent the first time
    original = kit.description(job.initialdir, job.initialdir / "job.sh", commands, "queue item from (\nw\nx\ny\nz\n)")
    text = rerun_description(original, str(kit.cwd), job.id, [1, 3], [("transfer_input_files", "try.txt")])
    # What rsub's prepare adds back: the instance tag (the kit's) and leave_in_queue.
    again = submitdesc.render(submitdesc.parse(text, cwd=str(kit.cwd)).with_commands(
        [("My.RETRIEVED", "false"), ("My.RsubInstance", f'"{kit.tag}"'),
         ("leave_in_queue", leave_in_queue(MAX_AGE_SECONDS))]))
    result = schedd.submit(SubmitRequest(text=again, cwd=str(kit.cwd)))
    rerun = Cluster(result=result, initialdir=job.initialdir, tag=kit.tag)
    assert result.num_procs == 2
    schedd.spool(result)
    kit.wait_status(rerun, COMPLETED)
    schedd.retrieve(rerun.constraint)
    assert job.read("out_x.txt") == "item x proc 1 try 1\n" and job.read("out_z.txt") == "item z proc 3 try 1\n"
    assert job.read("out_w.txt") == "item w proc 0 try none\n"  # the others' stay as they were
    assert schedd.edit(rerun.constraint, "RETRIEVED", "true") == 2


def test_match_analysis_names_the_clause_no_slot_satisfies(schedd: Schedd, kit: JobKit) -> None:
    """`rsub why`'s input from the backend: the job's ad with its Requirements, and the pool's slot ads."""
    assert isinstance(schedd, SlotSource)
    job = kit.submit_job("true", commands={"request_memory": "$(mem)", "requirements": "$(req)"},
                         queue="queue mem, req from (\n67108864, true\n64, TARGET.HasQuantum =?= true\n)")
    schedd.spool(job.result)
    ads = kit.wait_status(job, IDLE)
    holds_for(lambda: all(a["JobStatus"] == IDLE for a in kit.ads(job).values()), 2.0, "both stay idle")
    assert set(ads) == {0, 1}
    for proc, wanted in ((0, "RequestMemory"), (1, "HasQuantum")):
        ad = schedd.match_ad(job.id, proc)
        assert ad is not None and "Requirements" in ad
        slots = schedd.slot_ads(slot_projection(ad))
        assert slots, "the pool has slots"
        analysis = analyse_idle(ad, slots)
        failing = [c for c in analysis["clauses"] if c["slots"] == 0]
        assert any(wanted in c["clause"] for c in failing), analysis
        assert analysis["matching_slots"] == 0
    assert any("request_memory 64 TB: the largest slot has" in s
               for s in analyse_idle(schedd.match_ad(job.id, 0) or {}, slots)["says"])
