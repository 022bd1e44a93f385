"""The kill harness's final audit: the clients' word, rsub's ledger, the schedd's queue and the files.

Everything here reads: the ledger and the embedded scheduler's queue are opened
read-only with sqlite3 (after rsubd has stopped), the outputs with plain reads.
Each finding is counted under one figure of the report and described in
`problems`, so a broken target says which job, which file, which cluster.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from rsub.wire.vocabulary import FINAL_STATES as FINAL
from tools.crash_workload import Submission, check_outputs

LEFTOVER_MARKS = (".rsub-kept-", ".rsub-new", ".rsub-refetched-", ".rsub-partial")
HELD, COMPLETED, REMOVED, SPOOLING_INPUT = 5, 4, 3, 16


def read_only(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    db.row_factory = sqlite3.Row
    return db


def ledger_rows(ledger: Path, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """Rows of a query on rsub's ledger, opened read-only ([] if it cannot be read yet)."""
    try:
        with closing(read_only(ledger)) as db:
            return [dict(r) for r in db.execute(sql, tuple(args))]
    except sqlite3.Error:
        return []


def schedd_jobs(queue_db: Path) -> Iterator[tuple[str, int, int, dict[str, Any]]]:
    """("queue" | "history", cluster, proc, full ad) for every job the embedded schedd holds or held."""
    with closing(read_only(queue_db)) as db:
        clusters = {r["cluster"]: json.loads(r["ad"]) for r in db.execute("SELECT cluster, ad FROM clusters")}
        for r in db.execute("SELECT cluster, proc, ad FROM jobs"):
            yield "queue", r["cluster"], r["proc"], {**clusters.get(r["cluster"], {}), **json.loads(r["ad"])}
        for r in db.execute("SELECT cluster, proc, ad FROM history ORDER BY seq DESC"):
            yield "history", r["cluster"], r["proc"], json.loads(r["ad"])


class Audit:
    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.problems: list[str] = []

    def flag(self, figure: str, text: str, n: int = 1) -> None:
        self.counts[figure] += n
        if len(self.problems) < 200:
            self.problems.append(f"{figure}: {text}")


def audit(submissions: list[Submission], ledger: Path, queue_db: Path, status_jobs: list[dict[str, Any]],
          work: Path) -> tuple[dict[str, int], list[str]]:
    a = Audit()
    for figure in ("clusters_submitted", "jobs_submitted", "jobs_seen_by_schedd", "jobs_retrieved", "jobs_removed",
                   "outputs_verified", "lost", "duplicates", "outputs_missing_or_wrong", "marked_without_output",
                   "schedd_held_spooling", "schedd_retrieved_not_marked", "schedd_jobs_left_in_queue",
                   "leftover_files", "submits_failed", "submits_not_sent", "submits_unfinished",
                   "clusters_replaced", "ledger_unfinished"):
        a.counts[figure] = 0
    clusters = ledger_rows(ledger, "SELECT id, request_id, schedd, cluster, state, error, submit_dir, num_procs"
                                   " FROM clusters ORDER BY id")
    jobs = {(j["cluster"], j["proc"]): j for j in ledger_rows(ledger, "SELECT * FROM jobs")}
    by_dir: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in clusters:
        by_dir[c["submit_dir"]].append(c)
    status = {(j["cluster"], j["proc"]): j for j in status_jobs}
    seen: dict[tuple[int, int], tuple[str, dict[str, Any]]] = {}
    for where, cluster, proc, ad in schedd_jobs(queue_db):
        seen.setdefault((cluster, proc), (where, ad))  # queue first, then history newest first
    schedd_by_dir: dict[str, set[int]] = defaultdict(set)
    for (cluster, _proc), (_where, ad) in seen.items():
        schedd_by_dir[str(ad.get("SUBMIT_Iwd") or ad.get("Iwd") or "")].add(cluster)
    a.counts["jobs_seen_by_schedd"] = len(seen)
    a.counts["clusters_replaced"] = sum(1 for c in clusters if c["state"] == "replaced")
    for c in clusters:
        if c["state"] in ("submitting", "spooling", "interrupted"):
            a.flag("ledger_unfinished", f"ledger cluster row {c['id']} ({c['submit_dir']}) left {c['state']}: "
                   f"{c['error'] or ''}")

    for s in submissions:
        _audit_submission(a, s, by_dir.get(str(s.directory), []), schedd_by_dir.get(str(s.directory), set()),
                          jobs, status, seen)

    # Every job the ledger calls retrieved must have its output in place, whoever submitted it.
    dirs = {str(s.directory): s for s in submissions}
    for (cluster, proc), j in jobs.items():
        if j["state"] != "retrieved":
            continue
        owner = dirs.get(j["iwd"] or "")
        if owner is None:
            a.flag("marked_without_output", f"job {cluster}.{proc} retrieved into unknown dir {j['iwd']}")
            continue
        missing, _wrong = check_outputs(owner.directory, cluster, proc)
        if missing:
            a.flag("marked_without_output", f"job {cluster}.{proc} is retrieved in the ledger but {missing} absent")
        where_ad = seen.get((cluster, proc))
        if where_ad is not None and where_ad[0] == "queue" and where_ad[1].get("RETRIEVED") is not True:
            a.flag("schedd_retrieved_not_marked", f"job {cluster}.{proc} retrieved but still queued "
                   f"without RETRIEVED = true")

    for (cluster, proc), (where, ad) in seen.items():
        if where != "queue":
            continue
        a.flag("schedd_jobs_left_in_queue", f"job {cluster}.{proc} still queued, JobStatus {ad.get('JobStatus')}")
        if ad.get("JobStatus") == HELD and ad.get("HoldReasonCode") == SPOOLING_INPUT:
            a.flag("schedd_held_spooling", f"job {cluster}.{proc} left held with code 16 ({ad.get('SUBMIT_Iwd')})")

    for path in work.rglob("*"):
        if any(mark in path.name for mark in LEFTOVER_MARKS):
            a.flag("leftover_files", str(path))
    return dict(a.counts), a.problems


def _audit_submission(a: Audit, s: Submission, rows: list[dict[str, Any]], schedd_clusters: set[int],
                      jobs: dict[tuple[int, int], dict[str, Any]], status: dict[tuple[int, int], dict[str, Any]],
                      seen: dict[tuple[int, int], tuple[str, dict[str, Any]]]) -> None:
    replaced = [r for r in rows if r["state"] == "replaced"]
    live = [r for r in rows if r["state"] != "replaced" and r["cluster"] is not None]
    replaced_clusters = {r["cluster"] for r in replaced}
    for r in replaced:  # removed by rsub itself, with a reason; never run and brought home
        for p in range(r["num_procs"] or 0):
            j = jobs.get((r["cluster"], p))
            if j is None or j["state"] != "removed" or not j["remove_reason"]:
                a.flag("duplicates", f"replaced cluster {r['cluster']} job {p} is "
                       f"{j and j['state']} (reason {j and j['remove_reason']!r})")
            ad = seen.get((r["cluster"], p), ("", {}))[1]
            if ad.get("CompletionDate") or ad.get("StageOutFinish") or ad.get("JobStatus") == COMPLETED:
                a.flag("duplicates", f"replaced cluster {r['cluster']} job {p} ran to completion on the schedd")
    if s.outcome == "pending":
        a.flag("submits_unfinished", f"{s.directory}: the client never finished")
        return
    if s.outcome == "not_sent":
        a.counts["submits_not_sent"] += 1
        if live or schedd_clusters:
            a.flag("duplicates", f"{s.directory}: the client was told rsubd was not running, yet clusters "
                   f"{sorted(schedd_clusters)} exist (ledger {[r['cluster'] for r in live]})")
        return
    if s.outcome == "failed":
        a.flag("submits_failed", f"{s.directory}: {s.message}")
        ran = [r["cluster"] for r in live if r["state"] != "failed"]
        if ran:
            a.flag("duplicates", f"{s.directory}: the client was told the submit failed, yet cluster(s) {ran} "
                   f"went ahead")
        return
    assert s.cluster is not None
    a.counts["clusters_submitted"] += 1
    a.counts["jobs_submitted"] += s.procs
    if len(live) > 1:
        a.flag("duplicates", f"{s.directory}: one request, clusters {[r['cluster'] for r in live]} in the ledger")
    if not any(r["cluster"] == s.cluster for r in live):
        a.flag("lost", f"{s.directory}: the client got cluster {s.cluster}, the ledger has "
               f"{[(r['cluster'], r['state']) for r in rows]}", s.procs)
    extra = schedd_clusters - {s.cluster} - replaced_clusters
    if extra:
        a.flag("duplicates", f"{s.directory}: the schedd also has cluster(s) {sorted(extra)} for this submit")
    for p in range(s.procs):
        j = status.get((s.cluster, p))
        if j is None:
            a.flag("lost", f"job {s.cluster}.{p} is not in rsub status")
            continue
        state = j["state"]
        if state not in FINAL:
            a.flag("lost", f"job {s.cluster}.{p} never became final: {state} ({j.get('hold_reason')})")
        elif state == "failed":
            a.flag("lost", f"job {s.cluster}.{p} failed: {j.get('error')}")
        elif state == "removed":
            if s.rm_attempted:
                a.counts["jobs_removed"] += 1
            else:
                a.flag("lost", f"job {s.cluster}.{p} removed though nobody asked: {j.get('remove_reason')}")
        else:
            a.counts["jobs_retrieved"] += 1
            missing, wrong = check_outputs(s.directory, s.cluster, p)
            if missing or wrong:
                a.flag("outputs_missing_or_wrong", f"job {s.cluster}.{p}: missing {missing}, wrong {wrong}")
            else:
                a.counts["outputs_verified"] += 1
