"""Queue actions of the embedded scheduler: edit an attribute, hold, release, remove."""

from __future__ import annotations

from typing import Any

from rsubd.backends.local.ads import parse_value
from rsubd.backends.local.execution import Execution
from rsubd.backends.local.queue import Key
from rsubd.backends.schedd import Action, ActResult, ErrorKind, HoldCode, JobSpec, JobStatus, ScheddError

IMMUTABLE = {"clusterid", "procid", "owner", "jobuniverse", "globaljobid", "qdate", "user"}


class QueueActions(Execution):
    """`edit` and `act` of the Schedd boundary, as a real schedd answers them."""

    def edit(self, jobs: JobSpec, attr: str, value: str) -> int:
        if "." in attr or not attr.replace("_", "").isalnum():
            raise ScheddError(ErrorKind.INVALID, f"Unable to commit transaction:Got invalid attribute named {attr}")
        parsed = parse_value(value)
        with self._lock:
            keys = self._select(jobs)
            for key in keys:
                if key not in self._procs:
                    raise ScheddError(
                        ErrorKind.NOT_FOUND,
                        f"Unable to commit transaction:Modifying attribute {attr} in nonexistent job {key[0]}.{key[1]}",
                    )
                if attr.lower() in IMMUTABLE:
                    raise ScheddError(
                        ErrorKind.PERMISSION,
                        "Unable to commit transaction:Attempt to edit immutable attribute "
                        f"{attr} in job {key[0]}.{key[1]}",
                    )
            for key in keys:
                proc, cluster = self._procs[key], self._clusters.get(key[0], {})
                spellings = self._index.spellings.get(attr.lower(), ())
                existing = next((k for k in spellings if k in cluster or k in proc), attr)
                self._set(key, **{existing: parsed})
                self._leave_check.add(key)
            self._unmatched.clear()  # an edited Requirements or request may match a slot now
            self._save()
            return len(keys)

    def act(self, action: Action, jobs: JobSpec, reason: str | None = None) -> ActResult:
        text: str | None = (f"{reason} (by user {self._owner})" if reason
                            else f"Python-initiated action (by user {self._owner})")
        if reason and '"' in reason:
            text = None  # as a real schedd (and condor_hold) does: the reason is lost, the action still done
        counts = dict.fromkeys(("success", "not_found", "already_done", "bad_status"), 0)
        with self._lock:
            self._refresh()
            keys = self._select(jobs)
            for key in keys:
                if key not in self._procs:
                    counts["not_found"] += 1
                    continue
                counts[self._act_one(action, key, text)] += 1
            if action is Action.REMOVE:
                self._leave_queue([k for k in keys if k in self._procs and self._status(k) == JobStatus.REMOVED])
            self._save()
        return ActResult(
            success=counts["success"], not_found=counts["not_found"], already_done=counts["already_done"],
            bad_status=counts["bad_status"],
        )

    def _act_one(self, action: Action, key: Key, text: str | None) -> str:
        ad = self.ad(key)
        status = ad.get("JobStatus")
        now = int(self._clock())
        if action is Action.HOLD:
            if status == JobStatus.HELD:
                return "already_done"
            if status in (JobStatus.COMPLETED, JobStatus.REMOVED):
                return "bad_status"
            self._kill(key)
            self._set(
                key, JobStatus=int(JobStatus.HELD), LastJobStatus=status, EnteredCurrentStatus=now,
                HoldReason=text, HoldReasonCode=int(HoldCode.USER_REQUEST), HoldReasonSubCode=0,
                NumHolds=int(ad.get("NumHolds") or 0) + 1,
            )
            return "success"
        if action is Action.RELEASE:
            if status != JobStatus.HELD or ad.get("HoldReasonCode") == HoldCode.SPOOLING_INPUT:
                return "bad_status"
            self._set(
                key, JobStatus=int(JobStatus.IDLE), LastJobStatus=status, EnteredCurrentStatus=now,
                LastHoldReason=ad.get("HoldReason"), LastHoldReasonCode=ad.get("HoldReasonCode"),
                LastHoldReasonSubCode=ad.get("HoldReasonSubCode"), HoldReason=None, HoldReasonCode=None,
                HoldReasonSubCode=None, ReleaseReason=text,
            )
            return "success"
        if status == JobStatus.REMOVED:
            return "already_done"
        self._remove(key, text)
        return "success"

    def _remove(self, key: Key, reason: str | None) -> None:
        ad = self.ad(key)
        self._kill(key)
        extra: dict[str, Any] = {}
        if ad.get("JobStatus") == JobStatus.HELD:
            extra = {
                "LastHoldReason": ad.get("HoldReason"), "LastHoldReasonCode": ad.get("HoldReasonCode"),
                "LastHoldReasonSubCode": ad.get("HoldReasonSubCode"), "HoldReason": None, "HoldReasonCode": None,
            }
        self._set(
            key, JobStatus=int(JobStatus.REMOVED), LastJobStatus=ad.get("JobStatus"),
            EnteredCurrentStatus=int(self._clock()), RemoveReason=reason, **extra,
        )

