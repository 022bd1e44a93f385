"""The schedd boundary: what rsub needs from a schedd, as plain typed data.

Every backend (the embedded local scheduler, the real HTCondor one) implements
`Schedd`. Job ads cross the boundary as `JobAd`: a dict of attribute name to a
plain Python value. An attribute the ad lacks is absent from the dict; an
attribute whose value is the ClassAd `undefined` maps to None, which is how a
projected query on a real schedd reports it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

AdValue = int | float | str | bool | None | list["AdValue"] | dict[str, "AdValue"]
JobAd = dict[str, AdValue]


class JobStatus(enum.IntEnum):
    """HTCondor's JobStatus codes."""

    IDLE = 1
    RUNNING = 2
    REMOVED = 3
    COMPLETED = 4
    HELD = 5
    TRANSFERRING_OUTPUT = 6
    SUSPENDED = 7


class HoldCode(enum.IntEnum):
    """The HoldReasonCode values rsub reads (HTCondor's numbering)."""

    USER_REQUEST = 1
    JOB_POLICY = 3
    TRANSFER_OUTPUT_ERROR = 12
    TRANSFER_INPUT_ERROR = 13
    SPOOLING_INPUT = 16
    JOB_OUT_OF_RESOURCES = 34


class Action(enum.Enum):
    """The job actions of `Schedd.act`."""

    HOLD = "hold"
    RELEASE = "release"
    REMOVE = "remove"


class ErrorKind(enum.Enum):
    """What went wrong at the schedd, in words a user can act on."""

    UNREACHABLE = "schedd_unreachable"
    COLLECTOR_UNREACHABLE = "collector_unreachable"
    UNKNOWN_SCHEDD = "unknown_schedd"
    AUTHENTICATION = "authentication_failed"
    PERMISSION = "permission_denied"
    REJECTED = "submit_rejected"
    INPUT_MISSING = "input_missing"
    TRANSFER = "transfer_failed"
    INVALID = "invalid_argument"
    NOT_FOUND = "job_not_found"
    TIMEOUT = "timeout"
    OTHER = "schedd_error"


class ScheddError(Exception):
    """A failed schedd operation; `kind` classifies it, the message is the schedd's own."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


@dataclass(frozen=True)
class SubmitRequest:
    """A submit description ready for a schedd.

    `text` is self-contained (item data inlined, executable and initialdir made
    absolute by rsub), so either backend can parse it without the submitter's cwd.
    """

    text: str
    cwd: str


@dataclass(frozen=True)
class SubmitResult:
    """What a submit created: one cluster, procs first_proc .. first_proc+num_procs-1."""

    cluster: int
    first_proc: int
    num_procs: int

    @property
    def procs(self) -> range:
        return range(self.first_proc, self.first_proc + self.num_procs)


@dataclass(frozen=True)
class ActResult:
    """The schedd's tally of an `act` call (its Total* attributes)."""

    success: int = 0
    not_found: int = 0
    already_done: int = 0
    bad_status: int = 0
    error: int = 0
    permission_denied: int = 0

    @property
    def matched(self) -> int:
        """The jobs the schedd found and acted on or refused.

        Never the schedd's TotalJobAds: that is the size of its whole queue, every user's jobs
        (schedd.cpp sets it so), which would show each user how busy the others are.
        """
        return self.success + self.already_done + self.bad_status + self.error + self.permission_denied

    def as_dict(self) -> dict[str, int]:
        return {
            "success": self.success,
            "not_found": self.not_found,
            "already_done": self.already_done,
            "bad_status": self.bad_status,
            "error": self.error,
            "permission_denied": self.permission_denied,
            "job_ads": self.matched,  # the JSON's name since version 1: the jobs that matched
        }


# A job spec is a ClassAd constraint string or a list of "cluster.proc" ids.
JobSpec = str | Sequence[str]


class Schedd(Protocol):
    """The operations rsub needs from one schedd."""

    name: str

    def submit(self, request: SubmitRequest) -> SubmitResult:
        """Submit with spooling: the jobs start held with HoldReasonCode 16 until `spool`."""
        ...

    def spool(self, result: SubmitResult) -> None:
        """Upload the input files of a submit made by this same object; releases the jobs."""
        ...

    def query(self, constraint: str, projection: Sequence[str]) -> list[JobAd]:
        """Ads of the jobs in the queue matching `constraint`, only the `projection` attributes."""
        ...

    def retrieve(self, jobs: JobSpec) -> None:
        """Bring the spooled output of these jobs into each job's submit-time Iwd."""
        ...

    def edit(self, jobs: JobSpec, attr: str, value: str) -> int:
        """Set `attr` to the ClassAd expression `value`; returns the number of ads changed."""
        ...

    def act(self, action: Action, jobs: JobSpec, reason: str | None = None) -> ActResult:
        """Hold, release or remove jobs, with a reason the schedd records."""
        ...

    def history(
        self,
        constraint: str,
        projection: Sequence[str],
        match: int | None = None,
        since: int | str | None = None,
    ) -> list[JobAd]:
        """Ads of jobs that left the queue, newest first."""
        ...

    def close(self) -> None:
        """Release resources (worker processes, threads)."""
        ...


@runtime_checkable
class SlotSource(Protocol):
    """What `rsub why` asks of a backend besides the Schedd calls: the pool's slot ads.

    For a real pool, one collector query of the startd ads, projected (cached a minute); for
    the embedded scheduler, its own slots. An expression (START) comes as {"__expr__": text}.
    """

    def slot_ads(self, projection: Sequence[str]) -> list[JobAd]:
        ...

    def match_ad(self, cluster: int, proc: int) -> JobAd | None:
        """One queued job's whole ad as matchmaking reads it: its expressions (Requirements) unevaluated."""
        ...


def job_id(cluster: int, proc: int) -> str:
    """HTCondor's "cluster.proc" form."""
    return f"{cluster}.{proc}"


MAX_ID = 2**31 - 1  # ClusterId and ProcId are C ints in HTCondor


def parse_job_id(text: str) -> tuple[int, int | None]:
    """Parse "cluster" or "cluster.proc"; ValueError otherwise."""
    head, dot, tail = text.partition(".")
    if not (head.isascii() and head.isdigit()) or (dot and not (tail.isascii() and tail.isdigit())):
        raise ValueError(f"not a job id: {text!r} (expected CLUSTER or CLUSTER.PROC)")
    cluster, proc = int(head), (int(tail) if dot else None)
    if cluster > MAX_ID or (proc is not None and proc > MAX_ID):
        raise ValueError(f"not a job id: {text[:40]!r} (HTCondor's ids are at most {MAX_ID})")
    return cluster, proc


def proc_runs(procs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted proc ids as runs of consecutive ids: [0, 1, 2, 5] -> [(0, 2), (5, 5)]."""
    runs: list[list[int]] = []
    for p in sorted(set(procs)):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return [(a, b) for a, b in runs]


def any_of(terms: Sequence[str]) -> str:
    """Terms joined by ||; past a few, as a balanced tree: a chain of thousands is too deep for
    the ClassAd evaluator (classad2 fails on it, and so would a schedd)."""
    if not terms:
        return "false"
    if len(terms) <= 16:
        return " || ".join(terms)
    level = list(terms)
    while len(level) > 1:
        level = [f"({level[i]} || {level[i + 1]})" if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0]


def ids_constraint(ids: Sequence[tuple[int, int]]) -> str:
    """A constraint matching exactly these (cluster, proc) ids, grouped by cluster.

    It stays short and shallow for the schedd however many ids there are: a run of
    three or more consecutive procs is one range test, scattered procs are one
    `member()` list per cluster, and the clusters are a balanced tree of ||.
    """
    by_cluster: dict[int, list[int]] = {}
    for cluster, proc in ids:
        by_cluster.setdefault(cluster, []).append(proc)
    terms = []
    for cluster, procs in sorted(by_cluster.items()):
        tests: list[str] = []
        singles: list[int] = []
        for a, b in proc_runs(procs):
            if b - a >= 2:
                tests.append(f"(ProcId >= {a} && ProcId <= {b})")
            else:
                singles.extend(range(a, b + 1))
        if len(singles) > 3:
            tests.insert(0, f"member(ProcId, {{{', '.join(map(str, singles))}}})")
        else:
            tests[:0] = [f"ProcId == {p}" for p in singles]
        terms.append(f"(ClusterId == {cluster} && ({any_of(tests)}))")
    return any_of(terms)


# The one table from HTCondor's JobStatus to rsub's job state. Held with
# HoldReasonCode 16 is rsub's "spooling": the inputs are not uploaded yet.
STATE_BY_STATUS: dict[JobStatus, str] = {
    JobStatus.IDLE: "idle",
    JobStatus.RUNNING: "running",
    JobStatus.REMOVED: "removed",
    JobStatus.COMPLETED: "completed",
    JobStatus.HELD: "held",
    JobStatus.TRANSFERRING_OUTPUT: "running",
    JobStatus.SUSPENDED: "running",
}
# The same table keyed by plain ints, and the codes as plain ints: a poll derives the state of
# every queued job (100,000 of them), and plain ints hash and compare faster than the enums.
_STATE_BY_CODE: dict[int, str] = {int(code): state for code, state in STATE_BY_STATUS.items()}
_HELD, _SPOOLING = int(JobStatus.HELD), int(HoldCode.SPOOLING_INPUT)


def status_state(status: AdValue, hold_code: AdValue) -> str:
    """rsub's state from an ad's JobStatus and HoldReasonCode: the one derivation (`state_of`, a poll's hot loop)."""
    if not isinstance(status, int):
        return "idle"
    if status == _HELD and hold_code == _SPOOLING:
        return "spooling"
    return _STATE_BY_CODE.get(status, "idle")


def state_of(ad: Mapping[str, AdValue]) -> str:
    """rsub's state for a queue or history ad."""
    return status_state(ad.get("JobStatus"), ad.get("HoldReasonCode"))


# The attributes rsub reads from a queue ad; a poll projects on exactly these.
POLL_PROJECTION = (
    "ClusterId",
    "ProcId",
    "JobStatus",
    "LastJobStatus",
    "EnteredCurrentStatus",
    "HoldReason",
    "HoldReasonCode",
    "HoldReasonSubCode",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "CompletionDate",
    "RemoveReason",
    "RemoteWallClockTime",
    "NumJobStarts",
    "RETRIEVED",
    "StageOutFinish",
    # DAGs (polling/dagpoll.py): a node job's DAGMan and name, a DAGMan job's progress; absent from other ads,
    # so a poll of plain jobs projects none of them.
    "DAGManJobId", "DAGNodeName", "DAG_Status", "DAG_NodesTotal", "DAG_NodesDone", "DAG_NodesFailed",
    "DAG_NodesFutile", "DAG_NodesQueued", "DAG_JobsSubmitted",
    # What the job used and asked for (polling/observing.py: USAGE), recorded when its state changes.
    "RemoteUserCpu",
    "RemoteSysCpu",
    "MemoryUsage",
    "ResidentSetSize",
    "DiskUsage",
    "NumShadowStarts",
    "RequestMemory",
    "RequestDisk",
    "RequestCpus",
    "JobCurrentStartDate",
)
