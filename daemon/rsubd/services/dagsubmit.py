"""Submitting a DAG: find its files, stage them flat, submit the DAGMan job, record the DAG and its nodes.

The DAGMan job is an ordinary spooled cluster to the rest of rsubd (intent, submit,
spool, record: services/submission.py), with its staging directory as initialdir;
the ledger's `dags` and `dag_nodes` rows say what it is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

from rsub.wire.vocabulary import ErrorCode, RequestError
from rsubd.dag import discover, stage
from rsubd.dag.dagfile import DagError
from rsubd.services import retrieval
from rsubd.services.dagadopt import adopt
from rsubd.services.submission import Submissions, SubmitOrder

log = structlog.get_logger("rsubd.services.dagsubmit")


@dataclasses.dataclass(frozen=True)
class DagOrder:
    """A DAG submit: the .dag, DAGMan's limit, the access point's condor_dagman, where to stage."""

    dag: str
    dagman: str
    staging_root: Path
    max_jobs: int | None = None
    extra_files: tuple[tuple[str, str], ...] = ()  # (flat name, local path): a rescue's re-spooled files
    rescue_of: int | None = None


def stage_dag(order: DagOrder, instance_id: str) -> stage.Staged:
    """Plan and write the staging directory; DagError when the DAG cannot be spooled."""
    path = Path(order.dag)
    if not path.is_absolute():
        raise DagError(f"the DAG file {order.dag!r} must be named by an absolute path")
    plan = discover.plan(path, node_attrs=(("My.RsubInstance", f'"{instance_id}"'), ("My.RsubDagNode", "true")))
    for home in sorted({str(plan.dag_dir), *(n.home for n in plan.nodes), *(h for _p, h in plan.homes())}):
        # Where the files go home, checked now: the retrieve writes into the staging directory, not there.
        if not os.path.isdir(home):
            raise DagError(f"{home} is not a directory, so the DAG's files could not come home there")
        problem = retrieval.probe(Path(home) / ".rsub-output-check")
        if problem is not None and problem.permanent:
            raise DagError(f"the DAG's files could not come home to {home}: {problem}")
    extra = {}
    for flat, local in order.extra_files:
        if plan.flat.taken(flat) and plan.flat.files.get(flat) != Path(local):
            raise DagError(f"{local}: the rescue would spool it as {flat!r}, a name the DAG already uses")
        extra[flat] = Path(local)
    directory = order.staging_root / uuid.uuid4().hex
    try:
        return stage.write(plan, directory, dagman=order.dagman, max_jobs=order.max_jobs, submitted_at=time.time(),
                           extra_files=extra)
    except OSError as e:
        shutil.rmtree(directory, ignore_errors=True)
        raise DagError(f"cannot stage the DAG's files in {directory}: {e}") from None


async def staged(order: DagOrder, instance_id: str) -> stage.Staged:
    try:
        return await asyncio.to_thread(stage_dag, order, instance_id)
    except DagError as e:
        raise RequestError(ErrorCode.BAD_SUBMIT, str(e)) from None


async def submit(submissions: Submissions, order: SubmitOrder, dag: DagOrder) -> dict[str, Any]:
    """Submit a DAG once per request id; the reply is a submit's, with the DAG's nodes."""
    ledger = submissions.ledger
    existing = ledger.cluster_by_request(order.request_id)
    if existing is not None and existing["state"] != "interrupted":
        result = await submissions.submit(order)  # a retry: the first submit's answer
        adopt(ledger, str(result["schedd"]), [int(result["cluster"])])  # a crash may have cut the DAG's record
        return result
    first = existing["submit_dir"] if existing is not None else None  # an interrupted try's staging directory
    result_dir: stage.Staged = await staged(dag, ledger.instance_id)
    inner = dataclasses.replace(order, description=result_dir.description, cwd=str(result_dir.directory),
                                submit_file=dag.dag, keep_removed=True)
    try:
        result = await submissions.submit(inner)
    except RequestError as e:
        if e.code in (ErrorCode.BAD_SUBMIT, ErrorCode.TOKEN, ErrorCode.BAD_REQUEST, ErrorCode.NOT_FOUND):
            shutil.rmtree(result_dir.directory, ignore_errors=True)  # nothing reached a schedd
        raise
    if first is not None and first != str(result_dir.directory) and stage.read_manifest(Path(first)) is not None:
        shutil.rmtree(first, ignore_errors=True)  # the retry was staged afresh: the first try's copy is not needed
    row = ledger.cluster_by_request(order.request_id)
    if row is not None and row["cluster"] is not None:
        ledger.add_dag(int(row["id"]), schedd=str(row["schedd"]), cluster=int(row["cluster"]), dag_file=dag.dag,
                       staging_dir=str(result_dir.directory), nodes=result_dir.manifest["nodes"],
                       rescue_of=dag.rescue_of)
        log.info("dag.submitted", schedd=row["schedd"], cluster=row["cluster"], dag=dag.dag,
                 nodes=len(result_dir.manifest["nodes"]))
    result["dag"] = {"file": dag.dag, "nodes": [n["name"] for n in result_dir.manifest["nodes"]]}
    return result


async def dry_run(submissions: Submissions, dag: DagOrder) -> dict[str, Any]:
    """What a DAG submit would send: the DAGMan job's description and the files it spools; nothing is sent."""
    result = await staged(dag, submissions.ledger.instance_id)
    try:
        prepared = await submissions.prepare(result.description, str(result.directory), keep_removed=True)
        files = sorted(result.manifest["staged"])
    finally:
        shutil.rmtree(result.directory, ignore_errors=True)
    return {"description": prepared.request.text, "num_procs": 1, "files": files,
            "nodes": [n["name"] for n in result.manifest["nodes"]], "initialdirs": [], "replaced": []}
