"""One handler per request family; `dispatch` matches on the request kind exhaustively.

Each handler is a function of the `Services` app built and the request's fields: a new
kind in `RequestKind` without a case below fails the type check (`assert_never`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, assert_never, cast

from rsub.wire.protocol import Request
from rsubd.handlers import act, daemon, failures, jobs, poke, submit, tokens, watch
from rsubd.handlers.context import Services

__all__ = ["RequestKind", "Services", "dispatch"]

# The kinds of rsub.wire.protocol.REQUESTS (tests/unit/test_server.py checks that they agree).
RequestKind = Literal["ping", "submit", "dry_run", "status", "history", "fetchlog", "wait", "watch", "retrieve", "act",
                      "poke", "daemon_status", "daemon_stop", "token_status", "token_refresh", "token_request_plan",
                      "summary", "resubmit", "why"]


async def dispatch(services: Services, request: Request) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
    """One result, or for `watch` a stream of them (transport/server.py sends each as a frame)."""
    f = request.fields
    # decode_request admits only the kinds of REQUESTS, so the cast names what is already true.
    kind = cast(RequestKind, request.kind)
    match kind:
        case "ping":
            return daemon.ping(services)
        case "submit":
            return await submit.submit(services, f)
        case "dry_run":
            return await submit.dry_run(services, f)
        case "status":
            return jobs.status(services, f, active=f.get("active", False))
        case "history":
            return jobs.status(services, f, history=True)
        case "fetchlog":
            return await jobs.fetchlog(services, f["job"])
        case "wait":
            return await jobs.wait(services, f["ids"], float(f.get("timeout", services.config.max_wait)))
        case "watch":
            return watch.watch(services, f)
        case "retrieve":
            return await jobs.retrieve(services, f["ids"], f.get("dest"))
        case "summary":
            return failures.summary(services, f["ids"])
        case "resubmit":
            return await failures.resubmit(services, f)
        case "why":
            return await failures.why(services, f["ids"])
        case "act":
            return await act.act(services, f["action"], f["ids"], f.get("reason"), constraint=f.get("constraint"),
                                 schedd=f.get("schedd"))
        case "poke":
            return poke.poke(services, f.get("schedd"))
        case "daemon_status":
            return daemon.daemon_status(services)
        case "daemon_stop":
            return daemon.daemon_stop(services)
        case "token_status":
            return tokens.token_status(services)
        case "token_refresh":
            return await tokens.token_refresh(services, f.get("name"), float(f.get("wait", 30.0)))
        case "token_request_plan":
            return tokens.token_request_plan(services, f.get("name"), f.get("schedd"))
        case _:
            assert_never(kind)
