"""A schedd that refuses, hangs, fails an operation or fails at random: rsubd backs off, stays
responsive, and finishes the work once the schedd is back."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e


def faulty_rsubd(root: Path, extra: str = "") -> Rsubd:
    daemon = Rsubd(root, f"""
[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.5
poll_jitter = 0
poll_backoff_max = 4
early_poll_every = 0.5
faults_file = "{root}/faults.json"
{extra}
""")
    daemon.start()
    return daemon


def set_faults(daemon: Rsubd, plan: dict[str, Any] | None) -> None:
    path = daemon.root / "faults.json"
    if plan is None:
        path.unlink(missing_ok=True)
    else:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(plan))
        tmp.replace(path)


def local_status(daemon: Rsubd) -> dict[str, Any]:
    status: dict[str, Any] = daemon.json("daemon", "status")["schedds"]["local"]
    return status


def submit(daemon: Rsubd, work: Path, script: str = 'echo "hello $1"\n', count: int = 1) -> int:
    write_job(work, "job.sh", script)
    (work / "job.sub").write_text("executable = job.sh\narguments = $(Cluster).$(Process)\n"
                                  "output = out_$(Cluster).$(Process).txt\n" f"queue {count}\n")
    result = daemon.rsub("submit", "--json", "job.sub", cwd=work)
    assert result.returncode == 0, result.stderr
    cluster: int = json.loads(result.stdout)["cluster"]
    return cluster


@pytest.fixture
def daemon(short_tmp: Path) -> Any:
    d = faulty_rsubd(short_tmp)
    yield d
    d.stop()


def test_a_refusing_schedd_is_backed_off_then_polled_normally_again(daemon: Rsubd, workdir: Path) -> None:
    cluster = submit(daemon, workdir, "sleep 1\necho done\n")
    set_faults(daemon, {"mode": "refuse", "ops": ["query"]})
    status = wait_until(lambda: (s := local_status(daemon))["consecutive_errors"] >= 3 and s, 20, "three errors")
    assert status["backing_off"] is True
    assert status["interval_in_force"] == 4  # 0.5 doubled three times, capped at 4
    assert "schedd_unreachable" in status["last_error"]
    # Clients asking for early polls do not make rsubd hammer a schedd that is down.
    started = time.monotonic()
    waited = daemon.rsub("wait", "--timeout", "1", str(cluster))
    assert waited.returncode == 6
    assert time.monotonic() - started < 5
    assert local_status(daemon)["early_polls"]["backoff"] >= 1
    # rsub status answers from the ledger and says how stale the view is.
    shown = daemon.rsub("status", str(cluster))
    assert shown.returncode == 0 and "is not answering" in shown.stderr

    set_faults(daemon, None)
    assert daemon.rsub("wait", "--timeout", "30", str(cluster)).returncode == 0
    status = local_status(daemon)
    assert status["backing_off"] is False and status["interval_in_force"] == 0.5
    assert (workdir / f"out_{cluster}.0.txt").read_text() == "done\n"


def test_a_hanging_schedd_never_freezes_the_daemon(daemon: Rsubd, workdir: Path) -> None:
    cluster = submit(daemon, workdir)
    set_faults(daemon, {"mode": "hang", "seconds": 3, "ops": ["query"]})
    wait_until(lambda: local_status(daemon)["errors"] >= 1, 20, "a hung poll to time out")
    for _ in range(5):
        started = time.monotonic()
        assert daemon.rsub("status", str(cluster)).returncode == 0
        assert time.monotonic() - started < 2
    assert "injected hang" in local_status(daemon)["last_error"]
    set_faults(daemon, None)
    assert daemon.rsub("wait", "--timeout", "30", str(cluster)).returncode == 0


def test_a_failing_retrieve_leaves_the_job_unretrieved_until_it_works(daemon: Rsubd, workdir: Path) -> None:
    set_faults(daemon, {"mode": "fail", "ops": ["retrieve"], "kind": "transfer_failed"})
    cluster = submit(daemon, workdir)
    wait_until(lambda: daemon.states(str(cluster)) == {f"{cluster}.0@local": "completed"}, 30, "completion")
    wait_until(lambda: local_status(daemon)["errors"] >= 2, 20, "retrieve to fail twice")
    assert daemon.states(str(cluster)) == {f"{cluster}.0@local": "completed"}
    assert not (workdir / f"out_{cluster}.0.txt").exists()
    job = daemon.json("status", str(cluster))["jobs"][0]
    assert "retrieve failed" in job["error"] and "injected failure of retrieve" in job["error"]
    set_faults(daemon, None)
    assert daemon.rsub("wait", "--timeout", "30", str(cluster)).returncode == 0
    assert (workdir / f"out_{cluster}.0.txt").read_text() == f"hello {cluster}.0\n"


def test_a_submit_to_a_refusing_schedd_fails_cleanly(daemon: Rsubd, workdir: Path) -> None:
    set_faults(daemon, {"mode": "refuse", "ops": ["submit"]})
    write_job(workdir, "job.sh", "true\n")
    (workdir / "job.sub").write_text("executable = job.sh\nqueue\n")
    refused = daemon.rsub("submit", "job.sub", cwd=workdir)
    assert refused.returncode == 7
    assert "connection refused" in refused.stderr
    assert daemon.json("q")["jobs"] == []


def test_random_failures_delay_but_do_not_lose_work(daemon: Rsubd, workdir: Path) -> None:
    cluster = submit(daemon, workdir, count=5)
    set_faults(daemon, {"mode": "random", "probability": 0.4, "ops": ["query", "retrieve", "edit", "history"]})
    time.sleep(3)
    set_faults(daemon, None)
    assert daemon.rsub("wait", "--timeout", "60", str(cluster)).returncode == 0
    for proc in range(5):
        assert (workdir / f"out_{cluster}.{proc}.txt").read_text() == f"hello {cluster}.{proc}\n"
    assert set(daemon.states(str(cluster)).values()) == {"retrieved"}


def test_one_unwritable_output_does_not_hold_back_the_others(daemon: Rsubd, workdir: Path) -> None:
    # Both jobs complete while retrieve is failing, so that one batched retrieve carries both.
    set_faults(daemon, {"mode": "fail", "ops": ["retrieve"], "kind": "transfer_failed"})
    for name in ("good", "bad"):
        (workdir / name).mkdir()
    write_job(workdir, "job.sh", 'echo "hello $1"\n')
    (workdir / "job.sub").write_text(f"executable = {workdir}/job.sh\narguments = $(dir)\ninitialdir = {workdir}/$(dir)\n"
                                     "output = out.txt\nqueue dir in (good, bad)\n")
    result = daemon.rsub("submit", "--json", "job.sub", cwd=workdir)
    assert result.returncode == 0, result.stderr
    cluster = json.loads(result.stdout)["cluster"]
    wait_until(lambda: set(daemon.states(str(cluster)).values()) == {"completed"}, 30, "both completed")
    (workdir / "bad").rmdir()
    (workdir / "bad").write_text("a file where the output directory was\n")  # stops root too
    set_faults(daemon, None)
    wait_until(lambda: daemon.states(str(cluster)).get(f"{cluster}.0@local") == "retrieved", 30,
               "the good job retrieved although the batch failed")
    assert (workdir / "good" / "out.txt").read_text() == "hello good\n"
    jobs = {j["id"]: j for j in daemon.json("status", str(cluster))["jobs"]}
    bad = jobs[f"{cluster}.1@local"]
    assert bad["state"] == "completed" and "retrieve failed" in bad["error"]
