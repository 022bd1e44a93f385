"""rsubd killed (SIGKILL) at each named crash point, then restarted: one cluster per submit, every
output home exactly once, and a repeated retrieve keeps the user's edits."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from rsubd.backends.local.runner import live_starters
from rsubd.platform.crash import ENV, POINTS
from tests.support.daemon import BIN, Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e

CONFIG = """
[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.3
early_poll_every = 0.2
"""
SUBMIT_POINTS = [p for p in POINTS if p.startswith("submit.")]
POLL_POINTS = [p for p in POINTS if p.split(".")[0] in ("poll", "retrieve", "mark")]


def start(root: Path, crash_at: str | None) -> Rsubd:
    daemon = Rsubd(root, CONFIG)
    daemon.env.pop(ENV, None)
    if crash_at:
        daemon.env[ENV] = crash_at
    daemon.start()
    return daemon


def local_queue_clusters(daemon: Rsubd) -> list[int]:
    """Every cluster the embedded schedd ever made (queue and history), from its own store."""
    import sqlite3

    db = sqlite3.connect(f"file:{daemon.state_dir / 'local' / 'local' / 'queue.db'}?mode=ro", uri=True)
    try:
        return sorted(c for (c,) in db.execute("SELECT cluster FROM clusters"))
    finally:
        db.close()


def prepare(work: Path) -> None:
    write_job(work, "job.sh", 'cat input.txt; echo "job $1"\n')
    (work / "input.txt").write_text("input\n")
    (work / "job.sub").write_text("executable = job.sh\narguments = $(Process)\ntransfer_input_files = input.txt\n"
                                  "output = out_$(Process).txt\nqueue 2\n")


@pytest.mark.parametrize("point", SUBMIT_POINTS)
def test_a_submit_cut_at_any_point_makes_exactly_one_cluster(short_tmp: Path, workdir: Path, point: str) -> None:
    prepare(workdir)
    daemon = start(short_tmp, point)
    # The client keeps the same request and waits for rsubd to come back; the test plays systemd.
    client = subprocess.Popen([str(BIN / "rsub"), "submit", "--json", "job.sub"], cwd=workdir, env=daemon.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert daemon.proc is not None
    daemon.proc.wait(timeout=30)  # killed itself at the point
    daemon2 = start(short_tmp, None)
    try:
        out, err = client.communicate(timeout=90)
        assert client.returncode == 0, err
        cluster = json.loads(out)["cluster"]
        assert daemon2.rsub("wait", "--timeout", "60", str(cluster)).returncode == 0
        for proc in range(2):
            assert (workdir / f"out_{proc}.txt").read_text() == f"input\njob {proc}\n"
        states = daemon2.json("status")["jobs"]
        # Exactly one cluster's jobs were retrieved; any other cluster the schedd saw was an unspooled
        # one that rsub removed (and says so).
        retrieved = {j["cluster"] for j in states if j["state"] == "retrieved"}
        assert retrieved == {cluster}
        others = [j for j in states if j["cluster"] != cluster]
        assert all(j["state"] == "removed" and "submitted again" in (j["remove_reason"] or "") for j in others)
        assert len({j["cluster"] for j in others}) <= 1  # submitted again at most once
        assert set(local_queue_clusters(daemon2)) <= {cluster}  # no removed or held cluster left in the queue
    finally:
        daemon2.stop()


@pytest.mark.parametrize("point", POLL_POINTS)
def test_a_poll_cut_at_any_point_retrieves_and_marks_once(short_tmp: Path, workdir: Path, point: str) -> None:
    prepare(workdir)
    daemon = start(short_tmp, point)
    result = daemon.rsub("submit", "--json", "job.sub", cwd=workdir)
    assert result.returncode == 0, result.stderr
    cluster = json.loads(result.stdout)["cluster"]
    assert daemon.proc is not None
    daemon.proc.wait(timeout=60)
    daemon2 = start(short_tmp, None)
    try:
        assert daemon2.rsub("wait", "--timeout", "60", str(cluster)).returncode == 0
        for proc in range(2):
            assert (workdir / f"out_{proc}.txt").read_text() == f"input\njob {proc}\n"
        # Marked on the schedd, so it may leave the queue.
        wait_until(lambda: all(j["state"] == "retrieved" for j in daemon2.json("status", str(cluster))["jobs"]),
                   30, "retrieved")
        assert not list(workdir.glob("*.rsub-*"))  # nothing set aside was left behind
    finally:
        daemon2.stop()


def test_output_home_before_a_crash_is_not_fetched_again_over_the_users_edit(short_tmp: Path, workdir: Path) -> None:
    prepare(workdir)
    daemon = start(short_tmp, "retrieve.after_schedd")
    result = daemon.rsub("submit", "--json", "job.sub", cwd=workdir)
    cluster = json.loads(result.stdout)["cluster"]
    assert daemon.proc is not None
    daemon.proc.wait(timeout=60)  # the output is home; the ledger does not know yet
    assert (workdir / "out_0.txt").read_text() == "input\njob 0\n"
    time.sleep(0.01)
    (workdir / "out_0.txt").write_text("my notes\n")  # the user edits it while rsubd is down
    os.utime(workdir / "out_0.txt")
    daemon2 = start(short_tmp, None)
    try:
        assert daemon2.rsub("wait", "--timeout", "60", str(cluster)).returncode == 0
        # The schedd says it sent the output (StageOutFinish after the retrieve began): recorded, not re-fetched.
        assert (workdir / "out_0.txt").read_text() == "my notes\n"
        assert (workdir / "out_1.txt").read_text() == "input\njob 1\n"
        assert not list(workdir.glob("*.rsub-*"))
    finally:
        daemon2.stop()


def test_a_starter_launched_just_before_a_crash_is_found_again_not_run_twice(short_tmp: Path, workdir: Path) -> None:
    """rsubd killed between starting a job's starter and writing its pid down, then killed again once the job ran
    anew: the restarted scheduler must find the first starter by its command line and run the job once. Before,
    the first starter looked vanished, the job ran again in a wiped sandbox, the first run's end was taken for
    the second's, and the output was missing: a hold, for good (what the kill harness met)."""
    write_job(workdir, "job.sh", 'sleep 4; cat input.txt > result.txt; echo "job $1"\n')
    (workdir / "input.txt").write_text("input\n")
    (workdir / "job.sub").write_text("executable = job.sh\narguments = $(Process)\ntransfer_input_files = input.txt\n"
                                     "transfer_output_files = result.txt\noutput = out_$(Process).txt\nqueue 1\n")
    daemon = Rsubd(short_tmp, CONFIG)
    daemon.env[ENV] = "local.after_launch"
    daemon.start()
    client = subprocess.Popen([str(BIN / "rsub"), "submit", "--json", "job.sub"], cwd=workdir, env=daemon.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert daemon.proc is not None
    daemon.proc.wait(timeout=30)  # killed itself with the starter just launched
    mine = str(daemon.state_dir / "local") + os.sep
    first = [pid for jobdir, pids in live_starters().items() if jobdir.startswith(mine) for pid in pids]
    assert len(first) == 1
    daemon2 = start(short_tmp, None)
    out, err = client.communicate(timeout=90)
    assert client.returncode == 0, err
    cluster = json.loads(out)["cluster"]
    wait_until(lambda: daemon2.states(str(cluster))[f"{cluster}.0@local"] == "running", 10, "the job to run")
    # The starter from before the crash runs the job, adopted: no second one beside it, none in its place.
    assert [pid for jobdir, pids in live_starters().items() if jobdir.startswith(mine) for pid in pids] == first
    daemon2.kill()  # the scheduler's own record of its starter goes with it
    daemon3 = start(short_tmp, None)
    try:
        waited = daemon3.rsub("wait", "--timeout", "60", str(cluster))
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert (workdir / "out_0.txt").read_text() == "job 0\n"
        assert (workdir / "result.txt").read_text() == "input\n"
        job = daemon3.json("status", f"{cluster}.0")["jobs"][0]
        assert job["state"] == "retrieved" and not job.get("hold_reason")
        assert "crash point local.after_launch" in daemon.log_tail(100_000)
    finally:
        daemon3.stop()
        daemon3.kill_leftover_jobs()
