"""Several schedds as HTCondor names them, the poll a change leads to, holds while spooling, cut-off submits
(issue 18, items 1, 4, 5 and 6)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import submit_shell

pytestmark = pytest.mark.e2e


@pytest.fixture
def two(tmp_path: Path) -> Iterator[Rsubd]:
    """Two embedded schedds: the host's default (`vm`) and a second one HTCondor names `schedd2@vm`, polled
    every 30 s so that only a poll a change asks for comes soon."""
    daemon = Rsubd(tmp_path, """
        [[schedd]]
        name = "vm"
        backend = "local"
        poll_interval = 30

        [[schedd]]
        name = "two"
        schedd_name = "schedd2@vm"
        backend = "local"
        poll_interval = 30
    """)
    daemon.start(extra_env={"RSUB_LOCAL_SPOOL_RELEASE": "3"})
    yield daemon
    daemon.stop()


def schedd_status(daemon: Rsubd, name: str) -> dict[str, Any]:
    status: dict[str, Any] = daemon.json("daemon", "status", "--json")["schedds"][name]
    return status


def test_a_schedd_named_with_an_at_is_tracked_under_rsubs_name(two: Rsubd, tmp_path: Path) -> None:
    cluster = submit_shell(two, tmp_path, "echo hi", "queue 2")
    assert two.json("status", f"{cluster}@vm")["jobs"][0]["id"] == f"{cluster}.0@vm"
    result = two.rsub("submit", "--json", "--schedd", "two", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    other = json.loads(result.stdout)
    assert other["schedd"] == "two" and other["jobs"] == [f"{other['cluster']}.0@two", f"{other['cluster']}.1@two"]
    waited = two.rsub("wait", "--timeout", "60", f"{other['cluster']}@two")  # its pokes poll between the 30 s
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert set(two.states(f"{other['cluster']}@two").values()) == {"retrieved"}
    assert schedd_status(two, "two")["schedd_name"] == "schedd2@vm"
    assert schedd_status(two, "vm")["schedd_name"] == "vm"
    text = two.rsub("daemon", "status").stdout
    assert "schedd two (local, schedd2@vm in the pool)" in text
    assert "schedd vm (local)" in text


def test_a_submit_and_a_release_each_lead_to_a_prompt_poll(two: Rsubd, tmp_path: Path) -> None:
    """With 30 s between regular polls, the jobs' news comes from the polls the changes asked for."""
    wait_until(lambda: schedd_status(two, "vm")["next_poll_in"] is not None, 10, "the first poll")
    before = schedd_status(two, "vm")
    cluster = submit_shell(two, tmp_path, "sleep 60", "queue")
    after = wait_until(lambda: (s := schedd_status(two, "vm"))["polls"] > before["polls"] and s, 10,
                       "the poll after the submit")
    assert after["early_polls"]["granted"] > before["early_polls"]["granted"]
    assert after["next_poll_in"] > 20  # the poll ran at once, and the next regular one is an interval away

    job = f"{cluster}.0@vm"
    time.sleep(3.5)  # the spool hold is over (a hold during it is the next test's)
    assert two.rsub("hold", job).returncode == 0
    wait_until(lambda: two.states(job)[job] == "held", 10, "the hold to be seen")
    polls = schedd_status(two, "vm")["polls"]
    assert two.rsub("release", job).returncode == 0
    wait_until(lambda: schedd_status(two, "vm")["polls"] > polls, 10, "the poll after the release")
    wait_until(lambda: two.states(job)[job] in ("idle", "running"), 10, "the release to be seen")
    assert two.rsub("rm", job).returncode == 0


def test_a_hold_while_the_input_spools_holds_the_job_once_spooled(two: Rsubd, tmp_path: Path) -> None:
    """The schedd releases a job once its input is in, hold or not (the contract suite checks that); rsubd keeps
    the user's hold and sends it when a poll sees the spool hold over."""
    cluster = submit_shell(two, tmp_path, "sleep 60", "queue 2")
    job = f"{cluster}.0@vm"
    held = two.rsub("hold", "--reason", "wrong input", job)  # the schedd releases it 3 s after the spool
    assert held.returncode == 0, held.stderr
    assert held.stdout.splitlines() == [
        "vm: hold: 1 job(s) matched; 1 already done",
        f"vm: {cluster}.0 is still held for spooling the input; rsubd holds them as soon as that ends "
        "(the schedd would release them)"]
    assert two.states(job)[job] == "spooling"  # as the last poll saw it
    wait_until(lambda: two.json("status", job)["jobs"][0]["hold_reason"] and two.states(job)[job] == "held", 20,
               "the hold to be sent once the spool hold ended")
    assert "wrong input" in two.json("status", job)["jobs"][0]["hold_reason"]
    other = f"{cluster}.1@vm"
    wait_until(lambda: two.states(other)[other] == "running", 20, "the other job to run")
    assert "hold.after_spool" in two.log_tail(100_000)
    assert two.rsub("rm", str(cluster), "--schedd", "vm").returncode == 0


def test_a_release_after_a_hold_while_spooling_cancels_the_kept_hold(two: Rsubd, tmp_path: Path) -> None:
    """Hold then release while the input spools: the user's last word is the release, so the hold rsubd kept is
    dropped and the job runs once spooled (it used to be held then, and stay held: the crash harness's hang)."""
    cluster = submit_shell(two, tmp_path, "sleep 60", "queue 2")
    job, other = f"{cluster}.0@vm", f"{cluster}.1@vm"
    assert two.rsub("hold", "--reason", "wrong input", job, other).returncode == 0
    released = two.rsub("release", job)
    assert released.returncode == 0, released.stderr
    assert released.stdout.splitlines() == [
        "vm: release: 1 job(s) matched; 1 bad status",
        f"vm: {cluster}.0: the hold rsubd was keeping for after spooling is dropped; it runs once spooled"]
    wait_until(lambda: two.states(other)[other] == "held", 20, "the other job's kept hold to be sent")
    wait_until(lambda: two.states(job)[job] == "running", 20, "the released job to run")
    time.sleep(1.5)  # a poll or two later it is still running: no hold came after the release
    assert two.states(job)[job] == "running"
    assert two.json("status", job)["jobs"][0]["hold_reason"] in (None, "")
    assert two.rsub("rm", str(cluster), "--schedd", "vm").returncode == 0


def test_a_cut_off_submit_shows_in_status_with_what_recovery_found(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"mode": "hang", "seconds": 1, "ops": ["submit"]}))
    daemon = Rsubd(tmp_path, f"""
        [[schedd]]
        name = "local"
        backend = "local"
        poll_interval = 1
        faults_file = "{faults}"
    """)
    daemon.start()
    try:
        (tmp_path / "job.sub").write_text("executable = /bin/true\ntransfer_executable = false\nqueue\n")
        cut = daemon.rsub("submit", "job.sub", cwd=tmp_path)
        assert cut.returncode != 0 and "did not answer the submit" in cut.stderr
        submits = wait_until(lambda: [s for s in daemon.json("status").get("submits", [])
                                      if s["state"] == "interrupted"], 15, "recovery to settle the submit")
        assert submits[0]["submit_file"] == str(tmp_path / "job.sub") and submits[0]["submit_dir"] == str(tmp_path)
        note = submits[0]["note"]
        assert note.startswith("the submit call to schedd local was cut off (")
        assert "nothing was submitted" in note and "stopped" not in note
        text = daemon.rsub("status").stdout
        assert "1 submit(s) with no jobs:" in text and f"{tmp_path}/job.sub, schedd local" in text
        assert daemon.json("history")["submits"][0]["request_id"] == submits[0]["request_id"]

        faults.write_text("{}")
        time.sleep(0.1)
        again = daemon.rsub("submit", "job.sub", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "submits" not in daemon.json("status")  # submitted since: settled
    finally:
        daemon.stop()
