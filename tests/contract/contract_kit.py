"""Helpers of the schedd contract suite: submit text as rsub builds it, polling with deadlines.

Everything here must work against a real HTCondor schedd as well as the embedded
one: jobs are selected by their `RsubInstance` tag, results are never assumed to
be ordered, and every wait is a poll with a deadline.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rsubd import submitdesc
from rsubd.backends.schedd import Action, AdValue, JobAd, Schedd, ScheddError, SubmitRequest, SubmitResult
from rsubd.services.submission import leave_in_queue
from tests.support.deadlines import wait_until

MAX_AGE_SECONDS = 864000

# Deadlines sized for a real pool with the minicondor tuning (PERIODIC_EXPR_INTERVAL=5): a
# spooled job reached Running 2.4-8.3 s after spool() and left the queue up to 4.5 s after
# RETRIEVED was set. The embedded scheduler meets each in well under a second.
STATE_TIMEOUT = 60.0
LEAVE_TIMEOUT = 60.0

# What the tests read from queue ads.
PROJECTION = (
    "ClusterId",
    "ProcId",
    "JobStatus",
    "LastJobStatus",
    "EnteredCurrentStatus",
    "Args",
    "HoldReason",
    "HoldReasonCode",
    "HoldReasonSubCode",
    "LastHoldReason",
    "LastHoldReasonCode",
    "ReleaseReason",
    "RemoveReason",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "CompletionDate",
    "JobCurrentStartDate",
    "StageInStart",
    "StageInFinish",
    "StageOutFinish",
    "RETRIEVED",
    "RsubInstance",
    "LeaveJobInQueue",
)
HISTORY_PROJECTION = PROJECTION


HELD_STATUS, COMPLETED_STATUS, REMOVED_STATUS = 5, 4, 3
SPOOL_HOLD_CODE = 16


def spool_held(ad: JobAd) -> bool:
    """Held by the schedd between submit and the end of spooling (code 16), not by the job."""
    return ad.get("JobStatus") == HELD_STATUS and ad.get("HoldReasonCode") == SPOOL_HOLD_CODE


def as_int(value: AdValue) -> int:
    """An ad value that must be an int (ClusterId, ProcId, JobStatus)."""
    assert isinstance(value, int) and not isinstance(value, bool), value
    return value


def quote(text: str) -> str:
    """A ClassAd string literal (the tags and reasons used here have no quotes or backslashes)."""
    assert '"' not in text and "\\" not in text
    return f'"{text}"'


@dataclass(frozen=True)
class Cluster:
    """One submitted cluster and where its files live."""

    result: SubmitResult
    initialdir: Path
    tag: str

    @property
    def id(self) -> int:
        return self.result.cluster

    @property
    def constraint(self) -> str:
        return f"RsubInstance == {quote(self.tag)} && ClusterId == {self.id}"

    def job_ids(self) -> list[str]:
        return [f"{self.id}.{p}" for p in self.result.procs]

    def read(self, name: str) -> str:
        return (self.initialdir / name).read_text(encoding="utf-8")


class JobKit:
    """Builds, submits, watches and finally cleans up the jobs of one test."""

    def __init__(self, schedd: Schedd, base: Path) -> None:
        self.schedd = schedd
        self.base = base
        self.tag = f"contract-{uuid.uuid4().hex}"
        # The cwd handed to the schedd with each submit; files must never land here.
        self.cwd = base / "submit-cwd"
        self.cwd.mkdir(parents=True)
        self._dirs = 0

    @property
    def constraint(self) -> str:
        return f"RsubInstance == {quote(self.tag)}"

    # -- building and submitting --------------------------------------------

    def description(
        self, initialdir: Path, executable: Path, commands: Mapping[str, str], queue: str
    ) -> str:
        """Submit text as rsub hands it to a schedd: absolute paths, rsub's attributes, and written
        by rsub's own renderer (several queue statements made one)."""
        lines = {
            "universe": "vanilla",
            "executable": str(executable),
            "initialdir": str(initialdir),
            "should_transfer_files": "YES",
            "when_to_transfer_output": "ON_EXIT",
            "output": "out.txt",
            "error": "err.txt",
            "request_cpus": "1",
            "request_memory": "64",
            "request_disk": "10240",
            **commands,
            "My.RETRIEVED": "false",
            "My.RsubInstance": quote(self.tag),
            "leave_in_queue": leave_in_queue(MAX_AGE_SECONDS),
        }
        text = "".join(f"{k} = {v}\n" for k, v in lines.items()) + queue.strip() + "\n"
        return submitdesc.render(submitdesc.parse(text, cwd=str(self.cwd)))

    def submit_job(
        self,
        script: str,
        *,
        commands: Mapping[str, str] | None = None,
        inputs: Mapping[str, str] | None = None,
        queue: str = "queue",
    ) -> Cluster:
        """Write `script` (a /bin/sh body) and `inputs` into a fresh initialdir; submit (spooled)."""
        self._dirs += 1
        initialdir = self.base / f"job{self._dirs}"
        initialdir.mkdir()
        executable = initialdir / "job.sh"
        executable.write_text(
            "#!/bin/sh\n" + textwrap.dedent(script).strip() + "\n", encoding="utf-8"
        )
        executable.chmod(0o755)
        for name, content in (inputs or {}).items():
            (initialdir / name).write_text(content, encoding="utf-8")
        text = self.description(initialdir, executable, commands or {}, queue)
        result = self.schedd.submit(SubmitRequest(text=text, cwd=str(self.cwd)))
        return Cluster(result=result, initialdir=initialdir, tag=self.tag)

    # -- watching ------------------------------------------------------------

    def ads(self, cluster: Cluster, projection: Iterable[str] = PROJECTION) -> dict[int, JobAd]:
        """The cluster's queue ads by ProcId."""
        ads = self.schedd.query(cluster.constraint, list(projection))
        by_proc = {as_int(ad["ProcId"]): ad for ad in ads}
        assert len(by_proc) == len(ads), f"duplicate ProcIds in {ads!r}"
        return by_proc

    def wait_for(
        self,
        cluster: Cluster,
        predicate: Callable[[JobAd], bool],
        what: str,
        timeout: float = STATE_TIMEOUT,
    ) -> dict[int, JobAd]:
        """Poll until every proc of `cluster` is in the queue and satisfies `predicate`."""

        def check() -> dict[int, JobAd] | None:
            ads = self.ads(cluster)
            ok = set(ads) == set(cluster.result.procs) and all(predicate(ad) for ad in ads.values())
            last.clear()
            last.update(ads)
            return ads if ok else None

        last: dict[int, JobAd] = {}
        try:
            return wait_until(check, timeout, f"{what} (cluster {cluster.id})")
        except AssertionError as e:
            raise AssertionError(f"{e}\nlast ads: {last!r}") from None

    def wait_status(
        self, cluster: Cluster, *statuses: int, timeout: float = STATE_TIMEOUT
    ) -> dict[int, JobAd]:
        """Poll until every proc is in one of `statuses`; held (5) means held for any reason but spooling.

        A real schedd keeps a spooled job held with code 16 for about a second after `spool`
        returns (the embedded scheduler too): that hold is not the job's.
        """
        return self.wait_for(
            cluster, lambda ad: ad.get("JobStatus") in statuses and not spool_held(ad),
            f"JobStatus in {statuses}", timeout,
        )

    def wait_finished(self, cluster: Cluster, timeout: float = STATE_TIMEOUT) -> dict[int, JobAd]:
        """Poll until every proc has completed, been removed, or been held for a reason of its own."""
        return self.wait_status(cluster, COMPLETED_STATUS, REMOVED_STATUS, HELD_STATUS, timeout=timeout)

    def wait_gone(self, cluster: Cluster, timeout: float = LEAVE_TIMEOUT) -> None:
        wait_until(
            lambda: not self.ads(cluster, ["ClusterId", "ProcId"]),
            timeout,
            f"cluster {cluster.id} to leave the queue",
        )

    def history(
        self, cluster: Cluster, count: int | None = None, timeout: float = LEAVE_TIMEOUT
    ) -> dict[int, JobAd]:
        """The cluster's history records by ProcId, once `count` (default: every proc) are there."""
        wanted = len(cluster.result.procs) if count is None else count

        def check() -> dict[int, JobAd] | None:
            records = self.schedd.history(cluster.constraint, list(HISTORY_PROJECTION))
            by_proc = {as_int(ad["ProcId"]): ad for ad in records}
            return by_proc if len(records) == wanted else None

        return wait_until(check, timeout, f"{wanted} history records of cluster {cluster.id}")

    # -- cleaning up ---------------------------------------------------------

    def cleanup(self) -> None:
        """Leave nothing of this test in the queue: remove the unfinished, release the kept."""
        not_done = f"{self.constraint} && JobStatus =!= 4 && JobStatus =!= 3"
        try:
            if self.schedd.query(not_done, ["ClusterId"]):
                self.schedd.act(Action.REMOVE, not_done, "contract test cleanup")
            if self.schedd.query(f"{self.constraint} && JobStatus == 4", ["ClusterId"]):
                self.schedd.edit(f"{self.constraint} && JobStatus == 4", "RETRIEVED", "true")
        except ScheddError:
            pass  # best effort: the test has already passed or failed on its own assertions
