"""Helpers of the DAG contract suite: the reference DAG's files, the DAGMan job as rsub submits it.

The description is the one the reference recipe ran on a real HTCondor 25 schedd: a
scheduler-universe job running the access point's condor_dagman (not spooled), relative
arguments and environment, the DAG's files in `transfer_input_files`, and a `leave_in_queue`
that keeps a removed DAG's spool until it is retrieved.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rsubd.backends.schedd import JobAd, Schedd, SubmitRequest
from tests.support.deadlines import wait_until

from .contract_kit import Cluster, JobKit, as_int, quote

DATA = Path(__file__).resolve().parent.parent / "data" / "dag"
DAGMAN_ENV = "RSUB_TEST_DAGMAN"  # condor_dagman's path on the real pool's access point
DEFAULT_DAGMAN = "/usr/bin/condor_dagman"
# A real pool ran the diamond in 46-55 s (5 s DAGMan cycles); the embedded scheduler in about 2 s.
DAG_TIMEOUT = float(os.environ.get("RSUB_TEST_DAG_TIMEOUT", "240"))
DAG_FILES = ("probe.dag", "node.sub", "flaky.sub", "node.sh", "flaky.sh",
             "input_A.txt", "input_B.txt", "input_C.txt", "input_D.txt")
DAG_PROJECTION = (
    "ClusterId", "ProcId", "JobStatus", "ExitCode", "JobUniverse", "Cmd", "Iwd", "SUBMIT_Iwd", "Out", "Err",
    "UserLog", "LeaveJobInQueue", "OnExitRemove", "OtherJobRemoveRequirements", "JobBatchName", "JobBatchId",
    "RemoveReason", "NumJobStarts",
    "HoldReason", "HoldReasonCode", "JobCoolDownExpiration", "RsubInstance", "RETRIEVED",
    "DAG_NodesTotal", "DAG_NodesDone", "DAG_NodesFailed", "DAG_NodesQueued", "DAG_NodesReady", "DAG_NodesUnready",
    "DAG_NodesFutile", "DAG_NodesPrerun", "DAG_NodesPostrun", "DAG_NodesHoldrun", "DAG_JobsSubmitted",
    "DAG_JobsIdle", "DAG_JobsRunning", "DAG_JobsHeld", "DAG_JobsCompleted", "DAG_Status", "DAG_InRecovery",
    "DAG_AdUpdateTime", "DisableCoolDown",
)
NODE_PROJECTION = (
    "ClusterId", "ProcId", "JobStatus", "ExitCode", "DAGManJobId", "DAGNodeName", "DAGParentNodeNames",
    "JobBatchName", "JobBatchId", "JobSubmitFile", "Iwd", "Cmd", "Out", "Err", "UserLog", "JobUniverse",
    "TransferInput", "RemoveReason", "CompletionDate", "QDate", "JobStartDate", "Owner", "ExitBySignal",
    "EnteredCurrentStatus",
)
SLOW_SUB = """\
# a node that sleeps $(sleep) seconds, so a test can act while it runs
universe                = vanilla
executable              = node.sh
arguments               = $(node) $(greeting)
environment             = "NODE_SLEEP=$(sleep)"
transfer_input_files    = input_$(node).txt
should_transfer_files   = YES
when_to_transfer_output = ON_EXIT
output                  = out_$(node).stdout
error                   = out_$(node).stderr
request_cpus            = 1
request_memory          = 64
request_disk            = 10240
queue
"""


@dataclass(frozen=True)
class Dag(Cluster):
    """A DAGMan job's cluster, and its node jobs."""

    @property
    def nodes(self) -> str:
        return f"DAGManJobId == {self.id}"


class DagKit:
    """Writes, submits and watches the DAGs of one test (jobs tagged and cleaned up by its JobKit)."""

    def __init__(self, kit: JobKit) -> None:
        self.kit = kit
        self.schedd: Schedd = kit.schedd
        self.dagman = os.environ.get(DAGMAN_ENV, DEFAULT_DAGMAN)
        self._dirs = 0

    def directory(self, *, always_fail: bool = False) -> Path:
        """A fresh client directory holding the reference DAG (C fails once, or always)."""
        self._dirs += 1
        where = self.kit.base / f"dag{self._dirs}"
        where.mkdir()
        for name in ("probe.dag", "node.sub", "node.sh", "flaky.sh"):
            shutil.copy(DATA / name, where / name)
        shutil.copy(DATA / ("flaky_always_fail.sub" if always_fail else "flaky.sub"), where / "flaky.sub")
        (where / "slow.sub").write_text(SLOW_SUB, encoding="utf-8")
        for script in ("node.sh", "flaky.sh"):
            (where / script).chmod(0o755)
        for node in "ABCD":
            (where / f"input_{node}.txt").write_text(f"input of node {node}\n", encoding="utf-8")
        return where

    def description(self, initialdir: Path, files: tuple[str, ...], *, dag: str = "probe.dag",
                    extra: str = "") -> str:
        args = (f"-f -l . -Lockfile {dag}.lock -AutoRescue 1 -DoRescueFrom 0 -Dag {dag} -Suppress_notification "
                f"-Dagman {self.dagman}{extra}")
        return f"""\
universe = scheduler
executable = {self.dagman}
transfer_executable = false
initialdir = {initialdir}
arguments = "{args}"
environment = "_CONDOR_DAGMAN_LOG={dag}.dagman.out _CONDOR_MAX_DAGMAN_LOG=0 _CONDOR_DAGMAN_QUEUE_UPDATE_INTERVAL=1"
output = {dag}.lib.out
error = {dag}.lib.err
log = {dag}.dagman.log
remove_kill_sig = SIGUSR1
My.OtherJobRemoveRequirements = "DAGManJobId =?= $(cluster)"
My.IsDaemonCore = True
on_exit_remove = (ExitSignal =?= 11 || (ExitCode =!= UNDEFINED && ExitCode >= 0 && ExitCode <= 2))
My.DisableCoolDown = true
My.RETRIEVED = false
My.RsubInstance = {quote(self.kit.tag)}
leave_in_queue = (JobStatus == 4 || JobStatus == 3) && RETRIEVED =!= true
transfer_input_files = {",".join(files)}
queue
"""

    def submit(self, initialdir: Path, files: tuple[str, ...] = DAG_FILES, **options: str) -> Dag:
        text = self.description(initialdir, files, **options)
        result = self.schedd.submit(SubmitRequest(text=text, cwd=str(self.kit.cwd)))
        self.schedd.spool(result)
        return Dag(result=result, initialdir=initialdir, tag=self.kit.tag)

    # -- watching ------------------------------------------------------------

    def ad(self, dag: Dag) -> JobAd | None:
        ads = self.schedd.query(dag.constraint, list(DAG_PROJECTION))
        return ads[0] if ads else None

    def wait(self, dag: Dag, what: str, check: Callable[[JobAd], bool], timeout: float = DAG_TIMEOUT) -> JobAd:
        last: list[JobAd | None] = [None]

        def probe() -> JobAd | None:
            ad = last[0] = self.ad(dag)
            return ad if ad is not None and check(ad) else None

        try:
            return wait_until(probe, timeout, f"{what} (DAG {dag.id})")
        except AssertionError as e:
            raise AssertionError(f"{e}\nlast ad: {last[0]!r}") from None

    def wait_status(self, dag: Dag, *statuses: int, timeout: float = DAG_TIMEOUT) -> JobAd:
        return self.wait(dag, f"JobStatus in {statuses}", lambda ad: ad.get("JobStatus") in statuses, timeout)

    def live_nodes(self, dag: Dag) -> dict[str, JobAd]:
        return {str(ad["DAGNodeName"]): ad for ad in self.schedd.query(dag.nodes, list(NODE_PROJECTION))}

    def wait_nodes(self, dag: Dag, what: str, check: Callable[[dict[str, JobAd]], bool],
                   timeout: float = DAG_TIMEOUT) -> dict[str, JobAd]:
        def probe() -> list[dict[str, JobAd]] | None:
            nodes = self.live_nodes(dag)
            return [nodes] if check(nodes) else None  # wrapped: no nodes at all is an answer too

        return wait_until(probe, timeout, f"{what} (DAG {dag.id})")[0]

    def node_history(self, dag: Dag, count: int, timeout: float = DAG_TIMEOUT) -> list[JobAd]:
        """Every finished node attempt (newest first), once `count` are there."""
        def check() -> list[JobAd] | None:
            records = self.schedd.history(dag.nodes, list(NODE_PROJECTION))
            return records if len(records) >= count else None

        return wait_until(check, timeout, f"{count} node history records of DAG {dag.id}")

    def gone(self, dag: Dag, timeout: float = DAG_TIMEOUT) -> None:
        wait_until(lambda: self.ad(dag) is None, timeout, f"DAG {dag.id} to leave the queue")


def attempts(records: list[JobAd]) -> list[tuple[str, object]]:
    """(node, exit code) of each attempt, oldest first (by cluster id: DAGMan submits in order)."""
    ordered = sorted(records, key=lambda ad: as_int(ad["ClusterId"]))
    return [(str(ad["DAGNodeName"]), ad.get("ExitCode")) for ad in ordered]

