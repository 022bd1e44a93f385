"""The embedded DAGMan: the DAG language it reads, what it refuses, and its features run on a local schedd.

The DAG contract (tests/contract/test_dag_contract.py) covers the reference diamond, failure,
rescue, remove and hold; these cover the rest of what dagfile's docstring says it supports.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsubd.backends.local import dagfile
from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import Action, JobAd, ScheddError, SubmitRequest
from tests.support.deadlines import holds_for, wait_until

DAGMAN = "/usr/bin/condor_dagman"
TRUE_SUB = """executable = job.sh
arguments = $(JOB) $(RETRY) $(code)
output = $(JOB).try$(RETRY).out
should_transfer_files = YES
queue
"""
JOB_SH = """#!/bin/sh
echo "ran $1 retry $2"
exit "${3:-0}"
"""


@pytest.fixture
def schedd(tmp_path: Path) -> Iterator[LocalSchedd]:
    local = LocalSchedd("dag-unit", tmp_path / "schedd", slots=2, release_delay=0.0)
    try:
        yield local
    finally:
        local.act(Action.REMOVE, "JobStatus =!= 3 && JobStatus =!= 4", "test finished")
        local.close()


def write(where: Path, files: dict[str, str]) -> None:
    where.mkdir(exist_ok=True)
    for name, text in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text, encoding="utf-8")
        if name.endswith(".sh"):
            (where / name).chmod(0o755)


def submit(schedd: LocalSchedd, where: Path, files: list[str], *, args: str = "", executable: str = DAGMAN,
           extra: str = "transfer_executable = false", env: str = "") -> int:
    text = f"""universe = scheduler
executable = {executable}
{extra}
initialdir = {where}
arguments = "-f -l . -Lockfile x.dag.lock -AutoRescue 1 -DoRescueFrom 0 -Dag x.dag{args}"
environment = "_CONDOR_DAGMAN_LOG=x.dag.dagman.out _CONDOR_DAGMAN_QUEUE_UPDATE_INTERVAL=1{env}"
output = x.dag.lib.out
error = x.dag.lib.err
log = x.dag.dagman.log
My.OtherJobRemoveRequirements = "DAGManJobId =?= $(cluster)"
on_exit_remove = (ExitSignal =?= 11 || (ExitCode =!= UNDEFINED && ExitCode >=0 && ExitCode <= 2))
My.RETRIEVED = false
leave_in_queue = (JobStatus == 4 || JobStatus == 3) && RETRIEVED =!= true
transfer_input_files = {",".join(files)}
queue
"""
    result = schedd.submit(SubmitRequest(text=text, cwd=str(where)))
    schedd.spool(result)
    return result.cluster


def finished(schedd: LocalSchedd, cluster: int, timeout: float = 30) -> JobAd:
    def done() -> JobAd | None:
        ads = schedd.query(f"ClusterId == {cluster}", [])
        return ads[0] if ads and ads[0]["JobStatus"] in (3, 4) else None

    return wait_until(done, timeout, f"DAG {cluster} to finish")


def run(schedd: LocalSchedd, where: Path, dag: str, files: dict[str, str] | None = None, **kw: str) -> JobAd:
    write(where, {"x.dag": dag, "true.sub": TRUE_SUB, "job.sh": JOB_SH, **(files or {})})
    names = ["x.dag", "true.sub", "job.sh", *(files or {})]
    ad = finished(schedd, submit(schedd, where, names, **kw))
    schedd.retrieve(f"ClusterId == {ad['ClusterId']}")
    return ad


def order(schedd: LocalSchedd, cluster: object) -> list[str]:
    """The node attempts in the order DAGMan submitted them, as "NODE RETRY" (from the output files' names)."""
    records = schedd.history(f"DAGManJobId == {cluster}", ["ClusterId", "DAGNodeName", "Out"])
    return [f"{r['DAGNodeName']} {str(r.get('Out', '')).rsplit('.try', 1)[-1].split('.')[0]}"
            for r in sorted(records, key=lambda r: int(r["ClusterId"]))]


def scripts(where: Path) -> list[str]:
    return (where / "scripts.txt").read_text(encoding="utf-8").split("\n")[:-1]


# -- the language ------------------------------------------------------------------


def test_parse_reads_the_reference_dag_and_its_commands(tmp_path: Path) -> None:
    write(tmp_path, {"x.dag": """# comment
JOB A a.sub
JOB B b.sub DIR sub NOOP
JOB C c.sub DONE
VARS A node="A" quoted="say \\"hi\\"" empty=""
VARS ALL_NODES APPEND tail="t"
RETRY A 3 UNLESS-EXIT 9
SCRIPT PRE A pre.sh $JOB $RETRY
SCRIPT DEFER 4 60 POST A post.sh $RETURN
ABORT-DAG-ON B 3 RETURN 1
PRIORITY C 10
CATEGORY A heavy
MAXJOBS heavy 1
CONFIG x.config
DOT x.dot
PARENT A CHILD B C
"""})
    dag = dagfile.parse(tmp_path / "x.dag")
    a, b, c = dag.nodes["A"], dag.nodes["B"], dag.nodes["C"]
    assert a.vars == [("node", "A"), ("quoted", 'say "hi"'), ("empty", "")]
    assert a.appended == [("tail", "t")] and b.appended == [("tail", "t")]
    assert (a.retry, a.unless_exit, a.category, dag.maxjobs, dag.config) == (3, 9, "heavy", {"heavy": 1}, "x.config")
    assert a.pre is not None and (a.pre.executable, a.pre.arguments) == ("pre.sh", ["$JOB", "$RETRY"])
    assert a.post is not None and a.post.arguments == ["$RETURN"]
    assert (b.directory, b.noop, c.done, c.priority) == ("sub", True, True, 10)
    assert dag.abort["B"].value == 3 and dag.abort["B"].returns == 1
    assert a.children == ["B", "C"] and c.parents == ["A"] and dag.refused is None


def test_parse_splice_names_and_edges(tmp_path: Path) -> None:
    write(tmp_path, {"x.dag": "JOB A a.sub\nSPLICE S inner.dag\nJOB Z z.sub\nPARENT A CHILD S\nPARENT S CHILD Z\n",
                     "inner.dag": "JOB P p.sub\nJOB Q q.sub\nPARENT P CHILD Q\n"})
    dag = dagfile.parse(tmp_path / "x.dag")
    assert list(dag.nodes) == ["A", "S+P", "S+Q", "Z"]
    assert dag.nodes["S+P"].parents == ["A"] and dag.nodes["Z"].parents == ["S+Q"]


@pytest.mark.parametrize("line", ["SUBDAG EXTERNAL S inner.dag", "FINAL F f.sub", "SCRIPT HOLD A h.sh",
                                  "INCLUDE more.dag"])
def test_parse_refuses_what_it_does_not_run(tmp_path: Path, line: str) -> None:
    write(tmp_path, {"x.dag": f"JOB A a.sub\n{line}\n"})
    refused = dagfile.parse(tmp_path / "x.dag").refused
    assert refused is not None and "line 2" in refused and "not supported by the embedded DAGMan" in refused


def test_parse_errors_name_the_line(tmp_path: Path) -> None:
    write(tmp_path, {"x.dag": "JOB A a.sub\nPARENT A CHILD B\n"})
    with pytest.raises(dagfile.DagError, match="unknown node B"):
        dagfile.parse(tmp_path / "x.dag")
    write(tmp_path, {"x.dag": "JOB A a.sub\nRETRY A lots\n"})
    with pytest.raises(dagfile.DagError, match=r"line 2\): cannot read RETRY"):
        dagfile.parse(tmp_path / "x.dag")


# -- running -------------------------------------------------------------------------


def test_subdag_external_is_refused_in_dagman_out_with_exit_1(schedd: LocalSchedd, tmp_path: Path) -> None:
    ad = run(schedd, tmp_path, "JOB A true.sub\nSUBDAG EXTERNAL S inner.dag\n")
    assert (ad["JobStatus"], ad["ExitCode"], ad["DAG_Status"], ad["DAG_NodesDone"]) == (4, 1, 1, 0)
    out = (tmp_path / "x.dag.dagman.out").read_text(encoding="utf-8")
    assert "SUBDAG EXTERNAL is not supported by the embedded DAGMan" in out and "EXITING WITH STATUS 1" in out
    assert order(schedd, ad["ClusterId"]) == []


def test_scripts_retry_unless_exit_and_priority(schedd: LocalSchedd, tmp_path: Path) -> None:
    dag = """JOB A true.sub
JOB B true.sub
JOB C true.sub
JOB D true.sub
VARS C code="3"
VARS D code="9"
RETRY C 1
RETRY D 5 UNLESS-EXIT 9
PRIORITY B 5
SCRIPT PRE A pre.sh $JOB $RETRY
SCRIPT POST C post.sh $JOB $RETURN $RETRY out_$JOB.$JOBID
"""
    files = {"pre.sh": "#!/bin/sh\necho \"pre $1 $2\" >> scripts.txt\n",
             "post.sh": "#!/bin/sh\necho \"post $1 $2 $3\" >> scripts.txt\necho \"$4\" > posted\n"
                        "[ \"$3\" = 1 ] && exit 0\nexit 1\n"}
    ad = run(schedd, tmp_path, dag, files, args=" -MaxJobs 1")
    lines = order(schedd, ad["ClusterId"])
    assert lines[0] == "B 0"  # PRIORITY first; -MaxJobs 1 runs one node at a time
    assert lines.count("C 0") == lines.count("C 1") == 1  # RETRY C 1
    assert lines.count("D 0") == 1 and "D 1" not in lines  # UNLESS-EXIT 9: no retry
    assert "pre A 0" in scripts(tmp_path)
    assert [s for s in scripts(tmp_path) if s.startswith("post")] == ["post C 3 0", "post C 3 1"]  # POST decides
    assert (ad["ExitCode"], ad["DAG_NodesDone"], ad["DAG_NodesFailed"], ad["DAG_Status"]) == (1, 3, 1, 2)
    assert re.fullmatch(r"out_C\.\d+\.0\n", (tmp_path / "posted").read_text(encoding="utf-8"))  # inside a word
    assert (tmp_path / "C.try1.out").read_text(encoding="utf-8") == "ran C retry 1\n"


def test_abort_dag_on_removes_running_nodes_and_exits_with_return(schedd: LocalSchedd, tmp_path: Path) -> None:
    files = {"slow.sub": "executable = slow.sh\nqueue\n", "slow.sh": "#!/bin/sh\nsleep 30\n"}
    ad = run(schedd, tmp_path, "JOB A true.sub\nJOB S slow.sub\nJOB Z true.sub\nVARS A code=\"4\"\n"
             "ABORT-DAG-ON A 4 RETURN 2\nPARENT A CHILD Z\n", files)
    assert (ad["JobStatus"], ad["ExitCode"], ad["DAG_Status"]) == (4, 2, 3)
    slow = schedd.history(f"DAGManJobId == {ad['ClusterId']} && DAGNodeName == \"S\"", ["JobStatus", "RemoveReason"])
    reason = "DAG Abort: DAG is exiting and writing rescue file."
    assert [(h["JobStatus"], h["RemoveReason"]) for h in slow] == [(3, reason)]
    assert "Nodes that failed: 1" in (tmp_path / "x.dag.rescue001").read_text(encoding="utf-8")


def test_category_maxjobs_config_and_splice(schedd: LocalSchedd, tmp_path: Path) -> None:
    files = {"inner.dag": "JOB P true.sub\nJOB Q true.sub\nCATEGORY P one\nCATEGORY Q one\nMAXJOBS one 1\n",
             "x.config": "DAGMAN_MAX_JOBS_SUBMITTED = 2\n"}
    ad = run(schedd, tmp_path, "CONFIG x.config\nJOB A true.sub\nSPLICE S inner.dag\nJOB Z true.sub\n"
             "PARENT A CHILD S\nPARENT S CHILD Z\n", files)
    assert (ad["ExitCode"], ad["DAG_NodesDone"], ad["DAGMan_MaxJobs"]) == (0, 4, 2)
    lines = order(schedd, ad["ClusterId"])
    assert lines[0] == "A 0" and lines[-1] == "Z 0" and sorted(lines[1:3]) == ["S+P 0", "S+Q 0"]
    starts = sorted((h["DAGNodeName"], h["JobStartDate"], h["CompletionDate"])
                    for h in schedd.history(f"DAGManJobId == {ad['ClusterId']}",
                                            ["DAGNodeName", "JobStartDate", "CompletionDate"]))
    (_, p_start, p_end), (_, q_start, q_end) = [s for s in starts if s[0].startswith("S+")]
    assert p_start >= q_end or q_start >= p_end  # MAXJOBS one 1: never both at once


def test_spooled_condor_dagman_exits_127_and_cools_down(schedd: LocalSchedd, tmp_path: Path) -> None:
    """As on a real schedd: a spooled copy cannot load its libraries; the job goes idle with a cool-down."""
    write(tmp_path, {"x.dag": "JOB A true.sub\n", "condor_dagman": "#!/bin/sh\nexit 0\n"})
    cluster = submit(schedd, tmp_path, ["x.dag"], executable=str(tmp_path / "condor_dagman"), extra="")

    def requeued() -> JobAd | None:
        ad = schedd.query(f"ClusterId == {cluster}", [])[0]
        return ad if ad["JobStatus"] == 1 and ad.get("NumJobStarts") == 1 else None

    ad = wait_until(requeued, 20, "the DAGMan job back in the queue, idle")
    assert ad["ExitCode"] == 127 and "HoldReason" not in {k for k, v in ad.items() if v is not None}
    assert ad["JobCoolDownExpiration"] >= time.time() + 250
    schedd.retrieve(f"ClusterId == {cluster}")
    assert "error while loading shared libraries" in (tmp_path / "x.dag.lib.err").read_text(encoding="utf-8")


def test_a_restarted_scheduler_recovers_the_dag(tmp_path: Path) -> None:
    """The daemon (and the DAGMan in it) goes away mid-DAG: the next one recovers from the lock file."""
    where = tmp_path / "dag"
    write(where, {"x.dag": "JOB A true.sub\nJOB B slow.sub\nJOB C true.sub\nPARENT A CHILD B\nPARENT B CHILD C\n",
                  "true.sub": TRUE_SUB, "job.sh": JOB_SH, "slow.sub": "executable = slow.sh\nqueue\n",
                  "slow.sh": "#!/bin/sh\nsleep 2\n"})
    first = LocalSchedd("dag-unit", tmp_path / "schedd", slots=2, release_delay=0.0)
    cluster = submit(first, where, ["x.dag", "true.sub", "job.sh", "slow.sub", "slow.sh"],
                     extra="transfer_executable = false\nMy.DisableCoolDown = true")
    wait_until(lambda: first.query(f"DAGManJobId == {cluster} && DAGNodeName == \"B\" && JobStatus == 2", []),
               20, "node B running")
    first.close()
    second = LocalSchedd("dag-unit", tmp_path / "schedd", slots=2, release_delay=0.0)
    try:
        ad = finished(second, cluster)
        second.retrieve(f"ClusterId == {cluster}")
        assert (ad["ExitCode"], ad["DAG_NodesDone"], ad["NumJobStarts"]) == (0, 3, 2)
        assert [r["DAGNodeName"] for r in second.history(f"DAGManJobId == {cluster}", ["DAGNodeName"])] == \
            ["C", "B", "A"]  # each once
        metrics = json.loads((where / "x.dag.metrics").read_text(encoding="utf-8"))
        assert metrics["nodes_succeeded"] == 3
        out = (where / "x.dag.dagman.out").read_text(encoding="utf-8")
        assert "Caught SIGTERM" in out and "EXITING WITH STATUS 3" in out and "Running in RECOVERY mode" in out
    finally:
        second.act(Action.REMOVE, "JobStatus =!= 3 && JobStatus =!= 4", "test finished")
        second.close()
        for popen in first._starters.values():  # the gone daemon's handles on starters that have ended since
            popen.wait()


def test_hold_without_disable_cool_down_waits_300_s_after_release(schedd: LocalSchedd, tmp_path: Path) -> None:
    write(tmp_path, {"x.dag": "JOB S slow.sub\n", "slow.sub": "executable = slow.sh\nqueue\n",
                     "slow.sh": "#!/bin/sh\nsleep 30\n"})
    cluster = submit(schedd, tmp_path, ["x.dag", "slow.sub", "slow.sh"])
    wait_until(lambda: schedd.query(f"DAGManJobId == {cluster} && JobStatus == 2", []), 20, "node S running")
    schedd.act(Action.HOLD, f"ClusterId == {cluster}", "hold test")
    schedd.act(Action.RELEASE, f"ClusterId == {cluster}", None)
    ad = schedd.query(f"ClusterId == {cluster}", [])[0]
    assert ad["JobStatus"] == 1 and ad["JobCoolDownExpiration"] >= time.time() + 250
    holds_for(lambda: schedd.query(f"ClusterId == {cluster}", ["JobStatus"])[0]["JobStatus"] == 1, 0.5,
              "the released DAGMan job idle in its cool-down")
    assert schedd.query(f"DAGManJobId == {cluster}", ["JobStatus"])[0]["JobStatus"] == 2
    schedd.edit(f"ClusterId == {cluster}", "JobCoolDownExpiration", "0")  # as 06b: it starts at the next tick
    wait_until(lambda: schedd.query(f"ClusterId == {cluster} && JobStatus == 2", []), 5, "DAGMan running again")


def test_a_client_condor_config_in_the_environment_makes_dagman_exit_1(schedd: LocalSchedd, tmp_path: Path) -> None:
    """As 1e: getenv carried the client's CONDOR_CONFIG; condor_dagman cannot read it on the access point."""
    write(tmp_path, {"x.dag": "JOB A true.sub\n", "true.sub": TRUE_SUB, "job.sh": JOB_SH})
    cluster = submit(schedd, tmp_path, ["x.dag", "true.sub", "job.sh"], env=" CONDOR_CONFIG=/nonexistent/client_config")
    ad = finished(schedd, cluster)
    assert (ad["JobStatus"], ad["ExitCode"]) == (4, 1)
    schedd.retrieve(f"ClusterId == {ad['ClusterId']}")
    assert "Cannot stat file specified in CONDOR_CONFIG" in (tmp_path / "x.dag.lib.err").read_text(encoding="utf-8")
    assert not schedd.history(f"DAGManJobId == {ad['ClusterId']}", ["ClusterId"])  # no node ran


def test_transfer_output_files_narrows_the_dags_retrieve_and_a_missing_one_raises(
        schedd: LocalSchedd, tmp_path: Path) -> None:
    """As 08: only the named files (and output, error, log) come back; one never created makes it raise."""
    write(tmp_path, {"x.dag": "JOB A true.sub\n", "true.sub": TRUE_SUB, "job.sh": JOB_SH})
    cluster = submit(schedd, tmp_path, ["x.dag", "true.sub", "job.sh"],
                     extra="transfer_executable = false\ntransfer_output_files = A.try0.out,never_created.txt")
    finished(schedd, cluster)
    with pytest.raises(ScheddError, match=r"7003:.*never_created.txt: \(errno 2\)"):
        schedd.retrieve(f"ClusterId == {cluster}")
    back = {p.name for p in tmp_path.iterdir()} - {"x.dag", "true.sub", "job.sh", "schedd"}
    assert back == {"A.try0.out", "x.dag.lib.out", "x.dag.lib.err", "x.dag.dagman.log"}  # no dagman.out, no metrics
