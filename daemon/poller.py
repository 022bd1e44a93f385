"""Polling and reconciliation: one query per schedd per poll, then retrieve and mark.

`Poller.poll_once()` is a plain function: the scheduler only triggers it, and
tests call it directly. The order of a poll is the crash-safe one: the ledger
learns a job completed, the output is retrieved into the job's Iwd, the ledger
records it retrieved, and only then is `RETRIEVED = true` sent to the schedd,
which lets the job leave the queue.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from rsubd.ledger import Ledger
from rsubd.schedd import (
    POLL_PROJECTION,
    AdValue,
    JobStatus,
    Schedd,
    ScheddError,
    ids_constraint,
    job_id,
    state_of,
)

log = structlog.get_logger("rsubd.poller")
Key = tuple[int, int]
HISTORY_PROJECTION = ("ClusterId", "ProcId", "JobStatus", "RemoveReason", "ExitCode", "ExitSignal",
                      "ExitBySignal", "CompletionDate", "StageOutFinish", "RETRIEVED", "LastHoldReason")
CALLS = ("polls", "queries", "history_calls", "retrieve_calls", "edit_calls", "errors")


@dataclass
class PollStats:
    """What rsub asked of one schedd, for `rsub daemon status`."""

    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CALLS, 0))
    recent: collections.deque[tuple[float, str]] = field(default_factory=collections.deque)
    last_poll_at: float | None = None
    last_ok_at: float | None = None
    last_duration: float | None = None
    last_outcome: str | None = None
    last_error: str | None = None

    def count(self, what: str, now: float) -> None:
        self.totals[what] += 1
        self.recent.append((now, what))

    def last_hour(self, now: float) -> dict[str, int]:
        while self.recent and self.recent[0][0] < now - 3600:
            self.recent.popleft()
        counts = dict.fromkeys(CALLS, 0)
        for _, what in self.recent:
            counts[what] += 1
        return counts


@dataclass(frozen=True)
class PollReport:
    outcome: str  # "ok", "idle" (nothing to track) or "error"
    tracked: int = 0
    changed: int = 0
    retrieved: int = 0
    marked: int = 0
    error: str | None = None


def fields_from_ad(ad: Mapping[str, AdValue]) -> dict[str, Any]:
    """The ledger's view of a queue or history ad."""
    state = state_of(ad)
    held = ad.get("JobStatus") == JobStatus.HELD
    fields: dict[str, Any] = {
        "state": state,
        "job_status": ad.get("JobStatus"),
        "hold_reason": ad.get("HoldReason") if held else None,
        "hold_code": ad.get("HoldReasonCode") if held else None,
        "exit_code": ad.get("ExitCode") if isinstance(ad.get("ExitCode"), int) else None,
        "exit_signal": ad.get("ExitSignal") if ad.get("ExitBySignal") is True else None,
    }
    if ad.get("JobStatus") == JobStatus.REMOVED:
        fields["remove_reason"] = ad.get("RemoveReason")
    completion = ad.get("CompletionDate")
    if isinstance(completion, (int, float)) and completion > 0:
        fields["completed_at"] = float(completion)
    return fields


def diff(row: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if row.get(k) != v}


class Poller:
    """Reconciles the ledger with one schedd."""

    def __init__(self, ledger: Ledger, schedd: Schedd, *, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.schedd = schedd
        self.stats = PollStats()
        self._clock = clock

    @property
    def constraint(self) -> str:
        """rsub's own jobs on this schedd that are not yet marked retrieved."""
        return f'RsubInstance == "{self.ledger.instance_id}" && RETRIEVED =!= true'

    def poll_once(self) -> PollReport:
        started = self._clock()
        tracked = {(r["cluster"], r["proc"]): r for r in self.ledger.tracked_jobs(self.schedd.name)}
        if not tracked:
            return PollReport(outcome="idle")
        self.stats.count("polls", started)
        self.stats.last_poll_at = started
        try:
            report = self._reconcile(tracked)
        except ScheddError as e:
            self.stats.count("errors", self._clock())
            self.stats.last_outcome = "error"
            self.stats.last_error = str(e)
            report = PollReport(outcome="error", tracked=len(tracked), error=str(e))
        else:
            self.stats.last_outcome = "ok"
            self.stats.last_ok_at = self._clock()
            self.stats.last_error = None
        self.stats.last_duration = self._clock() - started
        log.info("poll", schedd=self.schedd.name, outcome=report.outcome, tracked=report.tracked,
                 changed=report.changed, retrieved=report.retrieved, marked=report.marked,
                 duration=round(self.stats.last_duration, 4), error=report.error, **self.stats.totals)
        return report

    def _reconcile(self, tracked: dict[Key, dict[str, Any]]) -> PollReport:
        name = self.schedd.name
        self.stats.count("queries", self._clock())
        ads = self.schedd.query(self.constraint, POLL_PROJECTION)
        changes: list[tuple[int, int, dict[str, Any]]] = []
        seen: set[Key] = set()
        for ad in ads:
            key = (ad.get("ClusterId"), ad.get("ProcId"))
            row = tracked.get(key)  # type: ignore[arg-type]
            if row is None:
                continue
            seen.add((row["cluster"], row["proc"]))
            if row["state"] == "retrieved":
                continue  # its output is home; only the mark is left to send
            change = diff(row, fields_from_ad(ad))
            if change:
                changes.append((row["cluster"], row["proc"], change))
                row.update(change)
        vanished = [k for k, r in tracked.items() if k not in seen]
        if vanished:
            changes.extend(self._reconcile_vanished(vanished, tracked))
        self.ledger.apply_changes(name, changes)

        retrieved = self._retrieve([k for k, r in tracked.items() if r["state"] == "completed" and k in seen])
        for key in retrieved:
            tracked[key]["state"] = "retrieved"
        to_mark = [k for k, r in tracked.items() if r["state"] == "retrieved" and r.get("marked_at") is None]
        marked = self._mark([k for k in to_mark if k in seen])
        return PollReport(outcome="ok", tracked=len(tracked), changed=len(changes), retrieved=len(retrieved),
                          marked=marked)

    def _reconcile_vanished(self, vanished: list[Key], tracked: dict[Key, dict[str, Any]]) -> list[tuple[int, int, dict[str, Any]]]:
        """Learn from history what became of jobs that left the queue unseen."""
        self.stats.count("history_calls", self._clock())
        constraint = f'RsubInstance == "{self.ledger.instance_id}" && ({ids_constraint(vanished)})'
        ads = self.schedd.history(constraint, HISTORY_PROJECTION, match=len(vanished) * 2)
        now = self._clock()
        changes = []
        found: set[Key] = set()
        for ad in ads:
            key = (ad.get("ClusterId"), ad.get("ProcId"))
            row = tracked.get(key)  # type: ignore[arg-type]
            if row is None or key in found:
                continue  # history is newest first: the first record is the job's last word
            found.add(key)  # type: ignore[arg-type]
            if row["state"] == "retrieved":
                change: dict[str, Any] = {"marked_at": row.get("marked_at") or now}
            elif ad.get("JobStatus") == JobStatus.COMPLETED and ad.get("StageOutFinish"):
                # Retrieved by someone else (or dropped by a 25.8+ schedd after a retrieve): the
                # output went to the job's Iwd all the same.
                change = {**fields_from_ad(ad), "state": "retrieved",
                          "retrieved_at": float(ad["StageOutFinish"]), "marked_at": now}  # type: ignore[arg-type]
            elif ad.get("JobStatus") == JobStatus.COMPLETED:
                change = {**fields_from_ad(ad), "state": "failed",
                          "error": "the job left the queue before rsub could retrieve its output"}
            else:
                change = fields_from_ad(ad)
            change = diff(row, change)
            if change:
                changes.append((key[0], key[1], change))  # type: ignore[index]
                row.update(change)
        for key in vanished:
            if key not in found:
                log.warning("job.vanished", schedd=self.schedd.name, job=job_id(*key))
        return changes

    def _retrieve(self, keys: list[Key]) -> list[Key]:
        if not keys:
            return []
        self.stats.count("retrieve_calls", self._clock())
        ids = [job_id(*k) for k in keys]
        try:
            self.schedd.retrieve(ids)
        except ScheddError as e:
            self.stats.count("errors", self._clock())
            log.warning("retrieve.failed", schedd=self.schedd.name, jobs=len(ids), error=str(e))
            self.ledger.apply_changes(self.schedd.name, [(c, p, {"error": f"retrieve failed: {e.message}"}) for c, p in keys])
            return []
        now = self._clock()
        self.ledger.apply_changes(
            self.schedd.name, [(c, p, {"state": "retrieved", "retrieved_at": now, "error": None}) for c, p in keys]
        )
        for c, p in keys:
            log.info("job.retrieved", schedd=self.schedd.name, cluster=c, proc=p)
        return keys

    def _mark(self, keys: list[Key]) -> int:
        if not keys:
            return 0
        self.stats.count("edit_calls", self._clock())
        try:
            self.schedd.edit([job_id(*k) for k in keys], "RETRIEVED", "true")
        except ScheddError as e:
            self.stats.count("errors", self._clock())
            log.warning("mark.failed", schedd=self.schedd.name, jobs=len(keys), error=str(e))
            return 0
        now = self._clock()
        self.ledger.apply_changes(self.schedd.name, [(c, p, {"marked_at": now}) for c, p in keys])
        return len(keys)
