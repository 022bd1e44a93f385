"""A submit past the schedd's submission limits is refused before anything is sent, naming the limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import Rsubd
from tests.support.jobs import write_job

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
