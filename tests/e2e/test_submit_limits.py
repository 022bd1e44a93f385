"""A year's scale, end to end: a submit past the schedd's submission limits is refused before anything is sent,
naming the limit; old final jobs are compacted and history still finds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import submit_shell, write_job

pytestmark = pytest.mark.e2e


def test_submit_past_the_limits_is_refused_and_nothing_sent(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp, """\
        [[schedd]]
        name = "local"
        backend = "local"
        max_jobs_per_submission = 5
        max_jobs_per_owner = 8
        """)
    work = short_tmp / "work"
    work.mkdir()
    write_job(work, "job.sh", "true\n")
    daemon.start()
    try:
        (work / "six.sub").write_text("executable = job.sh\nhold = true\nqueue 6\n")
        for argv in (("submit", "six.sub"), ("submit", "--dry-run", "six.sub")):
            refused = daemon.rsub(*argv, cwd=work)
            assert refused.returncode == 5, refused.stderr
            assert "MAX_JOBS_PER_SUBMISSION" in refused.stderr and "nothing was sent" in refused.stderr
        assert daemon.json("status")["jobs"] == []  # no intent, no cluster
        (work / "five.sub").write_text("executable = job.sh\nhold = true\nqueue 5\n")
        assert daemon.rsub("submit", "five.sub", cwd=work).returncode == 0
        again = daemon.rsub("submit", "five.sub", cwd=work)  # 5 + 5 > 8
        assert again.returncode == 5, again.stderr
        assert "MAX_JOBS_PER_OWNER" in again.stderr and "rsub has 5 there" in again.stderr
        assert len(daemon.json("status")["jobs"]) == 5
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()


def test_compacted_jobs_stay_in_history(short_tmp: Path) -> None:
    """With compact_after_days tiny, a job's events go once it is retrieved and marked; history still shows it."""
    daemon = Rsubd(short_tmp, """\
        compact_after_days = 0.00001

        [[schedd]]
        name = "local"
        backend = "local"
        poll_interval = 0.3
        """)
    work = short_tmp / "work"
    work.mkdir()
    daemon.start()
    try:
        cluster = submit_shell(daemon, work, "sleep 0.3; exit 3", "queue 2")
        assert daemon.rsub("wait", "--timeout", "60s", str(cluster)).returncode == 13  # exit != 0
        before = {j["id"]: j for j in daemon.json("history")["jobs"]}
        assert len(before) == 2 and all(j["jobsub"]["run_time"] is not None for j in before.values())
        wait_until(lambda: daemon.log.read_text().count('"compacted"') + daemon.log.read_text().count(
            "compacted ") >= 1, 30, "a compaction")
        after = {j["id"]: j for j in daemon.json("history")["jobs"]}
        assert after.keys() == before.keys()
        for job_id, job in after.items():
            assert job["state"] == "retrieved" and job["exit_code"] == 3
            assert job["jobsub"]["run_time"] == before[job_id]["jobsub"]["run_time"]
        assert (work / "out.0").exists()
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()


def test_q_asks_for_brief_rows_and_shows_the_same(rsubd: Rsubd, workdir: Path) -> None:
    """rsub q's table reads brief rows (protocol.BRIEF_FIELDS): a third of the bytes, the same table."""
    from rsub.wire.protocol import BRIEF_FIELDS, Connection

    write_job(workdir, "job.sh", "true\n")
    (workdir / "j.sub").write_text("executable = job.sh\nhold = true\nqueue 3\n")
    assert rsubd.rsub("submit", "j.sub", cwd=workdir).returncode == 0
    with Connection(str(Path(rsubd.env["XDG_RUNTIME_DIR"]) / "rsub" / "rsubd.sock")) as conn:
        brief = conn.call("status", active=True, brief=True)["result"]["jobs"]
        full = conn.call("status", active=True)["result"]["jobs"]
    assert len(brief) == 3 and all(set(j) == set(BRIEF_FIELDS) for j in brief)
    assert [{k: j[k] for k in BRIEF_FIELDS} for j in full] == brief
    table = rsubd.rsub("q").stdout.splitlines()
    assert len(table) == 4 and all(line.split("\t")[0].endswith("@local") for line in table[1:])
