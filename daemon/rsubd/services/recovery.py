"""Finishing or undoing the submits rsubd was in the middle of when it stopped.

The ledger records a submit's intent before the schedd hears of it, then each
outcome (cluster made, input spooled). A submit found between intent and
outcome is settled against the schedd, which is the truth (docs/protocol.md):

- no cluster recorded: the jobs are looked up by rsub's tag (`RsubId`). None:
  the schedd never received the submit; the intent is marked interrupted and a
  retry with the same request id submits it. Found: the cluster is recorded.
- cluster recorded, spool not: if its jobs still wait for their input (held with
  HoldReasonCode 16), nobody can spool them any more (the bindings keep what
  spool needs inside the process that submitted), so they are removed and the
  description submitted once more (`unspooled = "resubmit"`, the default), or
  left held and reported (`"report"`). After three resubmissions cut the same
  way, the cluster is removed and the submit reported failed.
  Otherwise the spool did happen, and is recorded.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from rsub.wire.vocabulary import ClusterState, ErrorCode, RequestError
from rsubd.backends.schedd import Action, HoldCode, JobStatus, Schedd, job_id
from rsubd.dag import stage
from rsubd.ledger.store import Ledger
from rsubd.platform.crash import crashpoint
from rsubd.services import dagadopt, resubmit
from rsubd.services.submission import ASKING, Prepared, Submissions
from rsubd.tokens import scoped

log = structlog.get_logger("rsubd.services.recovery")


def _is_dag(submit_dir: str) -> bool:
    """A DAG's submit directory is its staging directory, which holds the manifest (dag/stage.py)."""
    return (Path(submit_dir) / stage.MANIFEST).is_file()
PROJECTION = ("ClusterId", "ProcId", "JobStatus", "HoldReasonCode", "SUBMIT_Iwd", "Iwd")


def _unspooled(ad: dict[str, Any]) -> bool:
    return ad.get("JobStatus") == JobStatus.HELD and ad.get("HoldReasonCode") == HoldCode.SPOOLING_INPUT


async def recover_submits(submissions: Submissions, schedd: Schedd, name: str, *, unspooled: str = "resubmit",
                          max_resubmits: int = 3) -> int:
    """Settle every unfinished submit on one schedd; returns how many. ScheddError if the schedd does not answer.

    `unspooled` is the config's choice for a cluster never spooled ("resubmit" or "report");
    `max_resubmits` how often such a cluster is submitted again before it is removed and reported.
    """
    return await _Recovery(submissions, submissions.ledger, schedd, name, unspooled, max_resubmits).run()


@dataclass
class _Recovery:
    submissions: Submissions
    ledger: Ledger
    schedd: Schedd
    name: str
    unspooled: str
    max_resubmits: int

    async def run(self) -> int:
        ledger, schedd, name = self.ledger, self.schedd, self.name
        # A submit running in this process right now is not unfinished, only unfinished yet.
        rows = [r for r in ledger.unfinished_submits(name) if r["request_id"] not in self.submissions.inflight]
        for row in rows:
            if row["state"] == ClusterState.REPLACING:
                # Its replacement is recorded; the remove of the old, unspooled jobs may not have happened.
                await self._remove(row)
                continue
            if row["cluster"] is None:
                ads = await asyncio.to_thread(schedd.query, f'RsubId == "{row["tag"]}"', PROJECTION)
                crashpoint("recover.after_schedd")
                if not ads:
                    if ledger.replaced_jobs(row["id"]):
                        # A resubmit: the jobs it replaces may be removed already, so rsubd finishes it itself.
                        await self._finish_resubmit(row)
                        continue
                    if ledger.replaced_count(row["request_id"]):
                        # rsub's own resubmission, cut short: no client waits to retry it, so rsubd does.
                        await self._submit_again(row)
                        continue
                    what = (row["error"].removesuffix(ASKING) if row["error"] else
                            "rsubd stopped before the schedd received this submit")
                    ledger.record_interrupted(row["id"], f"{what}; the schedd has no job of it, so nothing was "
                                              "submitted (running the same rsub submit again submits it)")
                    if _is_dag(row["submit_dir"]):  # a DAG submitted again is staged afresh from the user's files
                        shutil.rmtree(row["submit_dir"], ignore_errors=True)
                    log.warning("recovery.interrupted", schedd=name, request_id=row["request_id"])
                    continue
                cluster = int(ads[0]["ClusterId"])  # type: ignore[arg-type]  # an ad's values are untyped
                procs = sorted((int(a["ProcId"]),  # type: ignore[arg-type]  # an ad's values are untyped
                                str(a.get("SUBMIT_Iwd") or a.get("Iwd") or "")) for a in ads)
                ledger.record_submitted(row["id"], cluster, procs)
                dagadopt.adopt(ledger, name, [cluster])  # a DAG's cluster is a DAG again (its staging manifest)
                crashpoint("recover.after_record")
                log.warning("recovery.found_cluster", schedd=name, cluster=cluster, procs=len(procs))
            else:
                cluster = int(row["cluster"])
                ads = await asyncio.to_thread(schedd.query, f"ClusterId == {cluster}", PROJECTION)
                crashpoint("recover.after_schedd")
            if ads and all(_unspooled(a) for a in ads):
                await self._unspooled_cluster(row, cluster,
                                              [int(a["ProcId"]) for a in ads])  # type: ignore[arg-type]  # untyped ad
            else:
                # Spooled (or already gone, which the next poll learns from history).
                ledger.record_spooled(row["id"])
                crashpoint("recover.after_record")
                log.info("recovery.spooled", schedd=name, cluster=cluster)
        return len(rows)

    async def _unspooled_cluster(self, row: dict[str, Any], cluster: int, procs: list[int]) -> None:
        ledger, schedd, name = self.ledger, self.schedd, self.name
        attempts = ledger.replaced_count(row["request_id"])
        if self.unspooled == "report":
            message = (f"cluster {cluster} was submitted but its input files were never spooled (rsubd stopped in "
                       f"between); its jobs wait, held with code 16: `rsub rm {cluster}@{name}` and submit again")
            ledger.record_submit_failed(row["id"], message)
            log.error("recovery.unspooled_reported", schedd=name, cluster=cluster)
            return
        if attempts >= self.max_resubmits:
            message = (f"cluster {cluster} was never spooled, and neither were its {attempts} resubmissions (rsubd "
                       "kept stopping in between); it was removed: submit it again")
            await asyncio.to_thread(schedd.act, Action.REMOVE, [job_id(cluster, p) for p in procs], f"rsub: {message}")
            ledger.record_submit_failed(row["id"], message)
            log.error("recovery.gave_up", schedd=name, cluster=cluster, attempts=attempts)
            return
        if scoped.mentions(self.submissions.tokens.private_dir, row["submitted_description"] or ""):
            # Its token of its own (--need-scope) is not kept: a resubmit would send the job without it.
            message = (f"cluster {cluster} was never spooled, and it had a token of its own (--need-scope), which "
                       "rsubd does not keep; it was removed: submit it again")
            await asyncio.to_thread(schedd.act, Action.REMOVE, [job_id(cluster, p) for p in procs], f"rsub: {message}")
            ledger.record_submit_failed(row["id"], message)
            return
        reason = f"rsub: rsubd stopped between submit and spool; cluster {cluster} is submitted again"
        try:
            prepared = await self.submissions.prepare(row["description"], row["submit_dir"],
                                                      keep_removed=_is_dag(row["submit_dir"]))
        except RequestError as e:  # the input files are gone since: nothing to submit again
            await asyncio.to_thread(schedd.act, Action.REMOVE, [job_id(cluster, p) for p in procs],
                                    f"rsub: {e.message}")
            ledger.record_submit_failed(row["id"], f"cluster {cluster} was never spooled and cannot be submitted "
                                        f"again: {e.message}")
            return
        # The replacement is recorded before the old jobs are removed: a crash in between leaves a
        # 'replacing' row whose remove the next recovery repeats, and an intent it submits.
        new_row = ledger.replace_with_intent(row["id"], reason, tag=prepared.tag,
                                             submitted_description=prepared.request.text)
        crashpoint("recover.after_record")
        replaced = ledger.cluster_row(row["id"])
        assert replaced is not None
        await self._remove(replaced)
        await self._run(new_row, prepared, old_cluster=cluster)

    async def _remove(self, row: dict[str, Any]) -> None:
        """Remove a replaced cluster's jobs from the schedd, then record it replaced."""
        await asyncio.to_thread(self.schedd.act, Action.REMOVE, f"ClusterId == {int(row['cluster'])}",
                                row["error"] or "rsub: replaced by a new submit")
        crashpoint("recover.after_schedd")
        self.ledger.record_replaced(row["id"])
        log.info("recovery.removed_unspooled", schedd=self.name, cluster=row["cluster"])

    async def _finish_resubmit(self, row: dict[str, Any]) -> None:
        try:
            await resubmit.finish(self.submissions, row)
        except RequestError as e:
            if e.code == ErrorCode.BAD_SUBMIT:  # its input files are gone since: it cannot run again
                self.ledger.record_submit_failed(row["id"], f"cannot resubmit: {e.message}")
            log.error("recovery.resubmit_failed", schedd=self.name, request_id=row["request_id"], error=e.message)

    async def _submit_again(self, row: dict[str, Any]) -> None:
        """Submit an intent of rsub's own again (the schedd never received it)."""
        try:
            prepared = await self.submissions.prepare(row["description"], row["submit_dir"],
                                                      keep_removed=_is_dag(row["submit_dir"]))
        except RequestError as e:
            self.ledger.record_submit_failed(row["id"], f"cannot submit again: {e.message}")
            return
        self.ledger.record_interrupted(row["id"], "resubmitting")
        self.ledger.restart_submit(row["id"], tag=prepared.tag, submitted_description=prepared.request.text)
        await self._run(row["id"], prepared, old_cluster=None)

    async def _run(self, row: int, prepared: Prepared, *, old_cluster: int | None) -> None:
        try:
            result = await self.submissions.run_submit(row, self.name, None, prepared)
        except RequestError as e:
            log.error("recovery.resubmit_failed", schedd=self.name, old_cluster=old_cluster, error=e.message)
            return
        dagadopt.adopt(self.ledger, self.name, [int(result["cluster"])])  # a resubmitted DAG is tracked as one
        log.warning("recovery.resubmitted", schedd=self.name, old_cluster=old_cluster, cluster=result["cluster"])
