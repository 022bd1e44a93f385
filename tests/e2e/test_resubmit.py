"""rsub resubmit: exactly the failed jobs again, with their own item rows; lineage; set-aside; crash-safe."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rsub.wire.protocol import Connection
from tests.support.daemon import BIN, Rsubd
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e

ITEMS = "abcdef"
CLUSTER_SUB = """\
executable = job.sh
arguments = $(item) $(Process)
transfer_input_files = input_$(item).txt
output = out_$(item).txt
error = err_$(item).txt
request_memory = 200
queue item from items.txt
"""
CONFIG = """
[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.3
early_poll_every = 0.2
"""


def make_cluster(workdir: Path, failing: str) -> Path:
    """Six items; those in `failing` exit 1 until their input says otherwise."""
    write_job(workdir, "job.sh", """\
        echo "item $1 proc $2: $(cat input_$1.txt)"
        grep -q fail "input_$1.txt" && exit 1
        exit 0
    """)
    (workdir / "items.txt").write_text("\n".join(ITEMS) + "\n")
    for item in ITEMS:
        (workdir / f"input_{item}.txt").write_text("fail\n" if item in failing else "ok\n")
    sub = workdir / "cluster.sub"
    sub.write_text(CLUSTER_SUB)
    return sub


def submitted(daemon: Rsubd, workdir: Path, failing: str) -> int:
    cluster: int = daemon.json("submit", str(make_cluster(workdir, failing)), cwd=workdir)["cluster"]
    assert daemon.rsub("wait", "--timeout", "60", str(cluster)).returncode == 13  # some exited non-zero
    return cluster


def resubmit_raw(daemon: Rsubd, request_id: str, **fields: object) -> dict[str, object]:
    """A resubmit request on the socket, with a request id of the test's choosing (as a retry sends it)."""
    socket = daemon.env["XDG_RUNTIME_DIR"] + "/rsub/rsubd.sock"
    with Connection(socket, timeout=60) as conn:
        reply = conn.call("resubmit", request_id=request_id, **fields)
    assert reply["ok"], reply
    result: dict[str, object] = reply["result"]
    return result


def test_resubmit_two_failed_items_of_a_queue_from_cluster(rsubd: Rsubd, workdir: Path) -> None:
    cluster = submitted(rsubd, workdir, failing="bce")
    # A retry of one request (the same request id) gets the same cluster, never a second one.
    first = resubmit_raw(rsubd, "retry-1", ids=[f"{cluster}.2"])
    assert resubmit_raw(rsubd, "retry-1", ids=[f"{cluster}.2"]) == first
    for item in "be":
        (workdir / f"input_{item}.txt").write_text("fixed\n")  # what the user mended before rerunning
    # --failed passes over 2, which is run again already.
    result = rsubd.json("resubmit", "--failed", "--cluster", str(cluster), "-a", "request_memory = 300")
    [new] = result["clusters"]
    assert [p["old"] for p in new["replaces"]] == [f"{cluster}.1", f"{cluster}.4"]
    assert [p["new"] for p in new["replaces"]] == [f"{new['cluster']}.0", f"{new['cluster']}.1"]
    assert rsubd.rsub("wait", "--timeout", "60", str(new["cluster"])).returncode == 0
    # Each new job ran with its own row and its old $(Process); its output landed beside the others'.
    assert (workdir / "out_b.txt").read_text() == "item b proc 1: fixed\n"
    assert (workdir / "out_e.txt").read_text() == "item e proc 4: fixed\n"
    assert (workdir / "out_a.txt").read_text() == "item a proc 0: ok\n"
    # The earlier outputs were set aside, not clobbered.
    assert (workdir / f"out_b.txt.rsub-replaced-{cluster}.1").read_text() == "item b proc 1: fail\n"
    assert (workdir / f"err_e.txt.rsub-replaced-{cluster}.4").exists()
    jobs = {j["id"]: j for j in rsubd.json("status", str(cluster), str(new["cluster"]))["jobs"]}
    assert jobs[f"{cluster}.1@local"]["replaced_by"] == f"{new['cluster']}.0"
    assert jobs[f"{new['cluster']}.1@local"]["replaces"] == f"{cluster}.4"
    assert jobs[f"{new['cluster']}.0@local"]["usage"]["request_memory_mb"] == 300  # the override
    assert jobs[f"{cluster}.0@local"]["replaced_by"] is None
    assert len({j["cluster"] for j in rsubd.json("status")["jobs"]}) == 3  # the first, retry-1's, this one
    text = rsubd.rsub("status", str(cluster)).stdout
    assert f"{cluster}.1 -> {new['cluster']}.0" in text
    # Run again already: a selector finds nothing more, and naming the job says where it went.
    assert rsubd.rsub("resubmit", "--exit-nonzero", "--cluster", str(cluster)).returncode == 4
    again = rsubd.rsub("resubmit", f"{cluster}.1")
    assert again.returncode == 2 and f"{cluster}.1 -> {new['cluster']}.0" in again.stderr
    # A job still running is the schedd's to run.
    (workdir / "sleep.sub").write_text("executable = /bin/sleep\narguments = 30\ntransfer_executable = false\n"
                                       "queue\n")
    sleeper = rsubd.json("submit", "sleep.sub", cwd=workdir)["cluster"]
    refused = rsubd.rsub("resubmit", f"{sleeper}.0")
    assert refused.returncode == 2 and "only a job that is held or done" in refused.stderr
    rsubd.rsub("rm", str(sleeper))


HELD_SUB = """\
executable = job.sh
transfer_output_files = result.txt
output = out.txt
queue
"""


def held_job(daemon: Rsubd, workdir: Path) -> int:
    """A job held with code 12: its transfer_output_files is never made (until its input says so)."""
    write_job(workdir, "job.sh", 'echo run; if [ -e make_result ]; then echo done > result.txt; fi\n')
    (workdir / "held.sub").write_text(HELD_SUB)
    cluster: int = daemon.json("submit", "held.sub", cwd=workdir)["cluster"]
    from tests.support.deadlines import wait_until

    wait_until(lambda: daemon.states(str(cluster)) == {f"{cluster}.0@local": "held"}, 60, "the job held")
    return cluster


def test_a_held_job_is_removed_before_it_is_run_again(rsubd: Rsubd, workdir: Path) -> None:
    cluster = held_job(rsubd, workdir)
    (workdir / "held.sub").write_text(HELD_SUB.replace("queue", "transfer_input_files = make_result\nqueue"))
    (workdir / "make_result").write_text("")
    result = rsubd.json("resubmit", "--held", "-a", "transfer_input_files = make_result")
    new = result["clusters"][0]["cluster"]
    old = rsubd.json("status", f"{cluster}.0")["jobs"][0]
    assert old["state"] == "removed" and "rsub resubmit" in old["remove_reason"]
    assert rsubd.rsub("wait", "--timeout", "60", str(new)).returncode == 0
    assert (workdir / "result.txt").read_text() == "done\n"


# A submit point's second passage: the first is the submit of the job that the resubmit replaces.
@pytest.mark.parametrize("point", ["resubmit.after_intent", "resubmit.after_remove", "submit.after_schedd:2"])
def test_a_resubmit_cut_at_any_point_loses_and_doubles_nothing(short_tmp: Path, workdir: Path, point: str) -> None:
    daemon = Rsubd(short_tmp, CONFIG)
    daemon.start(extra_env={"RSUBD_CRASH_AT": point}, note=f"crash at {point}")
    cluster = held_job(daemon, workdir)
    (workdir / "make_result").write_text("")
    # The client keeps its request id and waits for rsubd to come back; the test plays systemd.
    client = subprocess.Popen([str(BIN / "rsub"), "resubmit", "--json", f"{cluster}.0", "-a",
                               "transfer_input_files = make_result"], cwd=workdir, env=daemon.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert daemon.proc is not None
    daemon.proc.wait(timeout=30)  # killed itself at the point
    daemon.start(note="after the crash")
    try:
        out, err = client.communicate(timeout=90)
        assert client.returncode == 0, err + daemon.log_tail()
        [made] = json.loads(out)["clusters"]
        assert daemon.rsub("wait", "--timeout", "60", str(made["cluster"])).returncode == 0
        assert (workdir / "result.txt").read_text() == "done\n"
        jobs = daemon.json("status")["jobs"]
        old = next(j for j in jobs if j["cluster"] == cluster)
        assert old["state"] == "removed" and old["replaced_by"] == f"{made['cluster']}.0"
        # One job ran the work again: no other cluster's job finished, none is left held or queued.
        done = [j for j in jobs if j["state"] == "retrieved"]
        assert [j["id"] for j in done] == [f"{made['cluster']}.0@local"]
        assert all(j["state"] in ("retrieved", "removed") for j in jobs)
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()
