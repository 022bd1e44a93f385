"""rsubd runs the notify command (no shell) when a job completes, is held, is retrieved or fails."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e

RECORDER = """\
import json, os, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"argv": sys.argv[2:], "env": {k: v for k, v in os.environ.items()
                                                       if k.startswith("RSUB_")}}) + "\\n")
"""


@pytest.fixture
def notified(short_tmp: Path) -> Any:
    recorder = short_tmp / "recorder.py"
    recorder.write_text(RECORDER)
    log = short_tmp / "notified.jsonl"
    daemon = Rsubd(short_tmp, f"""
[notify]
command = ["{sys.executable}", "{recorder}", "{log}"]
on = ["completed", "held", "retrieved"]

[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.3
""")
    daemon.start()

    def calls() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    yield daemon, calls
    daemon.stop()


def submit(daemon: Rsubd, work: Path, body: str) -> int:
    (work / "job.sub").write_text(body)
    result = daemon.rsub("submit", "--json", "job.sub", cwd=work)
    assert result.returncode == 0, result.stderr
    cluster: int = json.loads(result.stdout)["cluster"]
    return cluster


def test_completed_and_retrieved_are_told_with_id_state_and_exit_code(notified: Any, workdir: Path) -> None:
    daemon, calls = notified
    write_job(workdir, "job.sh", "echo out\nexit 3\n")
    cluster = submit(daemon, workdir, "executable = job.sh\noutput = out.txt\nqueue\n")
    wait_until(lambda: {c["argv"][1] for c in calls()} >= {"completed", "retrieved"}, 30, "two notifications")
    completed = next(c for c in calls() if c["argv"][1] == "completed")
    assert completed["argv"] == [f"{cluster}.0@local", "completed", "3"]
    assert completed["env"]["RSUB_JOB_ID"] == f"{cluster}.0@local"
    assert completed["env"]["RSUB_EXIT_CODE"] == "3" and completed["env"]["RSUB_COUNT"] == "1"


def test_a_held_job_is_told_with_its_reason(notified: Any, workdir: Path) -> None:
    daemon, calls = notified
    write_job(workdir, "job.sh", "true\n")
    cluster = submit(daemon, workdir, "executable = job.sh\ntransfer_output_files = never.txt\nqueue\n")
    held = wait_until(lambda: next((c for c in calls() if c["argv"][1] == "held"), None), 30, "a held notification")
    assert held["argv"][0] == f"{cluster}.0@local"
    assert "never.txt" in held["env"]["RSUB_HOLD_REASON"]


def test_every_job_is_told_and_none_means_quiet(notified: Any, workdir: Path) -> None:
    daemon, calls = notified
    write_job(workdir, "job.sh", "true\n")
    quiet = submit(daemon, workdir, 'executable = job.sh\nMy.RsubNotify = "none"\nqueue\n')
    many = submit(daemon, workdir, "executable = job.sh\nqueue 12\n")
    assert daemon.rsub("wait", "--timeout", "60", str(quiet), str(many)).returncode == 0

    def retrieved_told() -> int:  # the commands run on their own: their records may trail the wait
        return sum(int(c["env"]["RSUB_COUNT"]) for c in calls()
                   if c["argv"][1] == "retrieved" and c["env"]["RSUB_CLUSTER"] == str(many))

    wait_until(lambda: retrieved_told() >= 12, 15, "all twelve retrieved notifications")
    assert retrieved_told() == 12
    assert not [c for c in calls() if c["env"]["RSUB_CLUSTER"] == str(quiet)]
