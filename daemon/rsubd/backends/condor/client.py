"""The real HTCondor backend: `CondorSchedd`, the schedd rsubd calls, each operation run in a worker process.

The worker process and its limits are in `rsubd.backends.condor.worker`; the
classification of the bindings' errors in `rsubd.backends.condor.errors`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rsubd.backends.condor.worker import CondorSettings, WorkerHost
from rsubd.backends.schedd import Action, ActResult, JobAd, JobSpec, SubmitRequest, SubmitResult
from rsubd.tokens.manager import Credential

__all__ = ["CondorSchedd", "CondorSettings"]
SLOT_CACHE_SECONDS = 60.0


class CondorSchedd(WorkerHost):
    """A real schedd behind a worker process; implements `rsubd.backends.schedd.Schedd` (and `SlotSource`)."""

    def __init__(self, settings: CondorSettings, credential: Callable[[], Credential] | None = None) -> None:
        super().__init__(settings, credential)
        self._slot_cache: dict[tuple[str, ...], tuple[float, list[JobAd]]] = {}

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

    def slot_ads(self, projection: Sequence[str]) -> list[JobAd]:
        """The pool's startd ads, projected: one collector query, cached a minute per projection (rsub why)."""
        key = tuple(sorted(projection))
        cache = self._slot_cache
        hit = cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < SLOT_CACHE_SECONDS:
            return hit[1]
        ads: list[JobAd] = self._call("slot_ads", key)
        cache[key] = (time.monotonic(), ads)
        return ads

    def match_ad(self, cluster: int, proc: int) -> JobAd | None:
        ad: JobAd | None = self._call("match_ad", cluster, proc)
        return ad
