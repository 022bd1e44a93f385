"""`rsub resubmit`: run chosen jobs of a cluster again, in the crash-safe order of a submit.

One resubmit makes one new cluster per old cluster, whose request id is the client's plus
the old cluster's (so a retry of the same `rsub resubmit` finds what it made). In order:

1. intent: the new cluster row (state submitting) and one `lineage` row per new proc, in
   one transaction (`resubmit.after_intent`);
2. the replaced jobs still held on the schedd are removed, then recorded removed
   (`resubmit.after_remove`): a held job released later would run the work twice;
3. the earlier outputs of the replaced jobs are set aside as `NAME.rsub-replaced-C.P`,
   never clobbered by the new jobs' (`resubmit.after_set_aside`);
4. the submit itself, as any submit: submit, record, spool, record (submission.run_submit).

Steps 2 and 3 are idempotent, so a retry (or the recovery after a crash, which finishes a
resubmit itself since the jobs it replaces may be gone already) simply runs them again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from rsub.wire.vocabulary import ClusterState, ErrorCode, RequestError
from rsubd.backends.schedd import Action, ScheddError, job_id
from rsubd.ledger.schema import Row
from rsubd.platform.crash import crashpoint
from rsubd.services import retrieval
from rsubd.services.rerun import RerunError, rerun_description
from rsubd.services.submission import Prepared, Submissions
from rsubd.services.views import submitted_view
from rsubd.tokens import scoped

log = structlog.get_logger("rsubd.services.resubmit")
Key = tuple[int, int]
ASIDE = ".rsub-replaced-"
# States a job may be run again from: done (retrieved, removed, failed) or held. Idle and running jobs
# are still the schedd's to run; a completed one's output is on its way home, and would land after.
RERUNNABLE = ("held", "removed", "failed", "retrieved")


def request_id_for(request_id: str, schedd: str, cluster: int) -> str:
    return f"{request_id}:{schedd}:{cluster}"


def check_rerunnable(rows: Sequence[Row], replaced: dict[Key, str]) -> None:
    """BAD_REQUEST naming the first job that cannot be run again, and why."""
    for r in rows:
        name = job_id(r["cluster"], r["proc"])
        if (r["cluster"], r["proc"]) in replaced:
            raise RequestError(ErrorCode.BAD_REQUEST, f"{name} was already resubmitted: {name} -> "
                               f"{replaced[(r['cluster'], r['proc'])]} (resubmit that job instead)")
        if r["state"] == "completed":
            raise RequestError(ErrorCode.BAD_REQUEST, f"{name} completed and its output is on its way home; "
                               "resubmit it once it is retrieved")
        if r["state"] not in RERUNNABLE:
            raise RequestError(ErrorCode.BAD_REQUEST, f"{name} is {r['state']}: only a job that is held or done "
                               f"(retrieved, removed, failed) can be resubmitted; `rsub rm {name}` it first")


async def resubmit_cluster(submissions: Submissions, *, request_id: str, schedd: str, cluster: int,
                           rows: Sequence[Row], overrides: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Run these jobs of one cluster again, once per request id: a retry joins the one in flight or gets its cluster."""
    rid = request_id_for(request_id, schedd, cluster)
    task = submissions.inflight.get(rid)
    if task is None:
        task = asyncio.ensure_future(_resubmit(submissions, rid, schedd, cluster, rows, overrides))
        submissions.inflight[rid] = task
        task.add_done_callback(lambda _t: submissions.inflight.pop(rid, None))
    return await asyncio.shield(task)


async def _resubmit(submissions: Submissions, rid: str, schedd: str, cluster: int, rows: Sequence[Row],
                    overrides: Sequence[tuple[str, str]]) -> dict[str, Any]:
    ledger = submissions.ledger
    existing = ledger.cluster_by_request(rid)
    if existing is not None:
        if existing["state"] == ClusterState.FAILED:
            raise RequestError(ErrorCode.SCHEDD, existing["error"] or "resubmit failed")
        if existing["state"] in (ClusterState.SUBMITTING, ClusterState.SPOOLING):
            raise RequestError(ErrorCode.SCHEDD, "rsubd is finishing this submit (it was interrupted); the schedd "
                               "must answer first: try again shortly, or see `rsub daemon status`")
        if existing["state"] != ClusterState.INTERRUPTED:
            return view(ledger.cluster_row(int(existing["id"])) or existing, ledger.replaced_jobs(int(existing["id"])))
        return await finish(submissions, existing)
    keys = [(int(r["cluster"]), int(r["proc"])) for r in rows]
    check_rerunnable(rows, ledger.replacements(schedd, keys))
    described = ledger.descriptions(schedd, [cluster]).get(cluster)
    if described is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"no submit description for cluster {cluster} in rsub's ledger")
    submitted, submit_dir = described
    if scoped.mentions(submissions.tokens.private_dir, submitted):
        raise RequestError(ErrorCode.BAD_SUBMIT, f"cluster {cluster} was submitted with --need-scope or "
                           "--need-storage-modify, and its token was for that submit alone: nothing was submitted; "
                           "run the same rsub submit ... file:// command again")
    try:
        text = await asyncio.to_thread(rerun_description, submitted, submit_dir, cluster, [p for _, p in keys],
                                       overrides)
    except RerunError as e:
        raise RequestError(ErrorCode.BAD_SUBMIT, str(e)) from None
    prepared = await submissions.prepare(text, submit_dir)
    submissions.check_limits(schedd, prepared.num_procs)  # before the held jobs are removed: never lose them
    crashpoint("resubmit.before_intent")
    row = ledger.add_resubmit_intent(request_id=rid, schedd=schedd, tag=prepared.tag, description=text,
                                     submitted_description=prepared.request.text, submit_dir=submit_dir,
                                     replaces=keys)
    crashpoint("resubmit.after_intent")
    log.info("resubmit.intent", schedd=schedd, cluster=cluster, jobs=len(keys))
    return await _run(submissions, ledger.cluster_row(row) or {}, prepared)


async def finish(submissions: Submissions, row: Row) -> dict[str, Any]:
    """Take up a resubmit whose intent is recorded and whose submit never reached the schedd."""
    prepared = await submissions.prepare(row["description"], row["submit_dir"])
    submissions.check_limits(str(row["schedd"]), prepared.num_procs)
    # restart_submit takes up an interrupted intent: recovery hands over one still `submitting`, whose new
    # tag must be recorded before the schedd hears of it (else a later recovery looks for the old one).
    submissions.ledger.record_interrupted(int(row["id"]), "resubmitting")
    submissions.ledger.restart_submit(int(row["id"]), tag=prepared.tag, submitted_description=prepared.request.text)
    return await _run(submissions, row, prepared)


async def _run(submissions: Submissions, row: Row, prepared: Prepared) -> dict[str, Any]:
    ledger, name = submissions.ledger, str(row["schedd"])
    replaces = ledger.replaced_jobs(int(row["id"]))
    kept = row.get("token_profile")  # the profile the replaced cluster went out with, while it is configured
    profile = kept if kept in submissions.tokens.states else submissions.tokens.choose(
        token=None, group=None, role=None, default=submissions.schedds.get(name))[0]
    held = [r for r in ledger.jobs_by_keys(name, replaces) if r["state"] == "held"]
    if held:
        reason = "rsub resubmit: replaced by a new job"
        try:
            await asyncio.to_thread(submissions.hooks.submitter(name, profile).act, Action.REMOVE,
                                    [job_id(r["cluster"], r["proc"]) for r in held], reason)
        except ScheddError as e:
            # Nothing was submitted: the held jobs stay, and the same resubmit may be tried again.
            submissions.ledger.record_interrupted(int(row["id"]), f"removing the held jobs failed: {e}")
            raise RequestError(ErrorCode.SCHEDD, f"schedd {name}: removing the held jobs to replace failed: {e}; "
                               "nothing was submitted (the same rsub resubmit tries again)") from None
        ledger.record_replaced_removed(name, [(r["cluster"], r["proc"]) for r in held], reason)
    crashpoint("resubmit.after_remove")
    await asyncio.to_thread(set_aside_outputs, submissions, name, replaces)
    crashpoint("resubmit.after_set_aside")
    result = await submissions.run_submit(int(row["id"]), name, profile, prepared)
    return {**result, "replaces": lineage_pairs(replaces, result["cluster"])}


def set_aside_outputs(submissions: Submissions, schedd: str, keys: Sequence[Key]) -> list[str]:
    """Move each replaced job's output files (output, error, transfer_output_files) out of the new one's way."""
    moved: list[str] = []
    by_cluster: dict[int, list[int]] = {}
    for c, p in keys:
        by_cluster.setdefault(c, []).append(p)
    described = submissions.ledger.descriptions(schedd, list(by_cluster))
    for cluster, procs in by_cluster.items():
        if cluster not in described:
            continue
        text, submit_dir = described[cluster]
        try:
            targets = retrieval.output_targets(text, submit_dir, cluster, procs)
        except Exception:  # noqa: BLE001 - a description that no longer parses has no outputs to move
            log.warning("resubmit.outputs_unknown", schedd=schedd, cluster=cluster)
            continue
        for proc, paths in targets.items():
            for path in paths:
                aside = Path(f"{path}{ASIDE}{cluster}.{proc}")
                try:
                    if path.is_file() and not aside.exists():
                        os.replace(path, aside)
                        moved.append(str(aside))
                except OSError as e:
                    log.warning("resubmit.set_aside_failed", path=str(path), error=e.strerror)
    if moved:
        log.info("resubmit.set_aside", schedd=schedd, files=len(moved))
    return moved


def lineage_pairs(replaces: Sequence[Key], cluster: int | None) -> list[dict[str, str]]:
    return [{"old": job_id(*k), "new": "pending" if cluster is None else job_id(cluster, n)}
            for n, k in enumerate(replaces)]


def view(row: Row, replaces: Sequence[Key]) -> dict[str, Any]:
    return {**submitted_view(row, replaced=()), "replaces": lineage_pairs(replaces, row.get("cluster"))}
