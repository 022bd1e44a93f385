"""Polling and reconciliation: one query per schedd per poll, then retrieve and mark.

`Poller.poll_once()` is a plain function: the scheduler only triggers it, and
tests call it directly. The order of a poll is the crash-safe one: the ledger
learns a job completed, the output is retrieved into the job's Iwd, the ledger
records it retrieved, and only then is `RETRIEVED = true` sent to the schedd,
which lets the job leave the queue.

A poll asks each schedd at most four things, each batched over every job that
needs it: one query (rsub's own jobs not yet marked retrieved, projected on
`POLL_PROJECTION`), one history call (for jobs that left the queue unseen), one
retrieve and one edit. What it learns from the query and history lands in the
ledger in one transaction that touches only the jobs whose view changed; the
retrieve and the mark each get their own, because each must be durable before
the next step. Jobs that are retrieved and marked, removed or failed are no
longer tracked, so they are never asked about again.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import structlog

from rsubd.backends.schedd import (
    POLL_PROJECTION,
    ErrorKind,
    JobAd,
    JobStatus,
    Schedd,
    ScheddError,
    ids_constraint,
    job_id,
)
from rsubd.ledger.compaction import Compactor
from rsubd.ledger.store import Ledger, TrackedJob
from rsubd.platform import gcpause
from rsubd.platform.crash import crashpoint
from rsubd.polling.dagpoll import DagWatch
from rsubd.polling.observing import OBSERVED, OBSERVED_END, USAGE, diff, fate, fields_from_ad, observe, quiet, usage_of
from rsubd.polling.retrieving import RETRIEVE_HEALED, RETRY_BASE, Change, Key, Retriever
from rsubd.services import notify
from rsubd.services.spoolholds import SpoolHolds

log = structlog.get_logger("rsubd.polling.poller")
HISTORY_PROJECTION = ("ClusterId", "ProcId", "JobStatus", "RemoveReason", "ExitCode", "ExitSignal",
                      "ExitBySignal", "CompletionDate", "StageOutFinish", "RETRIEVED", "LastHoldReason", *USAGE)
CALLS = ("polls", "queries", "history_calls", "retrieve_calls", "edit_calls", "errors")
MISSING_EVENTS = 20  # past this many jobs missing from queue and history, one event says how many


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
    vanished: int = 0


class Poller:
    """Reconciles the ledger with one schedd."""

    def __init__(self, ledger: Ledger, schedd: Schedd, *, clock: Callable[[], float] = time.time,
                 on_change: Callable[[list[notify.Change]], object] | None = None,
                 retry_base: float = RETRY_BASE, retry_max: float = 600.0, attention_after: float = 3600.0,
                 compact_after: float = 0.0) -> None:
        self.ledger = ledger
        self.compactor = Compactor(ledger, compact_after, clock=clock)  # old final jobs' events (0: never)
        self.schedd = schedd
        self.stats = PollStats()
        self._clock = clock
        self._on_change = on_change
        self.retriever = Retriever(ledger, schedd, clock=clock, count=self.stats.count, tell=self._tell,
                                   retry_base=retry_base, retry_max=retry_max, attention_after=attention_after)
        self._busy = threading.Lock()  # a poll and an `rsub retrieve` never retrieve at once
        self.spool_holds = SpoolHolds(ledger, schedd)
        self.dags = DagWatch(ledger, schedd, count=self.stats.count, clock=clock)

    def _tell(self, changes: Sequence[Change]) -> None:
        """Report recorded state changes (notifications); never lets a listener break a poll."""
        if self._on_change is None:
            return
        told = [notify.Change(self.schedd.name, c, p, f["state"], f.get("exit_code"), f.get("hold_reason"))
                for c, p, f in changes if "state" in f]
        if told:
            try:
                self._on_change(told)
            except Exception:  # a notification must never stop the poll
                log.exception("notify.crashed", schedd=self.schedd.name)

    @property
    def constraint(self) -> str:
        """rsub's own jobs on this schedd that are not yet marked retrieved."""
        return f'RsubInstance == "{self.ledger.instance_id}" && RETRIEVED =!= true'

    def poll_once(self) -> PollReport:
        with self._busy:
            with gcpause.paused():  # 100,000 ads and no cycle: the collector would walk them all for nothing
                report = self._poll_once()
            try:  # after the poll's own work, and even when nothing is tracked: a schedd's old jobs are all final
                if compacted := self.compactor.maybe(self.schedd.name):
                    log.info("compacted", schedd=self.schedd.name, jobs=compacted)
            except sqlite3.Error:  # never lets housekeeping break a poll; the next one tries again
                log.exception("compaction.failed", schedd=self.schedd.name)
            return report

    def _poll_once(self) -> PollReport:
        started = self._clock()
        tracked = self.ledger.tracked_by_key(self.schedd.name)
        if not self.dags.pending() and not tracked:  # a removed DAG is final, but its files are not home yet
            return PollReport(outcome="idle")
        self.stats.count("polls", started)
        self.stats.last_poll_at = started
        before = dict(self.stats.totals)
        previous = self.stats.last_outcome
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
        this_poll = {f"poll_{k}": v - before[k] for k, v in self.stats.totals.items() if k != "polls"}
        # Most polls find nothing new: those are debug, so the log holds what happened. A poll that changed a
        # job, called more than the query (history, retrieve, edit), met an error or ended a run of them
        # (a backoff), or is the first, is not.
        called = any(this_poll[k] for k in ("poll_history_calls", "poll_retrieve_calls", "poll_edit_calls",
                                            "poll_errors"))
        level = logging.WARNING if report.outcome == "error" else (
            logging.INFO if report.changed or report.vanished or called or previous != "ok" else logging.DEBUG)
        log.log(level, "poll", schedd=self.schedd.name, outcome=report.outcome, tracked=report.tracked,
                changed=report.changed, vanished=report.vanished, retrieved=report.retrieved,
                marked=report.marked, duration=round(self.stats.last_duration, 4), error=report.error,
                **self.stats.totals, **this_poll)
        return report

    def _reconcile(self, tracked: dict[Key, TrackedJob]) -> PollReport:
        started_at = self._clock()
        self.stats.count("queries", started_at)
        ads = self.schedd.query(self.constraint, POLL_PROJECTION)
        crashpoint("poll.after_query")
        pending = self.spool_holds.pending()  # holds asked for while spooling: almost always none
        pending_ads = {k: ad for ad in ads if (k := (ad.get("ClusterId"), ad.get("ProcId"))) in pending
                       } if pending else {}
        see = self.dags.see if self.dags.begin() else None
        changes: list[Change] = []
        unseen = set(tracked)
        to_retrieve: list[Key] = []
        to_mark: list[Key] = []
        fetched_home: list[Key] = []
        # An ad's ids are whatever it says (AdValues); a dict takes any key, and one not a tracked
        # (cluster, proc) finds nothing, so the hot loop looks them up without checking each one.
        lookup = cast(Callable[[object], TrackedJob | None], tracked.get)
        for ad in ads:
            if see is not None:
                see(ad)
            row = lookup((ad.get("ClusterId"), ad.get("ProcId")))
            if row is None:
                continue  # not rsub's to track (finished, or submitted after this poll began)
            key: Key = row[:2]
            unseen.discard(key)
            if quiet(ad, row):
                continue  # nothing the ledger keeps changed: most ads of most polls
            if row.state == "retrieved":
                if row.marked_at is not None:
                    continue
                if ad.get("JobStatus") != JobStatus.COMPLETED and not ad.get("StageOutFinish"):
                    # A schedd's retrieve passes quietly over a job that stopped being completed
                    # (removed between the query and the retrieve): nothing came home, so no mark.
                    changes.append((row[0], row[1], {**fields_from_ad(ad), "retrieved_at": None,
                                                     "error": "removed before its output could be retrieved"}))
                    continue
                to_mark.append(key)
                continue  # its output is home; only the mark is left to send
            old = row[2:OBSERVED_END]
            new = observe(ad, row)
            change = {f: v for f, v, o in zip(OBSERVED, new, old, strict=True) if v != o} if new != old else {}
            if "state" in change:
                change.update(usage_of(ad))  # what it used so far, as this ad says: read on a change only
            if new[0] == "completed":
                fetched = ad.get("StageOutFinish")
                started = row.retrieve_started_at
                not_before = row.retrieve_not_before
                if isinstance(fetched, (int, float)) and started is not None and fetched >= started - 1:
                    # A batched retrieve that failed as a whole (another job's output could not be
                    # written) did bring this one's home: record it, do not fetch it again.
                    change.update(state="retrieved", retrieved_at=float(fetched), error=None, **RETRIEVE_HEALED)
                    fetched_home.append(key)
                elif not_before is not None and not_before > started_at:
                    # An earlier retrieve failed: its backoff has not run out, or (inf) its output cannot
                    # be written where it goes and a person must act (rsub retrieve).
                    pass
                else:
                    to_retrieve.append(key)
            if change:
                changes.append((row[0], row[1], change))
        del ads
        vanished = sorted(unseen)
        if vanished:
            changes.extend(self._reconcile_vanished(vanished, tracked))
        if fetched_home:
            self.retriever.settle_leftovers(fetched_home, tracked)
        changed = len(changes)
        # Intent before action: a retrieve about to start is recorded with the news, so that a
        # repeat after a crash knows it is one (daemon/retrieval.py).
        fresh = [k for k in to_retrieve if tracked[k].retrieve_started_at is None]
        if fresh:
            started = self._clock()
            by_key = {(c, p): f for c, p, f in changes}
            for c, p in fresh:
                if (c, p) in by_key:
                    by_key[(c, p)]["retrieve_started_at"] = started
                else:
                    changes.append((c, p, {"retrieve_started_at": started}))
        self.ledger.apply_changes(self.schedd.name, changes)  # the poll's one transaction of news
        crashpoint("poll.after_news")
        self._tell(changes)
        if pending and (held := self.spool_holds.settle(pending, cast(Mapping[Key, JobAd], pending_ads))):
            self.ledger.apply_changes(self.schedd.name, held)  # the hold sent, as the next query will show it
            self._tell(held)

        retrieved = self.retriever.retrieve(to_retrieve, tracked)
        if see is not None:
            self.dags.end()
        # Jobs retrieved in this poll are marked in the next, once its query shows the schedd
        # fetched their output (StageOutFinish): a job removed between this poll's query and
        # its retrieve would otherwise be marked retrieved with nothing home.
        marked = self._mark(to_mark)
        return PollReport(outcome="ok", tracked=len(tracked), changed=changed, retrieved=len(retrieved),
                          marked=marked, vanished=len(vanished))

    def _reconcile_vanished(self, vanished: list[Key], tracked: Mapping[Key, TrackedJob]) -> list[Change]:
        """Learn from history what became of jobs that left the queue unseen."""
        self.stats.count("history_calls", self._clock())
        constraint = f'RsubInstance == "{self.ledger.instance_id}" && ({ids_constraint(vanished)})'
        try:
            ads = self.schedd.history(constraint, HISTORY_PROJECTION, match=len(vanished) * 2)
        except ScheddError as e:
            # What the query said still lands, and completed jobs are still retrieved;
            # these jobs stay tracked and are looked up again next poll.
            self.stats.count("errors", self._clock())
            log.warning("history.failed", schedd=self.schedd.name, jobs=len(vanished), error=str(e))
            return []
        now = self._clock()
        changes: list[Change] = []
        found: set[Key] = set()
        lookup = cast(Callable[[object], TrackedJob | None], tracked.get)  # as in `_reconcile`
        for ad in ads:
            row = lookup((ad.get("ClusterId"), ad.get("ProcId")))
            if row is None or row[:2] in found:
                continue  # history is newest first: the first record is the job's last word
            found.add(row[:2])
            change = diff(row._asdict(), fate(ad, row, now))
            if change:
                changes.append((row[0], row[1], change))
        # Not in the queue nor in history (yet): kept, and looked up again next poll.
        missing = [job_id(*key) for key in vanished if key not in found]
        if len(missing) <= MISSING_EVENTS:
            for job in missing:
                log.warning("job.vanished", schedd=self.schedd.name, job=job)
        else:
            log.warning("jobs.vanished", schedd=self.schedd.name, count=len(missing), first=missing[:MISSING_EVENTS])
        return changes

    def retrieve_now(self, keys: Sequence[Key], *, dest: str | None = None) -> dict[str, list[Key]]:
        """`rsub retrieve`: fetch these completed jobs' output now (a paused job too), into their Iwd or `dest`.

        Runs the poll's own steps (intent, retrieve, record) between polls; the next poll marks
        them RETRIEVED once the schedd shows it sent the output, as after any retrieve.
        """
        with self._busy:
            rows = self.ledger.tracked_by_key(self.schedd.name)
            ready = [k for k in keys if k in rows and rows[k].state == "completed"]
            if not ready:
                return {"retrieved": [], "failed": []}
            started = self._clock()
            # The intent as the ledger now holds it, without reading every tracked job a second time.
            tracked = {k: rows[k]._replace(retrieve_started_at=rows[k].retrieve_started_at or started,
                                           retrieve_not_before=None) for k in ready}
            self.ledger.apply_changes(self.schedd.name, [
                (c, p, {"retrieve_started_at": tracked[(c, p)].retrieve_started_at, "retrieve_paused": 0,
                        "retrieve_retry_at": None}) for c, p in ready])
            if dest is not None:
                self.retriever.redirect(ready, dest)
            done = self.retriever.retrieve(ready, tracked, dest=dest)
            return {"retrieved": done, "failed": [k for k in ready if k not in set(done)]}

    def _mark(self, keys: list[Key]) -> int:
        """Send RETRIEVED = true, only once the ledger durably says retrieved."""
        if not keys:
            return 0
        self.stats.count("edit_calls", self._clock())
        try:
            self.schedd.edit([job_id(*k) for k in keys], "RETRIEVED", "true")
            crashpoint("mark.after_schedd")
        except ScheddError as e:
            if e.kind is ErrorKind.NOT_FOUND:
                # Some job left the queue since the query (a 25.8+ schedd drops a job once its
                # output is fetched), and the schedd refused the whole edit. Not a failure: the
                # next poll marks those still queued and finds the others in history.
                log.info("mark.deferred", schedd=self.schedd.name, jobs=len(keys), reason=str(e))
                return 0
            self.stats.count("errors", self._clock())
            log.warning("mark.failed", schedd=self.schedd.name, jobs=len(keys), error=str(e))
            return 0
        now = self._clock()
        self.ledger.apply_changes(self.schedd.name, [(c, p, {"marked_at": now}) for c, p in keys])
        crashpoint("mark.after_record")
        return len(keys)
