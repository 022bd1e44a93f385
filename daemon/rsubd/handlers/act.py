"""act: hold, release or remove jobs by id, or rsub's own jobs matching a guarded constraint."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from rsub.wire.vocabulary import FINAL_STATES, ErrorCode, RequestError
from rsubd.backends.classads import check_expression
from rsubd.backends.schedd import Action, ActResult, ErrorKind, JobSpec, ScheddError, ids_constraint, job_id
from rsubd.handlers.context import Services, check_schedd, rows
from rsubd.services.spoolholds import LOOK_AGAIN_AFTER, cancel_intent, keep_intent, restore_intent
from rsubd.services.views import owner

log = structlog.get_logger("rsubd.handlers")
ACTIONS = {"hold": Action.HOLD, "release": Action.RELEASE, "remove": Action.REMOVE}
# What a schedd records when no --reason is given (else the bindings record "Python-initiated action").
DEFAULT_REASONS = {"hold": "held with rsub hold", "release": "released with rsub release",
                   "remove": "removed with rsub rm"}


def default_reason(action: str) -> str:
    return f"{DEFAULT_REASONS[action]} by {owner()}"
MAX_CONSTRAINT = 10_000
_OPEN = {"(": ")", "[": "]", "{": "}"}


def guarded_constraint(instance_id: str, expr: str) -> str:
    """`(RsubInstance == "<id>") && (EXPR)`: only this ledger's jobs, whatever EXPR says.

    EXPR must be one balanced expression, so that it cannot close the parenthesis around
    it and escape the guard: brackets nest, strings and quoted names end, and there are
    no comments (which could hide a bracket from this check, not from the schedd's parser).
    ValueError says what is wrong.
    """
    expr = expr.strip()
    if not expr:
        raise ValueError("the constraint is empty")
    if len(expr) > MAX_CONSTRAINT:
        raise ValueError(f"the constraint is longer than {MAX_CONSTRAINT} characters")
    if not expr.isprintable():
        raise ValueError("the constraint has control characters")
    try:
        expr.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the constraint is not valid UTF-8") from None
    stack: list[str] = []
    quote = ""
    i = 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif expr.startswith(("/*", "//"), i):
            raise ValueError("comments are not allowed in a constraint")
        elif c in _OPEN:
            stack.append(_OPEN[c])
        elif c in ")]}" and (not stack or stack.pop() != c):
            raise ValueError(f"unbalanced {c!r} at character {i + 1} of the constraint")
        i += 1
    if quote:
        raise ValueError("a string in the constraint is not closed")
    if stack:
        raise ValueError(f"the constraint lacks a closing {stack[-1]!r}")
    return f'(RsubInstance == "{instance_id}") && ({expr})'


def storable_reason(reason: str | None) -> str | None:
    """The reason as a schedd can keep it.

    HTCondor (condor_hold too) leaves HoldReason or RemoveReason undefined when the reason
    has a double quote, yet reports success: the quote becomes a single one, and line breaks
    (which a reason shown on one line cannot carry) become spaces.
    """
    if reason is None:
        return None
    return " ".join(reason.replace('"', "'").split())


async def _reason_shown(services: Services, name: str, jobs: list[str], action: str, reason: str) -> list[str]:
    """The jobs whose ad does not show the reason given (checked after a hold or a remove)."""
    attr = {"hold": "HoldReason", "remove": "RemoveReason"}.get(action)
    if attr is None:
        return []
    keys = [(int(c), int(p)) for c, _, p in (j.partition(".") for j in jobs)]
    try:
        ads = await asyncio.to_thread(services.schedds[name].query, ids_constraint(keys), ["ClusterId", "ProcId", attr])
    except ScheddError:
        return []  # the action is done; the check is a courtesy
    return [f"{a['ClusterId']}.{a['ProcId']}" for a in ads if reason not in str(a.get(attr) or "")]


async def act(services: Services, action: str, ids: list[Any], reason: str | None, *, constraint: str | None = None,
              schedd: str | None = None) -> dict[str, Any]:
    """Hold, release or remove jobs by id, or rsub's own jobs matching a constraint on one schedd."""
    if action not in ACTIONS:
        raise RequestError(ErrorCode.BAD_REQUEST, f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    given, reason = reason, storable_reason(reason)
    check_reason = bool(reason)  # the user's reason is checked on the ads; rsub's own default is not
    if not reason:
        given = reason = default_reason(action)
    check_schedd(services, schedd)
    if constraint is not None:
        if ids:
            raise RequestError(ErrorCode.BAD_REQUEST, "give job ids or a constraint, not both")
        acted = await _act_constraint(services, action, constraint, reason, schedd or next(iter(services.schedds)))
        if reason != given:
            acted["reason"] = reason
        return acted
    if not ids:
        raise RequestError(ErrorCode.BAD_REQUEST, "name the jobs: ids like 12, 12.0 or 12.0@local, or a constraint")
    if schedd is not None:  # the schedd of ids that name none
        ids = [i if not isinstance(i, str) or "@" in i else f"{i}@{schedd}" for i in ids]
    by_schedd: dict[str, list[str]] = {}
    finished: dict[str, dict[str, list[str]]] = {}  # by schedd and state: jobs done with, not sent to the schedd
    for r in rows(services, ids):
        by_schedd.setdefault(r["schedd"], [])
        if r["state"] in FINAL_STATES:
            finished.setdefault(r["schedd"], {}).setdefault(r["state"], []).append(job_id(r["cluster"], r["proc"]))
        else:
            by_schedd[r["schedd"]].append(job_id(r["cluster"], r["proc"]))
    summary: dict[str, Any] = {}
    for name, jobs in by_schedd.items():
        if not jobs:  # every job named there is already done with: nothing to ask the schedd
            summary[name] = {**ActResult().as_dict(), "finished": finished[name]}
            continue
        cancelled = await _cancel_kept_holds(services, name, action, jobs)
        try:
            result = await asyncio.to_thread(services.schedds[name].act, ACTIONS[action], jobs, reason)
        except ScheddError as e:
            await _restore_kept_holds(services, name, cancelled)
            raise RequestError(ErrorCode.SCHEDD, f"schedd {name}: {e}") from None
        summary[name] = result.as_dict()
        if cancelled:
            summary[name]["hold_cancelled"] = [job_id(*k) for k in cancelled]
        if action == "hold" and result.already_done:
            await _keep_hold(services, name, jobs, reason, summary[name])
        if name in finished:
            summary[name]["finished"] = finished[name]
        if check_reason and result.success:
            summary[name]["reason_missing"] = await _reason_shown(services, name, jobs, action, reason)
        services.polls.schedd_answered(name)
        log.info("jobs.acted", schedd=name, action=action, jobs=len(jobs), **result.as_dict())
        services.polls.poke(name, force=True)
    reply: dict[str, Any] = {"action": action, "schedds": summary}
    if reason != given:
        reply["reason"] = reason  # what was sent, where the schedd could not have kept what was given
    return reply


async def _act_constraint(services: Services, action: str, constraint: str, reason: str | None,
                          name: str) -> dict[str, Any]:
    try:
        spec = guarded_constraint(services.ledger.instance_id, constraint)
        check_expression(constraint)
    except ValueError as e:
        raise RequestError(ErrorCode.BAD_REQUEST, f"invalid constraint {constraint.strip()!r}: {e}") from None
    cancelled = await _cancel_kept_holds(services, name, action, spec)
    try:
        result = await asyncio.to_thread(services.schedds[name].act, ACTIONS[action], spec, reason)
    except ScheddError as e:
        await _restore_kept_holds(services, name, cancelled)
        if e.kind is ErrorKind.INVALID:
            raise RequestError(ErrorCode.BAD_REQUEST, f"invalid constraint {constraint.strip()!r}: the schedd "
                               f"says {e.message}") from None
        raise RequestError(ErrorCode.SCHEDD, f"schedd {name}: {e}") from None
    except ValueError as e:  # text the ClassAd parser refuses before parsing (it passed the checks above)
        await _restore_kept_holds(services, name, cancelled)
        raise RequestError(ErrorCode.BAD_REQUEST, f"invalid constraint: {e}") from None
    counts: dict[str, Any] = {**result.as_dict()}
    if cancelled:
        counts["hold_cancelled"] = [job_id(*k) for k in cancelled]
    if action == "hold" and result.already_done:
        await _keep_hold(services, name, spec, reason or default_reason("hold"), counts)
    services.polls.schedd_answered(name)
    log.info("jobs.acted", schedd=name, action=action, constraint=True, **result.as_dict())
    services.polls.poke(name, force=True)
    return {"action": action, "constraint": spec, "schedds": {name: counts}}


async def _cancel_kept_holds(services: Services, name: str, action: str,
                             spec: JobSpec) -> dict[tuple[int, int], tuple[str, float]]:
    """A release drops the holds rsubd keeps for jobs still spooling, before it is sent: the user's last word.
    A schedd that cannot say which jobs a constraint names fails the release, which is then not sent."""
    if action != "release":
        return {}
    try:
        return await asyncio.to_thread(cancel_intent, services.schedds[name], services.ledger, name, spec)
    except ScheddError as e:
        raise RequestError(ErrorCode.SCHEDD, f"schedd {name}: nothing was released: it did not say which jobs the "
                           f"constraint names, to drop the holds rsubd keeps for them ({e}); run the same "
                           "release again once the schedd answers (see `rsub daemon status`)") from None


async def _restore_kept_holds(services: Services, name: str,
                              cancelled: dict[tuple[int, int], tuple[str, float]]) -> None:
    if cancelled:
        await asyncio.to_thread(restore_intent, services.ledger, name, cancelled)


async def _keep_hold(services: Services, name: str, spec: JobSpec, reason: str, counts: dict[str, Any]) -> None:
    """Jobs a hold found "already done" may be held for spooling only: keep the hold for when that ends."""
    spooling = await asyncio.to_thread(keep_intent, services.schedds[name], services.ledger, name, spec, reason)
    if spooling:
        counts["held_once_spooled"] = spooling
        task = asyncio.get_running_loop().create_task(_look_again(services, name))
        _LOOKING.add(task)
        task.add_done_callback(_LOOKING.discard)


_LOOKING: set[asyncio.Task[None]] = set()  # the tasks below, kept from the garbage collector


async def _look_again(services: Services, name: str) -> None:
    """Polls soon after the schedd should release the jobs (2, 4, 8, 16 s), each within the early-poll budget,
    until no hold is pending; after that the regular polls settle what is left."""
    delay = LOOK_AGAIN_AFTER
    for _ in range(4):
        await asyncio.sleep(delay)
        if not services.ledger.pending_hold_count(name):
            return
        services.polls.poke(name, force=True)
        delay *= 2
