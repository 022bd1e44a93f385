"""The DAG contract: what a schedd does with a spooled DAGMan job, as a real HTCondor 25.13 schedd did.

The same tests run on the embedded scheduler (its own DAGMan) and, when RSUB_TEST_CONDOR_CONFIG
names a pool, on a real schedd (RSUB_TEST_DAGMAN: condor_dagman's path there). The DAG is the
reference diamond A -> (B, C) -> D with C failing its first attempt (RETRY C 2); the expected ads
are the reference's own (tests/data/dag/reference_ads.json), on every attribute rsub reads.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from rsubd.backends.schedd import Action, JobAd
from tests.support.deadlines import wait_until

from .contract_kit import JobKit, as_int
from .dag_kit import DAG_FILES, DATA, DagKit, attempts

RUNNING, IDLE, HELD, COMPLETED, REMOVED = 2, 1, 5, 4, 3
REFERENCE = json.loads((DATA / "reference_ads.json").read_text(encoding="utf-8"))
TIMES = {"CompletionDate", "QDate", "DAG_AdUpdateTime", "JobStartDate"}
# What one retrieve of the finished diamond brings (reference run 2, 03): every node output and
# attempt, and DAGMan's files; lib.err may be empty on a real pool (no wrapper) and is not required.
DIAMOND_OUTPUTS = {
    "out_A.txt", "out_A.stdout", "out_A.stderr", "out_B.txt", "out_B.stdout", "out_B.stderr",
    "out_C.try0.stdout", "out_C.try0.stderr", "out_C.try1.stdout", "out_C.try1.stderr", "out_C.txt",
    "out_D.txt", "out_D.stdout", "out_D.stderr", "probe.dag.dagman.out", "probe.dag.nodes.log",
    "probe.dag.metrics", "probe.dag.lib.out", "probe.dag.dagman.log",
}


def mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir() if p.is_file()}


def written(before: dict[str, int], directory: Path) -> set[str]:
    """The files a retrieve wrote: new ones, or ones whose mtime changed."""
    return {name for name, mtime in mtimes(directory).items() if before.get(name) != mtime}


def normal(name: str, value: Any, cluster: int, iwd: str) -> Any:
    """A value with its DAG's cluster id and spool directory made generic, to compare two runs."""
    if isinstance(value, str):
        return re.sub(rf"(?<![\w.]){cluster}(?!\w)", "<C>", value.replace(iwd, "<IWD>"))
    if name == "DAGManJobId" and value == cluster:
        return "<C>"
    return value


def assert_like(reference: dict[str, Any], ref_cluster: int, ref_iwd: str, live: JobAd, cluster: int,
                iwd: str, skip: tuple[str, ...] = ()) -> None:
    """`live` has every attribute of `reference` (but `skip`), equal once cluster and spool are generic."""
    for name, want in reference.items():
        if name in skip or name in ("ClusterId", "SUBMIT_Iwd", "Owner"):  # the client's directory, its user
            continue
        got = live.get(name)
        if name in TIMES:
            assert isinstance(got, int), (name, got)
            continue
        assert normal(name, got, cluster, iwd) == normal(name, want, ref_cluster, ref_iwd), (name, got, want)


def test_diamond_with_a_flaky_node(kit: JobKit) -> None:
    """The diamond runs in order, C's retry runs, and one retrieve brings every output home."""
    dags = DagKit(kit)
    where = dags.directory()
    before = mtimes(where)
    dag = dags.submit(where)
    first = dags.wait_nodes(dag, "node A in the queue", lambda n: "A" in n)["A"]
    final = dags.wait_status(dag, COMPLETED)
    iwd = str(final["Iwd"])
    ref = REFERENCE["diamond"]
    ref_iwd = ref["dagman_final"]["Iwd"]
    assert_like(ref["dagman_final"], ref["cluster"], ref_iwd, final, dag.id, iwd, skip=("Cmd",))
    assert_like(ref["node_running"], ref["cluster"], ref_iwd, first, dag.id, iwd, skip=("JobStatus",))
    assert final["ExitCode"] == 0 and final["DAG_Status"] == 0
    assert iwd.endswith(f"/cluster{dag.id}.proc0.subproc0") and final["SUBMIT_Iwd"] == str(where)

    history = dags.node_history(dag, 5)
    assert attempts(history) == [("A", 0), ("B", 0), ("C", 7), ("C", 0), ("D", 0)] or \
        attempts(history) == [("A", 0), ("C", 7), ("B", 0), ("C", 0), ("D", 0)]
    by_try = {(str(ad["DAGNodeName"]), str(ad["Out"])): ad for ad in history}
    assert {ad["Owner"] for ad in history} == {first["Owner"]} and all(ad["ExitBySignal"] is False for ad in history)
    for want in ref["node_history"]:
        got = by_try[(want["DAGNodeName"], want["Out"])]
        assert_like(want, ref["cluster"], ref_iwd, got, dag.id, iwd)
    assert dags.live_nodes(dag) == {}  # node jobs leave the queue as they end

    dags.schedd.retrieve(f"ClusterId == {dag.id}")
    assert written(before, where) - {"probe.dag.lib.err"} == DIAMOND_OUTPUTS
    assert "upstream out_C.txt: node C says hello-from-C (retry=1)" in dag.read("out_D.txt")
    assert "EXITING WITH STATUS 0" in dag.read("probe.dag.dagman.out")
    assert json.loads(dag.read("probe.dag.metrics"))["jobs_submitted"] == 5
    assert 'DAGNodeName = "A"' in dag.read("probe.dag.nodes.log")
    assert not (where / "probe.dag.lock").exists()

    dags.schedd.edit(f"ClusterId == {dag.id}", "RETRIEVED", "true")
    dags.gone(dag)


def test_failed_dag_rescue_and_rescue_run(kit: JobKit) -> None:
    """C always fails: DAGMan exits 1 with a rescue DAG; the rescue run reruns only C and D."""
    dags = DagKit(kit)
    where = dags.directory(always_fail=True)
    dag = dags.submit(where)
    final = dags.wait_status(dag, COMPLETED)
    ref = REFERENCE["fail"]
    assert_like(ref["dagman_final"], ref["cluster"], ref["dagman_final"]["Iwd"], final, dag.id,
                str(final["Iwd"]), skip=("Cmd", "JobCoolDownExpiration"))  # the reference had no DisableCoolDown
    assert (final["ExitCode"], final["DAG_Status"], final["DAG_NodesDone"], final["DAG_NodesFailed"],
            final["DAG_NodesFutile"]) == (1, 2, 2, 1, 1)
    dags.schedd.retrieve(f"ClusterId == {dag.id}")
    rescue = dag.read("probe.dag.rescue001")
    assert re.findall(r"^DONE (\S+)$", rescue, re.M) == ["A", "B"]
    assert "# Nodes that failed: 1\n#   C,<ENDLIST>" in rescue
    assert {f"out_C.try{n}.stdout" for n in range(3)} <= set(os.listdir(where))
    assert not (where / "out_D.txt").exists()
    dags.schedd.edit(f"ClusterId == {dag.id}", "RETRIEVED", "true")

    # The rescue run: C fixed, the rescue DAG and the outputs D reads from DONE nodes spooled again.
    (where / "flaky.sub").write_text((DATA / "flaky.sub").read_text(encoding="utf-8"), encoding="utf-8")
    before = mtimes(where)
    again = dags.submit(where, (*DAG_FILES, "probe.dag.rescue001", "out_A.txt", "out_B.txt"))
    done = dags.wait_status(again, COMPLETED)
    assert (done["ExitCode"], done["DAG_Status"], done["DAG_NodesDone"], done["DAG_JobsSubmitted"]) == (0, 0, 4, 3)
    assert attempts(dags.node_history(again, 3)) == [("C", 7), ("C", 0), ("D", 0)]
    dags.schedd.retrieve(f"ClusterId == {again.id}")
    back = written(before, where)
    assert {"out_C.try1.stdout", "out_D.txt", "probe.dag.dagman.out"} <= back
    assert not back & {"out_A.txt", "out_B.txt", "probe.dag.rescue001", "probe.dag"}
    assert "USING RESCUE DAG probe.dag.rescue001" in again.read("probe.dag.dagman.out")
    assert "upstream out_B.txt: node B says hello-from-B" in again.read("out_D.txt")


def slow_dag(where: Path, *, middle: str, sleep: int) -> None:
    """A -> (B, C) -> D with B and C in slow.sub, sleeping `sleep` seconds."""
    (where / "probe.dag").write_text(
        "JOB A node.sub\nJOB B slow.sub\nJOB C slow.sub\nJOB D node.sub\n"
        + "".join(f'VARS {n} node="{n}" greeting="hi-{n}" extra_inputs="" sleep="{sleep if n in middle else 0}"\n'
                  for n in "ABCD")
        + "PARENT A CHILD B C\nPARENT B C CHILD D\n", encoding="utf-8")


def test_remove_running_dag(kit: JobKit) -> None:
    """Removing DAGMan removes its nodes; its spool, with the rescue DAG, stays until retrieved."""
    dags = DagKit(kit)
    where = dags.directory()
    slow_dag(where, middle="BC", sleep=60)
    dag = dags.submit(where, (*DAG_FILES, "slow.sub"))
    dags.wait_nodes(dag, "B and C running",
                    lambda n: {k for k, ad in n.items() if ad.get("JobStatus") == RUNNING} == {"B", "C"})
    assert dags.schedd.act(Action.REMOVE, f"ClusterId == {dag.id}", None).success == 1
    removed = dags.wait(dag, "the DAG removed, with DAG_Status 4",
                        lambda ad: ad.get("JobStatus") == REMOVED and ad.get("DAG_Status") == 4)
    assert removed["DAG_NodesDone"] == 1
    dags.wait_nodes(dag, "its nodes gone", lambda n: not n)
    records = {str(ad["DAGNodeName"]): ad for ad in dags.node_history(dag, 3)}
    reason = (f"removed because <OtherJobRemoveRequirements = DAGManJobId =?= {dag.id}> fired when job "
              f"({dag.id}.0) was removed")
    for node in "BC":
        assert (records[node]["JobStatus"], records[node]["RemoveReason"]) == (REMOVED, reason)
    assert records["A"]["ExitCode"] == 0

    def shut_down() -> bool:
        dags.schedd.retrieve(f"ClusterId == {dag.id}")
        out = where / "probe.dag.dagman.out"
        return out.exists() and "EXITING WITH STATUS 2" in out.read_text(encoding="utf-8")

    wait_until(shut_down, 60, "dagman.out to show DAGMan's exit")
    assert re.findall(r"^DONE (\S+)$", dag.read("probe.dag.rescue001"), re.M) == ["A"]
    assert "DAG_STATUS_RM" in dag.read("probe.dag.dagman.out")
    dags.schedd.edit(f"ClusterId == {dag.id}", "RETRIEVED", "true")
    dags.gone(dag)


def test_hold_and_release_running_dag(kit: JobKit) -> None:
    """Hold stops DAGMan, not its nodes; release (DisableCoolDown) restarts it at once, in recovery."""
    dags = DagKit(kit)
    where = dags.directory()
    slow_dag(where, middle="B", sleep=4)
    dag = dags.submit(where, (*DAG_FILES, "slow.sub"))
    dags.wait_nodes(dag, "B running", lambda n: n.get("B", {}).get("JobStatus") == RUNNING)
    dags.schedd.act(Action.HOLD, f"ClusterId == {dag.id}", "DAG hold test")
    held = dags.wait_status(dag, HELD)
    assert held["HoldReasonCode"] == 1
    assert held.get("JobCoolDownExpiration") is None  # DisableCoolDown: no cool-down set
    # B runs on while DAGMan is held, and ends.
    dags.wait_nodes(dag, "B finished while DAGMan is held", lambda n: "B" not in n)
    assert dags.ad(dag)["JobStatus"] == HELD  # type: ignore[index]
    dags.schedd.retrieve(f"ClusterId == {dag.id}")  # mid-run: the partial state, the lock file with it
    assert {"out_A.txt", "out_B.txt", "probe.dag.lock", "probe.dag.nodes.log"} <= set(os.listdir(where))
    dags.schedd.act(Action.RELEASE, f"ClusterId == {dag.id}", None)
    dags.wait(dag, "DAGMan running again", lambda ad: ad.get("JobStatus") == RUNNING or ad.get("JobStatus") == 4,
              timeout=30)
    final = dags.wait_status(dag, COMPLETED)
    assert (final["ExitCode"], final["DAG_Status"], final["DAG_NodesDone"], final["NumJobStarts"]) == (0, 0, 4, 2)
    assert sorted(attempts(dags.node_history(dag, 4))) == [("A", 0), ("B", 0), ("C", 0), ("D", 0)]  # none ran twice
    dags.schedd.retrieve(f"ClusterId == {dag.id}")
    out = dag.read("probe.dag.dagman.out")
    assert "EXITING WITH STATUS 3" in out and "Lock file probe.dag.lock detected" in out
    assert "Running in RECOVERY mode" in out
    assert as_int(final["ClusterId"]) == dag.id

