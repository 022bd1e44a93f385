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
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from rsubd.services import notify
from rsubd.services import retrieval
from rsubd import submitdesc
from rsubd.platform.crash import crashpoint
from rsubd.ledger.store import TRACKED_FIELDS, Ledger
from rsubd.backends.schedd import (
    POLL_PROJECTION,
    STATE_BY_STATUS,
    AdValue,
    ErrorKind,
    HoldCode,
    JobStatus,
    Schedd,
    ScheddError,
    ids_constraint,
    job_id,
    proc_runs,
    state_of,
)

log = structlog.get_logger("rsubd.polling.poller")
Key = tuple[int, int]
HISTORY_PROJECTION = ("ClusterId", "ProcId", "JobStatus", "RemoveReason", "ExitCode", "ExitSignal",
                      "ExitBySignal", "CompletionDate", "StageOutFinish", "RETRIEVED", "LastHoldReason")
CALLS = ("polls", "queries", "history_calls", "retrieve_calls", "edit_calls", "errors")
REDIRECT_PROJECTION = ("ClusterId", "ProcId", "SUBMIT_Iwd", "Out", "Err", "SUBMIT_TransferOutputRemaps")
MISSING_EVENTS = 20  # past this many jobs missing from queue and history, one event says how many

# A tracked job is a tuple (cluster, proc, *TRACKED_FIELDS); these are its positions.
(STATE, JOB_STATUS, REMOVE_REASON, COMPLETED_AT, MARKED_AT, RETRIEVE_STARTED_AT, RETRIEVE_FAILURES,
 RETRIEVE_FAILING_SINCE, RETRIEVE_RETRY_AT, RETRIEVE_PAUSED) = (
    2 + TRACKED_FIELDS.index(name)
    for name in ("state", "job_status", "remove_reason", "completed_at", "marked_at", "retrieve_started_at",
                 "retrieve_failures", "retrieve_failing_since", "retrieve_retry_at", "retrieve_paused")
)
# A retrieve that succeeds ends whatever its earlier failures said.
RETRIEVE_HEALED: dict[str, Any] = {"retrieve_failures": 0, "retrieve_failing_since": None, "retrieve_retry_at": None,
                                   "retrieve_paused": 0, "attention": None}
RETRY_BASE = 2.0  # seconds before the first retry of a retrieve that failed; doubled after each failure
_TARGET_JOB = re.compile(r"target job (\d+)\.(\d+)")
OBSERVED = TRACKED_FIELDS[:TRACKED_FIELDS.index("marked_at")]  # what a queue ad says; the rest is rsub's own
_STATE_BY_CODE = {int(code): state for code, state in STATE_BY_STATUS.items()}
_HELD, _REMOVED, _SPOOLING = int(JobStatus.HELD), int(JobStatus.REMOVED), int(HoldCode.SPOOLING_INPUT)
Change = tuple[int, int, dict[str, Any]]


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


def observe(ad: Mapping[str, AdValue], row: Sequence[Any]) -> tuple[Any, ...]:
    """`fields_from_ad` as a tuple in OBSERVED order, keeping the row's value where the ad is silent.

    The hot loop of a poll: it runs once per queued job, so it reads the ad
    directly instead of building a dict.
    """
    status = ad.get("JobStatus")
    held = status == _HELD
    state = (_STATE_BY_CODE.get(status) or "idle") if isinstance(status, int) else "idle"
    if held and ad.get("HoldReasonCode") == _SPOOLING:
        state = "spooling"
    exit_code = ad.get("ExitCode")
    completion = ad.get("CompletionDate")
    return (
        state,
        status,
        ad.get("HoldReason") if held else None,
        ad.get("HoldReasonCode") if held else None,
        exit_code if isinstance(exit_code, int) else None,
        ad.get("ExitSignal") if ad.get("ExitBySignal") is True else None,
        ad.get("RemoveReason") if status == _REMOVED else row[REMOVE_REASON],
        float(completion) if isinstance(completion, (int, float)) and completion > 0 else row[COMPLETED_AT],
    )


def proc_ranges(procs: Sequence[int]) -> str:
    """Proc ids as HTCondor users read them: "0-99,105"."""
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in proc_runs(procs))


def diff(row: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that change; a field the row does not carry (retrieved_at) is always written."""
    return {k: v for k, v in fields.items() if k not in row or row[k] != v}


class Poller:
    """Reconciles the ledger with one schedd."""

    def __init__(self, ledger: Ledger, schedd: Schedd, *, clock: Callable[[], float] = time.time,
                 on_change: Callable[[list[notify.Change]], object] | None = None,
                 retry_base: float = RETRY_BASE, retry_max: float = 600.0, attention_after: float = 3600.0) -> None:
        self.ledger = ledger
        self.schedd = schedd
        self.stats = PollStats()
        self._clock = clock
        self._on_change = on_change
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.attention_after = attention_after
        self._busy = threading.Lock()  # a poll and an `rsub retrieve` never retrieve at once

    def _tell(self, changes: Sequence[Change]) -> None:
        """Report recorded state changes (notifications); never lets a listener break a poll."""
        if self._on_change is None:
            return
        told = [notify.Change(self.schedd.name, c, p, f["state"], f.get("exit_code"), f.get("hold_reason"))
                for c, p, f in changes if "state" in f]
        if told:
            try:
                self._on_change(told)
            except Exception:  # noqa: BLE001 - a notification must never stop the poll
                log.exception("notify.crashed", schedd=self.schedd.name)

    @property
    def constraint(self) -> str:
        """rsub's own jobs on this schedd that are not yet marked retrieved."""
        return f'RsubInstance == "{self.ledger.instance_id}" && RETRIEVED =!= true'

    def poll_once(self) -> PollReport:
        with self._busy:
            return self._poll_once()

    def _poll_once(self) -> PollReport:
        started = self._clock()
        tracked = {(r[0], r[1]): r for r in self.ledger.tracked(self.schedd.name)}
        if not tracked:
            return PollReport(outcome="idle")
        self.stats.count("polls", started)
        self.stats.last_poll_at = started
        before = dict(self.stats.totals)
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
        log.info("poll", schedd=self.schedd.name, outcome=report.outcome, tracked=report.tracked,
                 changed=report.changed, vanished=report.vanished, retrieved=report.retrieved,
                 marked=report.marked, duration=round(self.stats.last_duration, 4), error=report.error,
                 **self.stats.totals, **this_poll)
        return report

    def _reconcile(self, tracked: dict[Key, tuple[Any, ...]]) -> PollReport:
        started_at = self._clock()
        self.stats.count("queries", started_at)
        ads = self.schedd.query(self.constraint, POLL_PROJECTION)
        crashpoint("poll.after_query")
        changes: list[Change] = []
        unseen = set(tracked)
        to_retrieve: list[Key] = []
        to_mark: list[Key] = []
        fetched_home: list[Key] = []
        for ad in ads:
            key = (ad.get("ClusterId"), ad.get("ProcId"))
            row = tracked.get(key)  # type: ignore[arg-type]
            if row is None:
                continue  # not rsub's to track (finished, or submitted after this poll began)
            unseen.discard(row[:2])  # type: ignore[arg-type]
            if row[STATE] == "retrieved":
                if row[MARKED_AT] is not None:
                    continue
                if ad.get("JobStatus") != JobStatus.COMPLETED and not ad.get("StageOutFinish"):
                    # A schedd's retrieve passes quietly over a job that stopped being completed
                    # (removed between the query and the retrieve): nothing came home, so no mark.
                    changes.append((row[0], row[1], {**fields_from_ad(ad), "retrieved_at": None,
                                                     "error": "removed before its output could be retrieved"}))
                    continue
                to_mark.append(row[:2])  # type: ignore[arg-type]
                continue  # its output is home; only the mark is left to send
            old = row[2:MARKED_AT]
            new = observe(ad, row)
            change = {f: v for f, v, o in zip(OBSERVED, new, old) if v != o} if new != old else {}
            if new[0] == "completed":
                fetched = ad.get("StageOutFinish")
                started = row[RETRIEVE_STARTED_AT]
                retry_at = row[RETRIEVE_RETRY_AT]
                if isinstance(fetched, (int, float)) and started is not None and fetched >= started - 1:
                    # A batched retrieve that failed as a whole (another job's output could not be
                    # written) did bring this one's home: record it, do not fetch it again.
                    change.update(state="retrieved", retrieved_at=float(fetched), error=None, **RETRIEVE_HEALED)
                    fetched_home.append(row[:2])  # type: ignore[arg-type]
                elif row[RETRIEVE_PAUSED]:
                    pass  # its output cannot be written where it goes: a person must act (rsub retrieve)
                elif retry_at is not None and retry_at > started_at:
                    pass  # an earlier retrieve failed: its backoff has not run out
                else:
                    to_retrieve.append(row[:2])  # type: ignore[arg-type]
            if change:
                changes.append((row[0], row[1], change))
        del ads
        vanished = sorted(unseen)
        if vanished:
            changes.extend(self._reconcile_vanished(vanished, tracked))
        if fetched_home:
            self._settle_leftovers(fetched_home, tracked)
        changed = len(changes)
        # Intent before action: a retrieve about to start is recorded with the news, so that a
        # repeat after a crash knows it is one (daemon/retrieval.py).
        fresh = [k for k in to_retrieve if tracked[k][RETRIEVE_STARTED_AT] is None]
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

        retrieved = self._retrieve(to_retrieve, tracked)
        # Jobs retrieved in this poll are marked in the next, once its query shows the schedd
        # fetched their output (StageOutFinish): a job removed between this poll's query and
        # its retrieve would otherwise be marked retrieved with nothing home.
        marked = self._mark(to_mark)
        return PollReport(outcome="ok", tracked=len(tracked), changed=changed, retrieved=len(retrieved),
                          marked=marked, vanished=len(vanished))

    def _reconcile_vanished(self, vanished: list[Key], tracked: Mapping[Key, tuple[Any, ...]]) -> list[Change]:
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
        for ad in ads:
            key = (ad.get("ClusterId"), ad.get("ProcId"))
            row = tracked.get(key)  # type: ignore[arg-type]
            if row is None or key in found:
                continue  # history is newest first: the first record is the job's last word
            found.add(key)  # type: ignore[arg-type]
            change = diff(dict(zip(TRACKED_FIELDS, row[2:])), self._fate(ad, row, now))
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

    @staticmethod
    def _fate(ad: Mapping[str, AdValue], row: Sequence[Any], now: float) -> dict[str, Any]:
        """The ledger's final word on a job from its history record."""
        status = ad.get("JobStatus")
        if row[STATE] == "retrieved":
            if row[MARKED_AT] is None and status != JobStatus.COMPLETED and not ad.get("StageOutFinish"):
                # Removed between a poll's query and its retrieve, which passed quietly over it.
                return {**fields_from_ad(ad), "retrieved_at": None,
                        "error": "removed before its output could be retrieved"}
            # rsub has its output; the job left because the mark landed, or because a 25.8+
            # schedd drops a spooled job once its output is fetched (the edit then found no job).
            return {"marked_at": row[MARKED_AT] or now}
        if status == JobStatus.COMPLETED and ad.get("StageOutFinish"):
            # The output was fetched from the spool, and a fetch writes it into the job's
            # submit-time Iwd, which is where rsub would have put it: by rsub's own retrieve
            # before a restart (on 25.8+ the schedd dropped the job at once, so the ledger
            # never heard), or by condor_transfer_data. Either way the output is home.
            return {**fields_from_ad(ad), "state": "retrieved", "error": None,
                    "retrieved_at": float(ad["StageOutFinish"]), "marked_at": now}  # type: ignore[arg-type]
        if status == JobStatus.COMPLETED and ad.get("RETRIEVED") is True:
            # Marked retrieved by someone else without a fetch: the schedd let the job go
            # and deleted its spool, so the output is gone.
            return {**fields_from_ad(ad), "state": "failed",
                    "error": "the job was marked RETRIEVED outside rsub before its output was fetched; the output is lost"}
        if status == JobStatus.COMPLETED:
            # leave_in_queue let it go unretrieved (its age limit passed): the output is gone.
            return {**fields_from_ad(ad), "state": "failed",
                    "error": "the job left the queue before rsub could retrieve its output"}
        if status == JobStatus.REMOVED:
            return fields_from_ad(ad)  # removed by someone else: state removed, with their reason
        # A job leaves the queue only completed or removed; anything else is final all the same.
        return {**fields_from_ad(ad), "state": "failed",
                "error": f"the job left the queue without completing (JobStatus {status})"}

    def _retrieve(self, keys: list[Key], tracked: Mapping[Key, tuple[Any, ...]], *,
                  dest: str | None = None) -> list[Key]:
        if not keys:
            return []
        self.stats.count("retrieve_calls", self._clock())
        repeats = {k: tracked[k][RETRIEVE_STARTED_AT] for k in keys if tracked[k][RETRIEVE_STARTED_AT] is not None}
        moved = self._set_aside(repeats) if repeats and dest is None else []
        crashpoint("retrieve.before_schedd")
        try:
            self.schedd.retrieve([job_id(*k) for k in keys])
        except ScheddError as e:
            retrieval.settle(moved, succeeded=False)
            self.stats.count("errors", self._clock())
            log.warning("retrieve.failed", schedd=self.schedd.name, jobs=len(keys), error=str(e))
            self._retrieve_failed(keys, tracked, e)
            return []
        crashpoint("retrieve.after_schedd")
        kept = retrieval.settle(moved, succeeded=True)
        if kept:
            log.warning("retrieve.repeated", schedd=self.schedd.name, kept=kept)
        # The output is in each job's Iwd (written durably) before the ledger says so.
        now = self._clock()
        self.ledger.apply_changes(self.schedd.name, [
            (c, p, {"state": "retrieved", "retrieved_at": now, "error": None, "retrieved_to": dest, **RETRIEVE_HEALED})
            for c, p in keys])
        crashpoint("retrieve.after_record")
        self._tell([(c, p, {"state": "retrieved"}) for c, p in keys])
        by_cluster: dict[int, list[int]] = {}
        for c, p in keys:
            by_cluster.setdefault(c, []).append(p)
        for c, procs in by_cluster.items():  # one event per cluster: 10,000 lines would cost more than the poll
            log.info("jobs.retrieved", schedd=self.schedd.name, cluster=c, procs=proc_ranges(procs), count=len(procs))
        return keys

    def _retrieve_failed(self, keys: list[Key], tracked: Mapping[Key, tuple[Any, ...]], error: ScheddError) -> None:
        """Say why each job's retrieve failed, and when (or whether) rsubd tries again.

        The schedd's message names one job's file; this machine is asked about every job's
        output paths. A path that cannot exist (a missing mount, a file where a directory must
        be, a read-only file system, someone else's directory) pauses that job's retrieves: a
        person must act, then `rsub retrieve`. Anything else (a full disk, a locked or
        immutable file, a schedd-side failure) is retried after a backoff that doubles up to
        `retry_max`; past `attention_after` of failures a person is asked too, while the retries go on.
        The output stays on the schedd either way: nothing here marks a job RETRIEVED.
        """
        found = _TARGET_JOB.search(error.message)
        named = (int(found[1]), int(found[2])) if found else None
        targets = self._output_paths(keys)
        now = self._clock()
        changes: list[Change] = []
        for key in keys:
            row = tracked[key]
            problem = retrieval.first_unwritable(targets.get(key, []))
            if problem is None and named is not None and named != key and len(keys) > 1:
                continue  # another job's output failed the batch: this one goes again next poll
            ident = f"{job_id(*key)}@{self.schedd.name}"
            failures = (row[RETRIEVE_FAILURES] or 0) + 1
            since = row[RETRIEVE_FAILING_SINCE] or now
            said = error.message if named in (key, None) or problem is None else str(problem)
            change: dict[str, Any] = {"retrieve_failures": failures, "retrieve_failing_since": since}
            if problem is not None and problem.permanent:
                attention = (f"{problem}: fix the path (or its mount), then run 'rsub retrieve {ident}', or fetch"
                             f" it elsewhere with 'rsub retrieve {ident} --dest DIR'; the output stays on the schedd")
                change.update(retrieve_retry_at=None, retrieve_paused=1, attention=attention,
                              error=f"retrieve failed: {said}; needs attention")
                log.error("job.needs_attention", schedd=self.schedd.name, job=job_id(*key), path=problem.path,
                          errno=problem.errno, reason=problem.strerror)
            else:
                delay = min(self.retry_max, self.retry_base * 2 ** min(failures - 1, 30))
                change.update(retrieve_retry_at=now + delay, error=f"retrieve failed: {said}; retrying in {delay:g} s")
                if now - since >= self.attention_after:
                    change["attention"] = (f"retrieves have failed for {now - since:.0f} s ({failures} tries):"
                                           f" {problem or said}; rsubd keeps trying")
            changes.append((key[0], key[1], change))
        self.ledger.apply_changes(self.schedd.name, changes)

    def retrieve_now(self, keys: Sequence[Key], *, dest: str | None = None) -> dict[str, list[Key]]:
        """`rsub retrieve`: fetch these completed jobs' output now (a paused job too), into their Iwd or `dest`.

        Runs the poll's own steps (intent, retrieve, record) between polls; the next poll marks
        them RETRIEVED once the schedd shows it sent the output, as after any retrieve.
        """
        with self._busy:
            rows = {(r[0], r[1]): r for r in self.ledger.tracked(self.schedd.name)}
            ready = [k for k in keys if k in rows and rows[k][STATE] == "completed"]
            if not ready:
                return {"retrieved": [], "failed": []}
            started = self._clock()
            intents = [(c, p, {"retrieve_started_at": rows[(c, p)][RETRIEVE_STARTED_AT] or started,
                               "retrieve_paused": 0, "retrieve_retry_at": None}) for c, p in ready]
            self.ledger.apply_changes(self.schedd.name, intents)
            tracked = {(r[0], r[1]): r for r in self.ledger.tracked(self.schedd.name) if (r[0], r[1]) in set(ready)}
            if dest is not None:
                self._redirect(ready, dest)
            done = self._retrieve(ready, tracked, dest=dest)
            return {"retrieved": done, "failed": [k for k in ready if k not in set(done)]}

    def _redirect(self, keys: Sequence[Key], dest: str) -> None:
        """Point these jobs' retrieve at `dest`: the schedd writes output into SUBMIT_Iwd, so that moves.

        Output named by an absolute path outside the job's Iwd (which may be the very path that
        cannot be written) lands in `dest` under its own name; a relative one keeps its place
        below `dest`.
        """
        ads = self.schedd.query(ids_constraint(list(keys)), REDIRECT_PROJECTION)
        for ad in ads:
            spec = [job_id(int(ad["ClusterId"]), int(ad["ProcId"]))]  # type: ignore[arg-type]
            for attr, value in retrieval.redirected(ad, dest).items():
                self.schedd.edit(spec, attr, value)

    def _output_paths(self, keys: Sequence[Key]) -> dict[Key, list[Path]]:
        """Where each job's output lands, from its cluster's submitted description."""
        by_cluster: dict[int, list[int]] = {}
        for c, p in keys:
            by_cluster.setdefault(c, []).append(p)
        descriptions = self.ledger.descriptions(self.schedd.name, list(by_cluster))
        out: dict[Key, list[Path]] = {}
        for cluster, procs in by_cluster.items():
            if cluster not in descriptions:
                continue
            text, submit_dir = descriptions[cluster]
            try:
                targets = retrieval.output_targets(text, submit_dir, cluster, procs)
            except submitdesc.SubmitError:
                continue
            out.update({(cluster, proc): paths for proc, paths in targets.items()})
        return out

    def _set_aside(self, repeats: Mapping[Key, float], *, only_leftovers: bool = False) -> list[tuple[Path, Path]]:
        """Before a repeated retrieve: move aside what the first attempt, or the user since, wrote."""
        moved: list[tuple[Path, Path]] = []
        for key, paths in self._output_paths(list(repeats)).items():
            moved += retrieval.leftovers(paths) if only_leftovers else retrieval.set_aside(paths, repeats[key])
        return moved

    def _settle_leftovers(self, keys: list[Key], tracked: Mapping[Key, tuple[Any, ...]]) -> None:
        """Output recorded home from StageOutFinish: finish any repeat a crash cut short after it set files aside."""
        repeats = {k: tracked[k][RETRIEVE_STARTED_AT] for k in keys if tracked[k][RETRIEVE_STARTED_AT] is not None}
        moved = self._set_aside(repeats, only_leftovers=True)
        if moved:
            retrieval.settle(moved, succeeded=True)

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
