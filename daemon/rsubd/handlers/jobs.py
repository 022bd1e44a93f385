"""The reading requests and retrieve: status, history, fetchlog, wait, retrieve."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import structlog

from rsub.wire.protocol import TABLE_COLUMNS
from rsub.wire.vocabulary import ACTIVE_STATES, FINAL_STATES, STATES, ErrorCode, RequestError
from rsubd.backends.schedd import MAX_ID, ScheddError, job_id
from rsubd.handlers.context import Services, check_schedd, parse_selector, rows, seconds_field, selectors, shows
from rsubd.ledger.store import JobSelector, Ledger
from rsubd.services import dagviews, retrieval, views
from rsubd.services.views import BRIEF_COLUMNS, brief_view, fetchlog_files, job_view, jobsub_view, owner, submit_view

SUBMITS_HISTORY_DAYS = 30  # how far back `rsub history` shows submits that made no job
log = structlog.get_logger("rsubd.handlers")


def _filters(services: Services, f: dict[str, Any]) -> dict[str, Any]:
    """The filters of a status or history request, checked, as `Ledger.job_page` takes them."""
    states = f.get("states") or []
    if not all(isinstance(s, str) and s in STATES for s in states):
        raise RequestError(ErrorCode.BAD_REQUEST, f"states must be among {', '.join(STATES)}")
    schedd = f.get("schedd")
    check_schedd(services, schedd)
    clusters = f.get("clusters") or []
    if not all(type(c) is int and 0 <= c <= MAX_ID for c in clusters):
        raise RequestError(ErrorCode.BAD_REQUEST, f"clusters must be integers from 0 to {MAX_ID}")
    now = time.time()
    since, older = seconds_field(f.get("since"), "since"), seconds_field(f.get("older_than"), "older_than")
    return {
        "states": list(dict.fromkeys(states)), "schedd": schedd, "clusters": list(dict.fromkeys(clusters)),
        "submitted_after": None if since is None else now - since,
        "submitted_before": None if older is None else now - older,
    }


def status(services: Services, f: dict[str, Any], *, active: bool = False, history: bool = False) -> dict[str, Any]:
    """Jobs by id and filters, one page, with their jobsub view; history: final states only, newest first.

    `total` counts the jobs the filters match and `truncated` says whether the page left some out
    (limit 0: as many as a reply may hold, `page_max`). A page cut short keeps the newest jobs.
    """
    cfg, ledger = services.config, services.ledger
    ids = f.get("ids") or []
    asked = f.get("limit", cfg.page_default)
    if type(asked) is not int or asked < 0:
        raise RequestError(ErrorCode.BAD_REQUEST, "limit must be an integer >= 0 (0: all)")
    limit = min(asked or cfg.page_max, cfg.page_max)
    offset = min(max(0, f.get("offset", 0)), 2**62)
    sels = selectors(services, ids)
    filters = _filters(services, f)
    # `rsub q 12` shows cluster 12 whatever its state, as it always has; history is final states only.
    scope = FINAL_STATES if history else ACTIVE_STATES if active and not ids else None
    if scope is not None:
        filters["states"] = [s for s in filters["states"] or scope if s in scope]
        if not filters["states"]:  # asked only for states this view never shows
            return _nothing(services, f)
    group, user = f.get("group"), f.get("user")
    if user is not None and user != owner():  # every job rsubd submits is its own user's
        return _nothing(services, f)
    table = bool(f.get("rows"))  # rsub q and rsub history: the table's values, as lists under one header
    brief = table or bool(f.get("brief"))  # what the table shows: a few of each row's columns
    columns = BRIEF_COLUMNS if brief else ()
    found, total = _page(services, sels, filters, group=group, history=history, limit=limit, offset=offset,
                         columns=columns)
    for sel, text in zip(sels, ids, strict=True):
        # Filters or the page may leave a job out; only a job the ledger lacks is an error.
        if not shows(found, sel) and not ledger.jobs([sel], limit=1):
            raise RequestError(ErrorCode.NOT_FOUND, f"no job {text} in rsub's ledger")
    facts = services.facts.get(r["cluster_row"] for r in found)
    now, me = time.time(), owner()
    page: dict[str, Any]
    if table:
        page = {"columns": TABLE_COLUMNS, "rows": _table(ledger, found, facts, me, now, nodes=bool(f.get("nodes")))}
    else:
        view = brief_view if brief else job_view
        jobs = [{**view(r), "jobsub": jobsub_view(r, facts.get(r["cluster_row"], {}), me, now)} for r in found]
        page = {"jobs": dagviews.annotate(ledger, jobs, nodes=bool(f.get("nodes")))}
    reply = {**page, "total": total, "truncated": offset + len(found) < total, "schedds": services.polls.freshness()}
    if not ids and not offset and not f.get("clusters") and (submits := _submits(services, f, history, now)):
        reply["submits"] = submits
    return reply


def _nothing(services: Services, f: dict[str, Any]) -> dict[str, Any]:
    """The reply of a request no job can match."""
    page: dict[str, Any] = {"columns": TABLE_COLUMNS, "rows": []} if f.get("rows") else {"jobs": []}
    return {**page, "total": 0, "truncated": False, "schedds": services.polls.freshness()}


def _page(services: Services, sels: list[JobSelector], filters: dict[str, Any], *, group: str | None, history: bool,
          limit: int, offset: int, columns: tuple[str, ...]) -> tuple[list[dict[str, Any]], int]:
    """The page's rows (with their lineage) and how many jobs the filters match: kept until the ledger changes."""
    ledger, cache = services.ledger, services.pages
    timeless = filters["submitted_after"] is None and filters["submitted_before"] is None  # else it moves with now
    key = (tuple(sels), repr(filters), group, history, limit, offset, columns)
    generation = ledger.generation()
    if timeless and (kept := cache.get(generation, key)) is not None:
        return kept
    if group is None:
        found = ledger.job_page(sels, **filters, newest_first=history, limit=limit, offset=offset, columns=columns)
        # A page that is not full holds every job left: count only when it may not.
        total = len(found) if len(found) < limit and not offset else ledger.job_count(sels, **filters)
    else:  # the group is in the submitted description, not a column: filter the widest page, then cut it
        wide = ledger.job_page(sels, **filters, newest_first=history, limit=services.config.page_max, offset=0,
                               columns=columns)
        groups = services.facts.get(r["cluster_row"] for r in wide)
        matched = [r for r in wide if groups.get(r["cluster_row"], {}).get("group") == group]
        total, found = len(matched), matched[offset:offset + limit]
    ledger.lineage_of(found)
    if timeless:
        cache.put(generation, key, found, total)
    return found, total


def _table(ledger: Ledger, found: list[dict[str, Any]], facts: dict[int, dict[str, Any]], me: str, now: float, *,
           nodes: bool) -> list[list[Any]]:
    """The rows of a `rows` reply (protocol.TABLE_COLUMNS); a DAG's progress goes in its row's "more"."""
    table = [views.table_row(r, facts.get(r["cluster_row"], {}), me, now) for r in found]
    firsts = {i: {"schedd": r["schedd"], "cluster": r["cluster"], "proc": 0} for i, r in enumerate(found)
              if r["proc"] == 0}
    for i, view in zip(firsts, dagviews.annotate(ledger, list(firsts.values()), nodes=nodes), strict=True):
        if "dag" in view:
            table[i][-1] = {**(table[i][-1] or {}), "dag": view["dag"]}
    return table


def _submits(services: Services, f: dict[str, Any], history: bool, now: float) -> list[dict[str, Any]]:
    """Submits that made no job (cut off, interrupted, refused): the job views would not show them otherwise.

    The last day's in `rsub q`/`status`, the last SUBMITS_HISTORY_DAYS' in `rsub history`.
    """
    since = now - (SUBMITS_HISTORY_DAYS if history else 1) * 86400
    states = set(f.get("states") or ())
    if states and not states & {"failed", "submitting"}:
        return []  # asked for job states no submit without jobs has
    return [submit_view(r) for r in services.ledger.submits_without_jobs(since=since, schedd=f.get("schedd"))]


async def fetchlog(services: Services, text: str) -> dict[str, Any]:
    """What `rsub fetchlog` packs: each job's iwd and files, and the cluster's submitted description."""
    found = rows(services, [text])
    schedds = sorted({r["schedd"] for r in found})
    if len(schedds) > 1:
        raise RequestError(ErrorCode.BAD_REQUEST, f"{text} is on several schedds ({', '.join(schedds)}); "
                           f"say which, as {text}@{schedds[0]}")
    schedd, cluster = schedds[0], found[0]["cluster"]
    described = services.ledger.descriptions(schedd, [cluster]).get(cluster)
    if described is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"no submit description for cluster {cluster} in rsub's ledger")
    description, submit_dir = described
    files = await asyncio.to_thread(fetchlog_files, description, submit_dir, cluster, [r["proc"] for r in found])
    whole = parse_selector(text, list(services.schedds)).proc is None
    return {
        "id": f"{cluster}@{schedd}" if whole else f"{job_id(cluster, found[0]['proc'])}@{schedd}",
        "cluster": cluster, "schedd": schedd, "submitted_description": description,
        "jobs": [{"id": f"{job_id(r['cluster'], r['proc'])}@{schedd}", "proc": r["proc"], "state": r["state"],
                  "iwd": r["iwd"], "files": files[r["proc"]]} for r in found],
    }


async def wait(services: Services, ids: list[Any], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + max(0.0, min(timeout, services.config.max_wait))
    for name in {r["schedd"] for r in rows(services, ids)}:
        services.polls.poke(name)
    while True:
        found = rows(services, ids)
        # A job that needs a person is as far as rsubd can take it alone: the wait ends.
        # A DAG ends once its files are home, after its DAGMan job's own end (a removed one's is at once).
        if all(r["state"] in FINAL_STATES or r.get("attention") is not None for r in found) \
                and not dagviews.unplaced(services.ledger, found):
            return {"done": True, "attention": sum(r.get("attention") is not None for r in found),
                    "jobs": dagviews.annotate(services.ledger, [job_view(r) for r in found])}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return {"done": False, "jobs": dagviews.annotate(services.ledger, [job_view(r) for r in found])}
        await services.polls.wait_for_poll(remaining)


async def retrieve(services: Services, ids: list[Any], dest: str | None) -> dict[str, Any]:
    """`rsub retrieve`: fetch completed jobs' output now, into each job's own directory or into `dest`."""
    if not ids:
        raise RequestError(ErrorCode.BAD_REQUEST, "name the jobs to retrieve: ids like 12, 12.0 or 12.0@local")
    if dest is not None:
        if not os.path.isabs(dest):
            raise RequestError(ErrorCode.BAD_REQUEST, f"--dest must be an absolute path, not {dest!r}")
        problem = retrieval.probe(Path(dest) / ".rsub-dest")
        if problem is not None:
            raise RequestError(ErrorCode.BAD_REQUEST, f"--dest {dest}: {problem}")
    found = rows(services, ids)
    not_ready = [r for r in found if r["state"] != "completed"]
    if not_ready and len(not_ready) == len(found):
        r = not_ready[0]
        where = f" (in {r['retrieved_to'] or r['iwd']})" if r["state"] == "retrieved" else ""
        raise RequestError(ErrorCode.BAD_REQUEST, f"{len(not_ready)} job(s) have no output waiting on the"
                           f" schedd: {job_id(r['cluster'], r['proc'])}@{r['schedd']} is {r['state']}{where}")
    by_schedd: dict[str, list[tuple[int, int]]] = {}
    for r in found:
        if r["state"] == "completed":
            by_schedd.setdefault(r["schedd"], []).append((r["cluster"], r["proc"]))
    if dest is not None:
        await asyncio.to_thread(os.makedirs, dest, 0o700, True)
    summary: dict[str, Any] = {}
    for name, keys in by_schedd.items():
        try:
            result = await asyncio.to_thread(services.pollers[name].retrieve_now, keys, dest=dest)
        except ScheddError as e:
            raise RequestError(ErrorCode.SCHEDD, f"schedd {name}: {e}") from None
        summary[name] = {k: [f"{job_id(*key)}@{name}" for key in v] for k, v in result.items()}
        log.info("jobs.retrieve_requested", schedd=name, jobs=len(keys), dest=dest,
                 retrieved=len(result["retrieved"]), failed=len(result["failed"]))
        services.polls.poke(name, force=True)
    jobs = [job_view(r) for r in rows(services, ids)]
    return {"schedds": summary, "skipped": [f"{job_id(r['cluster'], r['proc'])}@{r['schedd']}" for r in not_ready],
            "dest": dest, "jobs": jobs}
