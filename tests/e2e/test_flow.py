"""The whole remote-submit flow through a real rsubd and real rsub command lines."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest

from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e

CLUSTER_SUB = """\
executable = job.sh
arguments = $(item)
transfer_input_files = input_$(item).txt
transfer_output_files = result_$(item).txt
output = out_$(item).txt
error = err_$(item).txt
queue item from items.txt
"""


def make_cluster(workdir: Path) -> Path:
    write_job(workdir, "job.sh", """\
        echo "stdout of $1"
        echo "stderr of $1" >&2
        { echo "result of $1"; cat "input_$1.txt"; } > "result_$1.txt"
    """)
    (workdir / "items.txt").write_text("a\nb\nc\n")
    for item in "abc":
        (workdir / f"input_{item}.txt").write_text(f"input {item}\n")
    sub = workdir / "cluster.sub"
    sub.write_text(CLUSTER_SUB)
    return sub


def local_queue(rsubd: Rsubd) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{rsubd.state_dir / 'local' / 'local' / 'queue.db'}?mode=ro", uri=True)


def test_submit_wait_retrieve_cluster(rsubd: Rsubd, workdir: Path) -> None:
    sub = make_cluster(workdir)
    submitted = rsubd.json("submit", str(sub), cwd=workdir)
    cluster = submitted["cluster"]
    assert submitted["jobs"] == [f"{cluster}.{p}@local" for p in range(3)]

    waited = rsubd.rsub("wait", "--timeout", "60", str(cluster))
    assert waited.returncode == 0, waited.stderr

    for item in "abc":
        assert (workdir / f"out_{item}.txt").read_text() == f"stdout of {item}\n"
        assert (workdir / f"err_{item}.txt").read_text() == f"stderr of {item}\n"
        assert (workdir / f"result_{item}.txt").read_text() == f"result of {item}\ninput {item}\n"

    jobs = rsubd.json("status", str(cluster))["jobs"]
    assert [j["state"] for j in jobs] == ["retrieved"] * 3
    for job in jobs:
        assert job["exit_code"] == 0
        assert job["iwd"] == str(workdir)
        assert job["retrieved_at"] is not None and job["completed_at"] is not None
        assert set(job) >= {"id", "cluster", "proc", "schedd", "state", "job_status", "exit_code",
                            "hold_reason", "iwd", "submitted_at", "completed_at", "retrieved_at"}

    # Marked RETRIEVED, the jobs leave the local scheduler's queue for its history.
    def gone_to_history() -> bool:
        with local_queue(rsubd) as db:
            queued = db.execute("SELECT count(*) FROM jobs WHERE cluster = ?", (cluster,)).fetchone()[0]
            ads = [json.loads(a) for (a,) in db.execute("SELECT ad FROM history WHERE cluster = ?", (cluster,))]
        return queued == 0 and len(ads) == 3 and all(a["RETRIEVED"] is True and a["JobStatus"] == 4 for a in ads)

    wait_until(gone_to_history, 20, "the retrieved jobs to move to history")
    assert rsubd.json("q")["jobs"] == []


def test_outputs_land_in_initialdir_not_cwd(rsubd: Rsubd, workdir: Path) -> None:
    out_dir = workdir / "results"
    out_dir.mkdir()
    write_job(workdir, "job.sh", "echo made > made.txt; echo hi\n")
    (workdir / "job.sub").write_text(textwrap.dedent(f"""\
        executable = job.sh
        initialdir = {out_dir}
        output = job.out
        queue
    """))
    cluster = rsubd.json("submit", "job.sub", cwd=workdir)["cluster"]
    assert rsubd.rsub("wait", "--timeout", "60", str(cluster)).returncode == 0
    assert (out_dir / "job.out").read_text() == "hi\n"
    assert (out_dir / "made.txt").read_text() == "made\n"
    assert not (workdir / "job.out").exists()


def test_hold_release_remove_running_job(rsubd: Rsubd, workdir: Path) -> None:
    write_job(workdir, "sleep.sh", "sleep 60\n")
    (workdir / "sleep.sub").write_text("executable = sleep.sh\nqueue 2\n")
    cluster = rsubd.json("submit", "sleep.sub", cwd=workdir)["cluster"]
    first = f"{cluster}.0"
    wait_until(lambda: rsubd.states(first) == {f"{first}@local": "running"}, 30, "the job to run")

    held = rsubd.rsub("hold", "--reason", "checking inputs", first)
    assert held.returncode == 0, held.stderr
    assert "1 success" in held.stdout
    wait_until(lambda: rsubd.states(first)[f"{first}@local"] == "held", 15, "the job to be held")
    job = rsubd.json("status", first)["jobs"][0]
    assert "checking inputs" in job["hold_reason"]
    assert job["hold_code"] == 1

    assert rsubd.rsub("release", first).returncode == 0
    wait_until(lambda: rsubd.states(first)[f"{first}@local"] in ("idle", "running"), 15, "the job to be released")

    removed = rsubd.rsub("rm", "--reason", "not needed", str(cluster))
    assert removed.returncode == 0, removed.stderr
    assert "2 success" in removed.stdout
    assert rsubd.rsub("wait", "--timeout", "30", str(cluster)).returncode == 12  # all final, some removed
    jobs = rsubd.json("status", str(cluster))["jobs"]
    assert [j["state"] for j in jobs] == ["removed", "removed"]
    assert all("not needed" in (j["remove_reason"] or "") for j in jobs)


def test_restart_while_job_runs(short_tmp: Path, workdir: Path) -> None:
    daemon = Rsubd(short_tmp)
    daemon.start()
    try:
        gate = workdir / "gate"
        write_job(workdir, "slow.sh", f"""\
            while [ ! -e {gate} ]; do sleep 0.1; done
            echo finished
        """)
        (workdir / "slow.sub").write_text("executable = slow.sh\noutput = slow.out\nqueue\n")
        cluster = daemon.json("submit", "slow.sub", cwd=workdir)["cluster"]
        job = f"{cluster}.0@local"
        wait_until(lambda: daemon.states(str(cluster)) == {job: "running"}, 30, "the job to run")

        daemon.kill()  # SIGKILL: no clean shutdown at all
        gate.touch()  # the job finishes while no rsubd is running
        daemon.start()

        # The ledger remembers the job (the new rsubd may already have polled and retrieved it).
        assert daemon.states(str(cluster))[job] in ("running", "completed", "retrieved")
        assert daemon.rsub("wait", "--timeout", "60", str(cluster)).returncode == 0
        assert daemon.states(str(cluster)) == {job: "retrieved"}
        assert (workdir / "slow.out").read_text() == "finished\n"
    finally:
        daemon.stop()


def test_exit_code_and_signal_are_reported(rsubd: Rsubd, workdir: Path) -> None:
    write_job(workdir, "exit3.sh", "exit 3\n")
    write_job(workdir, "killed.sh", "kill -9 $$\n")
    (workdir / "a.sub").write_text("executable = exit3.sh\nqueue\n")
    (workdir / "b.sub").write_text("executable = killed.sh\nqueue\n")
    a = rsubd.json("submit", "a.sub", cwd=workdir)["cluster"]
    b = rsubd.json("submit", "b.sub", cwd=workdir)["cluster"]
    assert rsubd.rsub("wait", "--timeout", "60", str(a), str(b)).returncode == 13  # exit 3 and a signal
    jobs = {j["cluster"]: j for j in rsubd.json("status", str(a), str(b))["jobs"]}
    assert jobs[a]["state"] == "retrieved" and jobs[a]["exit_code"] == 3
    assert jobs[b]["state"] == "retrieved" and jobs[b]["exit_code"] is None and jobs[b]["exit_signal"] == 9


def test_relative_executable_is_found_where_rsub_submit_runs_as_condor_submit_does(rsubd: Rsubd,
                                                                                  workdir: Path) -> None:
    """From /w, `condor_submit subs/job.sub` with `executable = run.sh` runs /w/run.sh (HTCondor 25.13)."""
    subdir = workdir / "subs"
    subdir.mkdir()
    write_job(workdir, "run.sh", "echo from the cwd\n")
    write_job(subdir, "run.sh", "echo from beside the submit file\n")
    (subdir / "job.sub").write_text("executable = run.sh\noutput = run.out\nqueue\n")
    cluster = rsubd.json("submit", "subs/job.sub", cwd=workdir)["cluster"]
    assert rsubd.rsub("wait", "--timeout", "60", str(cluster)).returncode == 0
    # initialdir defaults to where rsub submit ran, as with condor_submit.
    assert (workdir / "run.out").read_text() == "from the cwd\n"
    # Only beside the submit file: refused, naming the path it looked for.
    (workdir / "run.sh").unlink()
    refused = rsubd.rsub("submit", "subs/job.sub", cwd=workdir)
    assert refused.returncode == 5 and f"executable {workdir / 'run.sh'} does not exist" in refused.stderr
