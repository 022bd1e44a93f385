"""token_status, token_refresh and token_request_plan."""

from __future__ import annotations

import asyncio
import getpass
from typing import Any

from rsub.wire.vocabulary import ErrorCode, RequestError
from rsubd.handlers.context import Services


def token_status(services: Services) -> dict[str, Any]:
    return {"tokens": services.tokens.status()}


async def token_refresh(services: Services, name: str | None, wait: float) -> dict[str, Any]:
    tokens = services.tokens
    names = [name] if name else list(tokens.states)
    if name and name not in tokens.states:
        raise RequestError(ErrorCode.NOT_FOUND, f"no token profile named {name!r}; "
                           f"configured: {', '.join(tokens.states) or 'none'}")
    tasks = {n: services.control.start_refresh(n, manual=True) for n in names}
    if tasks:
        await asyncio.wait([asyncio.shield(t) for t in tasks.values()],
                           timeout=max(0.0, min(wait, services.config.max_wait)))
    results = {}
    for n, task in tasks.items():
        if task.done() and not task.cancelled() and task.exception() is None:
            results[n] = task.result()
        else:
            results[n] = {"refreshed": None, "reason": "still running; `rsub token status` shows its progress "
                          "(a browser login may be needed)"}
    return {"results": results, "tokens": tokens.status()}


def token_request_plan(services: Services, name: str | None, schedd: str | None) -> dict[str, Any]:
    """How to get a new IDTOKEN for a profile with condor_token_request, here or on the submit host."""
    states = services.tokens.states
    idtokens = [n for n, st in states.items() if st.profile.kind == "idtoken"]
    if name is None:
        if not idtokens:
            raise RequestError(ErrorCode.NOT_FOUND, "no idtoken profile is configured; add a [tokens.NAME] "
                               'table with kind = "idtoken" to the config')
        name = idtokens[0]
    if name not in states:
        raise RequestError(ErrorCode.NOT_FOUND, f"no token profile named {name!r}")
    profile = states[name].profile
    if profile.kind != "idtoken":
        raise RequestError(ErrorCode.BAD_REQUEST, f"profile {name!r} holds a SciToken; "
                           f"get one with `{profile.manual_command()}`")
    config = services.config
    users = [s for s in config.schedds if s.token == name]
    cfg = config.schedd(schedd) if schedd else (users[0] if users else None)
    target = profile.file if profile.file is not None else profile.target
    user = getpass.getuser()
    argv = ["condor_token_request", "-identity", f"{user}@fs", "-authz", "READ", "-authz", "WRITE"]
    if cfg is not None and cfg.backend == "htcondor":
        argv += ["-type", "SCHEDD"] + (["-name", cfg.name] if cfg.name else [])
        argv += ["-pool", cfg.pool] if cfg.pool else []
    remote = " ".join([*argv, "-token", f"rsub_{name}"])
    argv += ["-token", target.name]
    return {
        "profile": name, "target": str(target), "argv": argv,
        "env": {"_condor_SEC_TOKEN_DIRECTORY": str(target.parent)},
        "instructions": [
            "condor_token_request is not installed here (the htcondor wheel cannot request tokens).",
            "On the submit host, run:",
            f"  {remote}",
            "  (it prints a request id; the schedd's administrator approves it with condor_token_request_approve)",
            f"then copy ~/.condor/tokens.d/rsub_{name} from the submit host to {target} here, and run:",
            f"  chmod 600 {target} && rsub token refresh {name}",
        ],
    }
