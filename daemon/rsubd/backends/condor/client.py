"""The real HTCondor backend: `CondorSchedd`, the schedd rsubd calls, each operation run in a worker process.

The worker process and its limits are in `rsubd.backends.condor.worker`; the
classification of the bindings' errors in `rsubd.backends.condor.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence

from rsubd.backends.condor.worker import CondorSettings, WorkerHost
from rsubd.backends.schedd import Action, ActResult, JobAd, JobSpec, SubmitRequest, SubmitResult

__all__ = ["CondorSchedd", "CondorSettings"]


class CondorSchedd(WorkerHost):
    """A real schedd behind a worker process; implements `rsubd.backends.schedd.Schedd`."""

    def submit(self, request: SubmitRequest) -> SubmitResult:
        result: SubmitResult = self._call("submit", request)
        self._unspooled.add(result.cluster)
        return result

    def spool(self, result: SubmitResult) -> None:
        try:
            self._call("spool", result)
        finally:
            self._unspooled.discard(result.cluster)

    def query(self, constraint: str, projection: Sequence[str]) -> list[JobAd]:
        ads: list[JobAd] = self._call("query", constraint, tuple(projection))
        return ads

    def retrieve(self, jobs: JobSpec) -> None:
        self._call("retrieve", jobs if isinstance(jobs, str) else tuple(jobs))

    def edit(self, jobs: JobSpec, attr: str, value: str) -> int:
        count: int = self._call("edit", jobs if isinstance(jobs, str) else tuple(jobs), attr, value)
        return count

    def act(self, action: Action, jobs: JobSpec, reason: str | None = None) -> ActResult:
        result: ActResult = self._call("act", action, jobs if isinstance(jobs, str) else tuple(jobs), reason)
        return result

    def history(self, constraint: str, projection: Sequence[str], match: int | None = None,
                since: int | str | None = None) -> list[JobAd]:
        ads: list[JobAd] = self._call("history", constraint, tuple(projection), match, since)
        return ads
