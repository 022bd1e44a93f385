"""A schedd that passes every call to another, for wrappers that change one or two of them.

The token check, fault injection and the call counters of tests and benchmarks
each wrap a backend; they subclass `DelegatingSchedd` and override `before_call`
(what happens ahead of every operation) or the few operations they change, so a
new boundary method needs adding in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from rsubd.backends.schedd import (
    Action,
    ActResult,
    ErrorKind,
    JobAd,
    JobSpec,
    Schedd,
    ScheddError,
    SubmitRequest,
    SubmitResult,
)

S = TypeVar("S", bound=Schedd)


class DelegatingSchedd(Generic[S]):
    """Implements `rsubd.backends.schedd.Schedd` by passing every call to `inner`."""

    def __init__(self, inner: S) -> None:
        self.name = inner.name
        self.inner = inner

    def before_call(self, op: str) -> None:
        """Runs ahead of every operation but `close`, with its name (submit, spool, ...); may raise ScheddError."""

    def submit(self, request: SubmitRequest) -> SubmitResult:
        self.before_call("submit")
        return self.inner.submit(request)

    def spool(self, result: SubmitResult) -> None:
        self.before_call("spool")
        self.inner.spool(result)

    def query(self, constraint: str, projection: Sequence[str]) -> list[JobAd]:
        self.before_call("query")
        return self.inner.query(constraint, projection)

    def retrieve(self, jobs: JobSpec) -> None:
        self.before_call("retrieve")
        self.inner.retrieve(jobs)

    def edit(self, jobs: JobSpec, attr: str, value: str) -> int:
        self.before_call("edit")
        return self.inner.edit(jobs, attr, value)

    def act(self, action: Action, jobs: JobSpec, reason: str | None = None) -> ActResult:
        self.before_call("act")
        return self.inner.act(action, jobs, reason)

    def history(self, constraint: str, projection: Sequence[str], match: int | None = None,
                since: int | str | None = None) -> list[JobAd]:
        self.before_call("history")
        return self.inner.history(constraint, projection, match, since)

    def slot_ads(self, projection: Sequence[str]) -> list[JobAd]:
        """The pool's slot ads (backends.schedd.SlotSource), if the backend inside can list them."""
        self.before_call("slot_ads")
        inner = getattr(self.inner, "slot_ads", None)
        if inner is None:
            raise ScheddError(ErrorKind.OTHER, f"schedd {self.name}'s backend cannot list the pool's slots")
        ads: list[JobAd] = inner(projection)
        return ads

    def match_ad(self, cluster: int, proc: int) -> JobAd | None:
        """One job's ad with its expressions unevaluated (backends.schedd.SlotSource)."""
        self.before_call("match_ad")
        inner = getattr(self.inner, "match_ad", None)
        if inner is None:
            raise ScheddError(ErrorKind.OTHER, f"schedd {self.name}'s backend cannot show a job's Requirements")
        ad: JobAd | None = inner(cluster, proc)
        return ad

    def close(self) -> None:
        self.inner.close()
