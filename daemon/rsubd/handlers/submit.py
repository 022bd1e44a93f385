"""submit: the whole workflow is services.submission's (a DAG's, services.dagsubmit's); this only reads the request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rsubd.handlers.context import Services, check_schedd
from rsubd.services import dagrescue, dagsubmit, eventlog
from rsubd.services.submission import SubmitOrder


def dag_order(services: Services, f: dict[str, Any]) -> dagsubmit.DagOrder:
    check_schedd(services, f.get("schedd"))
    name = f.get("schedd") or next(iter(services.schedds))
    extra: tuple[tuple[str, str], ...] = ()
    if f.get("rescue_of") is not None:
        name, f["dag"], extra = dagrescue.rescue_files(services.ledger, f.get("schedd"), f["rescue_of"])
        f["schedd"] = name
    return dagsubmit.DagOrder(dag=f["dag"], dagman=services.config.schedd(name).dagman,
                              staging_root=services.config.state_dir / "dags", max_jobs=f.get("max_jobs"),
                              rescue_of=f.get("rescue_of"), extra_files=extra)


async def submit(services: Services, f: dict[str, Any]) -> dict[str, Any]:
    if f.get("dag") or f.get("rescue_of") is not None:
        dag = dag_order(services, f)  # a rescue: the DAG's own file, and its schedd
        return await dagsubmit.submit(services.submissions, SubmitOrder.from_fields(f), dag)
    return await services.submissions.submit(SubmitOrder.from_fields(f))


async def dry_run(services: Services, f: dict[str, Any]) -> dict[str, Any]:
    """`rsub submit --dry-run`: what a submit would send, after every check a submit makes; nothing is sent."""
    check_schedd(services, f.get("schedd"))
    name = f.get("schedd") or next(iter(services.schedds))
    if f.get("dag"):
        return {"schedd": name, **await dagsubmit.dry_run(services.submissions, dag_order(services, f))}
    prepared = await services.submissions.prepare(f["description"], f["cwd"])  # a refusal: exit 5, as a submit
    services.submissions.check_limits(name, prepared.num_procs)
    return {"schedd": name, "description": prepared.request.text, "num_procs": prepared.num_procs,
            "initialdirs": sorted(set(prepared.iwds)), "replaced": list(prepared.replaced),
            "jobs": per_job(prepared.procs, DRY_RUN_JOBS),
            "jobs_not_listed": max(0, prepared.num_procs - DRY_RUN_JOBS)}


DRY_RUN_JOBS = 1000  # jobs listed one by one in a dry run's reply; a reply must stay well under a frame


def per_job(procs: Sequence[Mapping[str, str]], limit: int) -> list[dict[str, Any]]:
    """Each job's own values, as condor_submit -dry-run lists each job: the commands that differ between jobs.

    The description sent carries them as item data of one queue statement, which is hard to read. The
    first `limit` jobs are listed, with what differs across all of them. A job's `log` is the user's
    (rsub sends each proc's under a name of its own, services/eventlog.py).
    """
    mine = [{**{k: v for k, v in p.items() if k != eventlog.LOG_MACRO}, "log": p[eventlog.LOG_MACRO]}
            if eventlog.LOG_MACRO in p else p for p in procs]
    keys = sorted({k for p in mine for k in p})
    varying = [k for k in keys if len({p.get(k) for p in mine}) > 1]
    return [{"proc": n, "commands": {k: p[k] for k in varying if k in p}} for n, p in enumerate(mine[:limit])]


async def resubmit_dag(services: Services, cluster: int, *, schedd: str | None, request_id: str,
                       max_jobs: int | None = None) -> dict[str, Any]:
    """Rerun DAG `cluster` from its rescue file (`rsub submit --rescue 12`; `rsub resubmit 12` for a DAG)."""
    f: dict[str, Any] = {"request_id": request_id, "description": "", "cwd": "/", "schedd": schedd,
                         "rescue_of": cluster, "max_jobs": max_jobs}
    return await submit(services, f)
