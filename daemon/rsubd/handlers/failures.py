"""When jobs fail: a cluster's summary of what its jobs used (`rsub status 12 --summary`), `rsub resubmit`.

`resubmit` here takes HTCondor cluster and job ids; a DAG's id would go to a DAG's rescue instead.
"""

from __future__ import annotations

from typing import Any

from rsub.wire.vocabulary import ErrorCode, RequestError
from rsubd.handlers.context import Services, check_schedd, rows, selectors
from rsubd.services.rerun import RerunError, parse_overrides
from rsubd.services.resubmit import resubmit_cluster
from rsubd.services.usage import cluster_summary


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
    try:
        overrides = parse_overrides(f.get("overrides") or [])
    except RerunError as e:
        raise RequestError(ErrorCode.BAD_REQUEST, str(e)) from None
    ledger, request_id = services.ledger, f["request_id"]
    made = {(r["schedd"], int(r["request_id"].rsplit(":", 1)[1])): r for r in ledger.resubmits_of(request_id)}
    found = rows(services, ids) if ids else ledger.rerun_candidates(f.get("schedd"), clusters)
    if select:
        found = [r for r in found if _selected(r, select)]
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
