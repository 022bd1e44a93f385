"""The retrieve side of a poll: fetch completed jobs' output from the spool, record it, and say why it failed.

The order is the crash-safe one: the poll records a retrieve's intent
(`retrieve_started_at`) before `Retriever.retrieve` asks the schedd, the output is
in each job's Iwd before the ledger says retrieved, and the mark (RETRIEVED = true)
is sent by the poll only once the ledger says so. A repeated retrieve first sets
aside what the first attempt, or the user since, wrote (services/retrieval.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from rsubd import submitdesc
from rsubd.backends.schedd import Schedd, ScheddError, ids_constraint, job_id, proc_runs
from rsubd.ledger.store import Ledger, TrackedJob
from rsubd.platform.crash import crashpoint
from rsubd.polling import dagpoll
from rsubd.services import eventlog, retrieval

log = structlog.get_logger("rsubd.polling.poller")  # the poll's own events, wherever in the poll they happen
Key = tuple[int, int]
_T = TypeVar("_T")
Change = tuple[int, int, dict[str, Any]]
REDIRECT_PROJECTION = ("ClusterId", "ProcId", "SUBMIT_Iwd", "Out", "Err", "SUBMIT_TransferOutputRemaps")
# A retrieve that succeeds ends whatever its earlier failures said.
RETRIEVE_HEALED: dict[str, Any] = {"retrieve_failures": 0, "retrieve_failing_since": None, "retrieve_retry_at": None,
                                   "retrieve_paused": 0, "attention": None}
RETRY_BASE = 2.0  # seconds before the first retry of a retrieve that failed; doubled after each failure
_TARGET_JOB = re.compile(r"target job (\d+)\.(\d+)")


def proc_ranges(procs: Sequence[int]) -> str:
    """Proc ids as HTCondor users read them: "0-99,105"."""
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in proc_runs(procs))


class Retriever:
    """Retrieves one schedd's completed jobs for a `Poller`, which holds its lock while it does."""

    def __init__(self, ledger: Ledger, schedd: Schedd, *, clock: Callable[[], float],
                 count: Callable[[str, float], None], tell: Callable[[Sequence[Change]], None],
                 retry_base: float = RETRY_BASE, retry_max: float = 600.0, attention_after: float = 3600.0) -> None:
        self.ledger = ledger
        self.schedd = schedd
        self._clock = clock
        self._count = count  # the poller's PollStats.count: retrieves count among what rsub asked of the schedd
        self._tell = tell
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.attention_after = attention_after

    def retrieve(self, keys: list[Key], tracked: Mapping[Key, TrackedJob], *,
                  dest: str | None = None) -> list[Key]:
        if not keys:
            return []
        self._count("retrieve_calls", self._clock())
        repeats = {k: t for k in keys if (t := tracked[k].retrieve_started_at) is not None}
        moved = self._set_aside(repeats) if repeats and dest is None else []
        crashpoint("retrieve.before_schedd")
        try:
            self.schedd.retrieve([job_id(*k) for k in keys])
        except ScheddError as e:
            retrieval.settle(moved, succeeded=False)
            self._count("errors", self._clock())
            log.warning("retrieve.failed", schedd=self.schedd.name, jobs=len(keys), error=str(e))
            self._failed(keys, tracked, e)
            return []
        crashpoint("retrieve.after_schedd")
        kept = retrieval.settle(moved, succeeded=True)
        if kept:
            log.warning("retrieve.repeated", schedd=self.schedd.name, kept=kept)
        self.merge_logs(keys, dest)
        if dest is None:
            dagpoll.place_retrieved(self.ledger, self.schedd.name, keys)  # a DAG's files, each to its home
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

    def _failed(self, keys: list[Key], tracked: Mapping[Key, TrackedJob], error: ScheddError) -> None:
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
        history = self.ledger.retrieve_failures(self.schedd.name, keys)
        now = self._clock()
        changes: list[Change] = []
        for key in keys:
            problem = retrieval.first_unwritable(targets.get(key, []))
            if problem is None and named is not None and named != key and len(keys) > 1:
                continue  # another job's output failed the batch: this one goes again next poll
            ident = f"{job_id(*key)}@{self.schedd.name}"
            before, failing_since = history.get(key, (0, None))
            failures = before + 1
            since = failing_since or now
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

    def redirect(self, keys: Sequence[Key], dest: str) -> None:
        """Point these jobs' retrieve at `dest`: the schedd writes output into SUBMIT_Iwd, so that moves.

        Output named by an absolute path outside the job's Iwd (which may be the very path that
        cannot be written) lands in `dest` under its own name; a relative one keeps its place
        below `dest`.
        """
        ads = self.schedd.query(ids_constraint(list(keys)), REDIRECT_PROJECTION)
        for ad in ads:
            spec = [job_id(int(ad["ClusterId"]), int(ad["ProcId"]))]  # type: ignore[arg-type]  # a queue ad's ids are ints
            for attr, value in retrieval.redirected(ad, dest).items():
                self.schedd.edit(spec, attr, value)

    def _per_cluster(self, keys: Sequence[Key], read: Callable[[str, str, int, list[int]], dict[int, _T]]
                     ) -> dict[Key, _T]:
        """`read(description, submit_dir, cluster, procs)` for each cluster's submitted description, by job."""
        by_cluster: dict[int, list[int]] = {}
        for c, p in keys:
            by_cluster.setdefault(c, []).append(p)
        descriptions = self.ledger.descriptions(self.schedd.name, list(by_cluster))
        out: dict[Key, _T] = {}
        for cluster, procs in by_cluster.items():
            if cluster not in descriptions:
                continue
            text, submit_dir = descriptions[cluster]
            try:
                found = read(text, submit_dir, cluster, procs)
            except submitdesc.SubmitError:
                continue
            out.update({(cluster, proc): value for proc, value in found.items()})
        return out

    def _output_paths(self, keys: Sequence[Key]) -> dict[Key, list[Path]]:
        """Where each job's output lands, from its cluster's submitted description."""
        return self._per_cluster(keys, retrieval.output_targets)

    def merge_logs(self, keys: Sequence[Key], dest: str | None = None) -> None:
        """Join each retrieved proc's event log into the user's (services/eventlog.py); never fails a retrieve."""
        parts: dict[Path, list[Path]] = {}
        targets = self._per_cluster(keys, lambda text, where, c, procs: retrieval.log_targets(text, where, c, procs,
                                                                                             dest))
        for copies, user_log in targets.values():
            parts.setdefault(user_log, []).extend(dict.fromkeys(copies))
        for user_log, files in parts.items():
            try:
                added = eventlog.merge(user_log, files)
            except OSError as e:
                # Each proc's own log stays beside it, so nothing is lost; the next retrieve of the cluster tries again.
                log.warning("eventlog.merge_failed", schedd=self.schedd.name, path=str(user_log), error=str(e))
                continue
            if added:
                log.debug("eventlog.merged", schedd=self.schedd.name, path=str(user_log), events=added)

    def _set_aside(self, repeats: Mapping[Key, float], *, only_leftovers: bool = False) -> list[tuple[Path, Path]]:
        """Before a repeated retrieve: move aside what the first attempt, or the user since, wrote."""
        moved: list[tuple[Path, Path]] = []
        for key, paths in self._output_paths(list(repeats)).items():
            moved += retrieval.leftovers(paths) if only_leftovers else retrieval.set_aside(paths, repeats[key])
        return moved

    def settle_leftovers(self, keys: list[Key], tracked: Mapping[Key, TrackedJob]) -> None:
        """Output recorded home from StageOutFinish: finish any repeat a crash cut short after it set files aside."""
        repeats = {k: t for k in keys if (t := tracked[k].retrieve_started_at) is not None}
        moved = self._set_aside(repeats, only_leftovers=True)
        if moved:
            retrieval.settle(moved, succeeded=True)
        self.merge_logs(keys)
