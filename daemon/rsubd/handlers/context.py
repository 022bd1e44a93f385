"""What the handlers are given (`Services`, built by app), and the request checks they share."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rsub.wire.vocabulary import ErrorCode, RequestError
from rsubd.backends.schedd import Schedd, parse_job_id
from rsubd.config import Config
from rsubd.ledger.store import JobSelector, Ledger
from rsubd.polling.poller import Poller
from rsubd.polling.schedule import EarlyDecision
from rsubd.services.pagecache import PageCache
from rsubd.services.submission import Submissions
from rsubd.services.views import ClusterFacts
from rsubd.tokens.manager import TokenManager


class Polls(Protocol):
    """The poll loops, as requests see them: ask for an early poll, wait for one, say how current the ledger is."""

    def poke(self, name: str | None = None, *, force: bool = False) -> Mapping[str, EarlyDecision]: ...

    async def wait_for_poll(self, timeout: float) -> None: ...

    def freshness(self) -> dict[str, Any]: ...

    def poll_state(self, name: str) -> dict[str, Any]: ...

    def schedd_answered(self, name: str) -> None: ...


class Control(Protocol):
    """The daemon itself: its status, its stop, and the token refreshes it runs."""

    def status(self) -> dict[str, Any]: ...

    def request_stop(self) -> None: ...

    def start_refresh(self, name: str, *, manual: bool = False) -> asyncio.Task[Any]: ...


@dataclass(frozen=True)
class Services:
    """Everything a handler may use, and nothing more."""

    config: Config
    ledger: Ledger
    schedds: Mapping[str, Schedd]
    pollers: Mapping[str, Poller]
    tokens: TokenManager
    submissions: Submissions
    facts: ClusterFacts
    polls: Polls
    control: Control
    pages: PageCache = field(default_factory=PageCache)  # the last pages read, until the ledger changes


def no_schedd(name: str, schedds: Mapping[str, object]) -> RequestError:
    return RequestError(ErrorCode.NOT_FOUND, f"no schedd named {name!r}; configured: {', '.join(schedds)}")


def check_schedd(services: Services, name: str | None) -> None:
    """NOT_FOUND unless `name` is None or a configured schedd."""
    if name is not None and name not in services.schedds:
        raise no_schedd(name, services.schedds)


def seconds_field(value: Any, name: str) -> float | None:
    """An age in seconds from a request: None, or a finite number >= 0."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not (0 <= seconds < math.inf):
        raise RequestError(ErrorCode.BAD_REQUEST, f"{name} must be a number of seconds >= 0")
    return seconds


def parse_selector(text: str, schedds: list[str]) -> JobSelector:
    """"CLUSTER", "CLUSTER.PROC", optionally "@SCHEDD"."""
    head, _, schedd = text.partition("@")
    try:
        cluster, proc = parse_job_id(head)
    except ValueError as e:
        raise RequestError(ErrorCode.BAD_REQUEST, str(e)) from None
    if schedd and schedd not in schedds:
        raise RequestError(ErrorCode.NOT_FOUND, f"no schedd named {schedd!r}; configured: {', '.join(schedds)}")
    return JobSelector(cluster=cluster, proc=proc, schedd=schedd or None)


def selectors(services: Services, ids: list[Any]) -> list[JobSelector]:
    names = list(services.schedds)
    if not all(isinstance(i, str) for i in ids):
        raise RequestError(ErrorCode.BAD_REQUEST, "ids must be strings like 12, 12.0 or 12.0@local")
    return [parse_selector(i, names) for i in ids]


def shows(rows: list[dict[str, Any]], sel: JobSelector) -> bool:
    """Whether `rows` hold a job `sel` names."""
    return any(r["cluster"] == sel.cluster and sel.proc in (None, r["proc"]) and sel.schedd in (None, r["schedd"])
               for r in rows)


def rows(services: Services, ids: list[Any]) -> list[dict[str, Any]]:
    """The ledger's jobs these ids name; NOT_FOUND for an id that names none."""
    sels = selectors(services, ids)
    found = services.ledger.jobs(sels, limit=services.config.page_max)
    for sel, text in zip(sels, ids, strict=True):
        if not shows(found, sel):
            raise RequestError(ErrorCode.NOT_FOUND, f"no job {text} in rsub's ledger")
    return found
