"""When jobs fail: a cluster's summary of what its jobs used (`rsub status 12 --summary`), `rsub resubmit`, `rsub why`.

`resubmit` here takes HTCondor cluster and job ids; a DAG's id goes to the DAG's rescue run (handlers/submit.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from rsub.wire.vocabulary import ErrorCode, RequestError, iso
from rsubd.backends.schedd import ScheddError, SlotSource, job_id
from rsubd.handlers.context import Services, check_schedd, rows, selectors
from rsubd.handlers.submit import resubmit_dag
from rsubd.services.rerun import RerunError, parse_overrides
from rsubd.services.resubmit import resubmit_cluster
from rsubd.services.usage import cluster_summary
from rsubd.services.views import fetchlog_files, job_view
from rsubd.services.why import analyse_idle, slot_projection, stderr_tail


def summary(services: Services, ids: list[Any]) -> dict[str, Any]:
    """Each named cluster's jobs by state and exit code, and their usage against the requests."""
    if not ids:
        raise RequestError(ErrorCode.BAD_REQUEST, "name the clusters to summarise: 12 or 12@local")
    out = []
    for sel, text in zip(selectors(services, ids), ids, strict=True):
        found = services.ledger.jobs([sel], limit=1)
        if not found:
            raise RequestError(ErrorCode.NOT_FOUND, f"no job {text} in rsub's ledger")
        schedd, cluster = found[0]["schedd"], found[0]["cluster"]
        rows = list(services.ledger.cluster_jobs(schedd, cluster))
        if sel.proc is not None:
            rows = [r for r in rows if r["proc"] == sel.proc]
        replaced = services.ledger.replacements(schedd, [(r["cluster"], r["proc"]) for r in rows])
        out.append({"id": f"{text.split('@')[0]}@{schedd}", "cluster": cluster, "schedd": schedd,
                    **cluster_summary(rows, replaced)})
    return {"clusters": out}


SELECTS = ("failed", "held", "removed", "exit_nonzero")


def _dag_named(services: Services, ids: list[Any]) -> tuple[str, dict[str, Any]] | None:
    """The id naming a DAG (its DAGMan job's cluster: 12, 12@local, 12.0) and the DAG, if any id does.

    The schedd is the job's own, found as for any id (an id on several schedds is refused as ambiguous).
    """
    for text in ids:
        clusters = sorted({(r["schedd"], r["cluster"]) for r in rows(services, [text])})
        dags = services.ledger.dags_of(clusters)
        if dags and len(clusters) > 1:
            raise RequestError(ErrorCode.BAD_REQUEST, f"{text} is on several schedds "
                               f"({', '.join(s for s, _ in clusters)}); say which, as {text}@{clusters[0][0]}")
        if dags:
            return str(text), next(iter(dags.values()))
    return None


def _exited_badly(r: dict[str, Any]) -> bool:
    return r["state"] == "retrieved" and (r["exit_signal"] is not None or r["exit_code"] not in (None, 0))


def _selected(r: dict[str, Any], select: list[str]) -> bool:
    """`--failed` is every job that did not succeed: held, exited non-zero (or by a signal), or failed."""
    held, bad = r["state"] == "held", _exited_badly(r)
    return any({"held": held, "removed": r["state"] == "removed", "exit_nonzero": bad,
                "failed": held or bad or r["state"] == "failed"}[s] for s in select)


async def resubmit(services: Services, f: dict[str, Any]) -> dict[str, Any]:
    """`rsub resubmit`: the jobs named or selected, run again; one new cluster per old cluster."""
    ids, select, clusters = f.get("ids") or [], f.get("select") or [], f.get("clusters") or []
    if not all(isinstance(s, str) and s in SELECTS for s in select):
        raise RequestError(ErrorCode.BAD_REQUEST, f"select must be among {', '.join(SELECTS)}")
    if not all(type(c) is int and c >= 0 for c in clusters) or not all(isinstance(o, str) for o in
                                                                         f.get("overrides") or []):
        raise RequestError(ErrorCode.BAD_REQUEST, "clusters must be integers and overrides strings")
    if not ids and not select:
        raise RequestError(ErrorCode.BAD_REQUEST, "name the jobs to resubmit (12.17, 12) or choose them with "
                           "--failed, --held, --removed or --exit-nonzero")
    check_schedd(services, f.get("schedd"))
    if named := _dag_named(services, ids):
        text, dag = named
        whole = f"{dag['cluster']}@{dag['schedd']}"
        if len(ids) > 1 or select or f.get("overrides") or "." in str(text).split("@")[0]:
            raise RequestError(ErrorCode.BAD_REQUEST, f"{text} is a DAG's: a DAG is resubmitted alone and whole, as "
                               f"its rescue DAG (the nodes not done): rsub resubmit {whole} "
                               f"(or rsub submit --rescue {dag['cluster']})")
        result = await resubmit_dag(services, dag["cluster"], schedd=dag["schedd"], request_id=f["request_id"])
        return {"clusters": [{**result, "replaces": [], "rescue_of": dag["cluster"]}]}
    try:
        overrides = parse_overrides(f.get("overrides") or [])
    except RerunError as e:
        raise RequestError(ErrorCode.BAD_REQUEST, str(e)) from None
    ledger, request_id = services.ledger, f["request_id"]
    made = {(r["schedd"], int(r["request_id"].rsplit(":", 1)[1])): r for r in ledger.resubmits_of(request_id)}
    found = rows(services, ids) if ids else ledger.rerun_candidates(f.get("schedd"), clusters)
    if select:
        found = [r for r in found if _selected(r, select)]
    # A DAG's DAGMan job is never run again as a plain job (a selector passes over it; its id is its rescue).
    dags = services.ledger.dags_of(list({(r["schedd"], r["cluster"]) for r in found}))
    found = [r for r in found if (r["schedd"], r["cluster"]) not in dags]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {key: [] for key in made}
    for r in found:
        if (r["schedd"], r["cluster"]) in made:
            continue  # this same request made its new cluster already (a retry): that is the answer
        groups.setdefault((r["schedd"], r["cluster"]), []).append(r)
    if not ids:  # a selector passes over jobs already run again; a job named by id is refused
        for (schedd, cluster), group in list(groups.items()):
            if (schedd, cluster) in made:
                continue
            taken = ledger.replacements(schedd, [(r["cluster"], r["proc"]) for r in group])
            groups[(schedd, cluster)] = [r for r in group if (r["cluster"], r["proc"]) not in taken]
    groups = {k: v for k, v in groups.items() if v or k in made}
    if not groups:
        raise RequestError(ErrorCode.NOT_FOUND, "no job to resubmit: none of the selected jobs is held or done "
                           "without having been resubmitted already")
    out = []
    for (schedd, cluster), group in groups.items():
        out.append(await resubmit_cluster(services.submissions, request_id=request_id, schedd=schedd,
                                          cluster=cluster, rows=group, overrides=overrides))
    return {"clusters": out}


async def why(services: Services, ids: list[Any]) -> dict[str, Any]:
    """`rsub why`: for each job named (at most WHY_MAX), why it is where it is."""
    if not ids:
        raise RequestError(ErrorCode.BAD_REQUEST, "name the job: rsub why 12.0")
    return {"jobs": [await _why_one(services, r) for r in rows(services, ids)[:WHY_MAX]]}


WHY_MAX = 20


def _dagman_says(r: dict[str, Any], dag: dict[str, Any]) -> list[str]:
    """Why a DAG's DAGMan job is idle or running: what it is, its nodes as last seen, where to look."""
    import json

    seen = json.loads(dag["progress"] or "{}")
    says = [f"{r['state']}: the DAGMan job of {dag['dag_file']} (scheduler universe: it needs no slot; its nodes "
            f"do: rsub status {r['cluster']}@{r['schedd']} --nodes, and rsub why for a node's job)"]
    if seen.get("total") is not None:  # ledger/dags.py DAG_ATTRS: the DAGMan job's DAG_* by short name
        says.append(f"nodes as last seen: {seen.get('done') or 0} of {seen['total']} done, "
                    f"{seen.get('queued') or 0} queued, {seen.get('failed') or 0} failed")
    if r["state"] == "idle":
        says.append("an idle DAGMan job waits for the schedd to start it again (after a hold, a restart or an "
                    "exit it may retry, a cool-down of up to 300 s unless DisableCoolDown, which rsub sets)")
    return says


async def _why_one(services: Services, r: dict[str, Any]) -> dict[str, Any]:
    name, state = f"{job_id(r['cluster'], r['proc'])}@{r['schedd']}", r["state"]
    out: dict[str, Any] = {"id": name, "state": state}
    dag = services.ledger.dag_by_cluster(r["schedd"], r["cluster"]) if state in ("idle", "running") else None
    if dag is not None:  # a DAGMan job takes no slot: the slots say nothing of it, its nodes do
        return {**out, "says": _dagman_says(r, dag)}
    if state == "idle":
        schedd = services.schedds[r["schedd"]]
        if not isinstance(schedd, SlotSource):
            return {**out, "says": [f"schedd {r['schedd']}'s backend cannot list the pool's slots"]}
        try:
            ad = await asyncio.to_thread(schedd.match_ad, r["cluster"], r["proc"])
            if ad is None:
                return {**out, "says": ["the schedd has it no longer; the next poll learns where it went"]}
            slots = await asyncio.to_thread(schedd.slot_ads, slot_projection(ad))
        except ScheddError as e:
            raise RequestError(ErrorCode.SCHEDD, f"schedd {r['schedd']}: {e}") from None
        analysis = await asyncio.to_thread(analyse_idle, ad, slots)
        return {**out, "says": analysis.pop("says"), "analysis": analysis}
    view = job_view(r)
    says: list[str] = []
    if state == "held":
        says.append(f"held (code {r['hold_code']}): {r['hold_reason'] or 'no reason given'}")
        if view["hold_hint"]:
            says.append(view["hold_hint"])
        if r.get("auto_releases"):
            says.append(f"released automatically {r['auto_releases']} time(s) by the hold policy")
        described = services.ledger.descriptions(r["schedd"], [r["cluster"]]).get(r["cluster"])
        if described is not None:
            files = await asyncio.to_thread(fetchlog_files, described[0], described[1], r["cluster"], [r["proc"]])
            tail = stderr_tail(r["iwd"], files[r["proc"]].get("error"))
            if tail is not None:
                out["stderr_tail"] = tail
    elif state in ("failed", "removed"):
        says.append(f"{state}: {r['error'] or r['remove_reason'] or 'the ledger has no reason'}")
    elif state in ("completed", "retrieved"):
        code = f"signal {r['exit_signal']}" if r["exit_signal"] is not None else f"exit code {r['exit_code']}"
        says.append(f"{state}: it ran and ended with {code}")
    else:
        says.append({"running": "running: it matched a slot and runs",
                     "spooling": "spooling: its input files are being sent to the schedd",
                     "submitting": "submitting: the schedd has not answered the submit yet"}.get(state, state))
    if r.get("replaced_by"):
        says.append(f"resubmitted: {job_id(r['cluster'], r['proc'])} -> {r['replaced_by']}")
    events = services.ledger.events(r["schedd"], r["cluster"], r["proc"])[-5:]
    out["events"] = [{"at": iso(e["at"]), "from": e["from_state"], "to": e["to_state"], "detail": e["detail"]}
                     for e in events]
    return {**out, "says": says}
