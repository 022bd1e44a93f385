"""`watch`: the live event stream `rsub wait` and `rsub watch` read.

The ledger's append-only `events` table is the source: a watcher starts with a snapshot of
what it selected (and the id of the newest event then), then sends each event recorded since,
in order, as one frame. A watcher that comes back with `since=<event id>` misses nothing.

Frames (each a result with "type"; every one but the last has "more": true):
- snapshot: chunks of job views ("jobs", with `jobs=True`), the last with "complete": true,
  the cluster summaries, each schedd's freshness, and "since", the newest event id then;
- change: one job's state change: event id, time, id, from and to, exit code and signal, hold
  reason, needs_attention (a cluster's submit is one change with proc null);
- clusters: the summaries of the clusters the changes since the last one touched;
- resync: a reader so far behind (more than `coalesce_after` events) that it gets the state
  now instead of every event between: "skipped" events, then the selected jobs' views in chunks
  and the cluster summaries, so what it knows is right again and memory stays bounded;
- poll: each schedd's freshness, after a poll ends;
- heartbeat: after `heartbeat` seconds of nothing, so either end finds out the other is gone;
- end (last): "done" true when every selected job is final or needs a person (`until_final`),
  false at the timeout.

Nothing is queued per watcher: it reads the next page of events when the socket has taken the
last one, so a slow reader costs a read position, not memory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from rsub.wire.vocabulary import ErrorCode, RequestError, iso
from rsubd.backends.schedd import job_id
from rsubd.handlers.context import Services, check_schedd, selectors
from rsubd.ledger.schema import JobSelector
from rsubd.ledger.watchreads import ClusterKey
from rsubd.services import dagviews
from rsubd.services.views import job_view

PAGE = 500  # events read at once
CHUNK = 2000  # job views per snapshot or resync frame
COALESCE_AFTER = 5000  # events behind past which a reader gets a resync instead of each event
HEARTBEAT = 15.0
_EXITED = ("completed", "retrieved")
TICK = 1.0  # seconds between looks at the events table when no poll ends (submits, holds, retrieves)


def watch(services: Services, f: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Check the request now (errors are a plain error reply), then stream."""
    ids = f.get("ids") or []
    sels = selectors(services, ids)
    schedd = f.get("schedd")
    check_schedd(services, schedd)
    since = f.get("since")
    if since is not None and (type(since) is not int or since < 0):
        raise RequestError(ErrorCode.BAD_REQUEST, "since must be an event id (an integer >= 0)")
    timeout = f.get("timeout")
    if timeout is not None and not (0 <= float(timeout) < float("inf")):
        raise RequestError(ErrorCode.BAD_REQUEST, "timeout must be a number of seconds >= 0")
    coalesce = f.get("coalesce_after")
    if coalesce is not None and (type(coalesce) is not int or coalesce < 1):
        raise RequestError(ErrorCode.BAD_REQUEST, "coalesce_after must be an integer >= 1")
    for sel, text in zip(sels, ids, strict=True):
        if not services.ledger.selects_any([sel], schedd):
            raise RequestError(ErrorCode.NOT_FOUND, f"no job {text} in rsub's ledger")
    if f.get("until_final") and sels:
        # `rsub wait`: ask for fresh news of the schedds it waits on (within their early-poll budgets).
        for name in sorted({name for name, _ in services.ledger.selected_clusters(sels, schedd)}):
            services.polls.poke(name)
    watcher = Watcher(services, sels, schedd, jobs=bool(f.get("jobs", False)),
                      until_final=bool(f.get("until_final", False)), coalesce_after=coalesce or COALESCE_AFTER)
    return watcher.stream(since, None if timeout is None else float(timeout))


class Watcher:
    """One watcher's selection and read position; `stream` is its frames."""

    def __init__(self, services: Services, sels: Sequence[JobSelector], schedd: str | None, *, jobs: bool,
                 until_final: bool, coalesce_after: int) -> None:
        self.services = services
        self.ledger = services.ledger
        self.sels = list(sels)
        self.schedd = schedd
        self.jobs = jobs
        self.until_final = until_final
        self.coalesce_after = coalesce_after
        # With no ids, the clusters watched: the active ones at the start and any that appear since.
        self.watched: set[ClusterKey] | None = None if self.sels else set()

    def clusters(self) -> set[ClusterKey]:
        if self.watched is not None:
            return set(self.watched)
        return self.ledger.selected_clusters(self.sels, self.schedd)

    def _jobs_frames(self, kind: str, extra: dict[str, Any]) -> list[dict[str, Any]]:
        """The selected jobs' views in chunks (none unless `jobs`); the last frame carries `extra`."""
        frames: list[dict[str, Any]] = []
        after: tuple[str, int, int] | None = None
        while True:
            rows = self.ledger.selected_jobs(self.sels, self.schedd, self.watched, after, CHUNK) if self.jobs else []
            frame: dict[str, Any] = {"type": kind, "jobs": dagviews.annotate(self.ledger,
                                                                         [job_view(r) for r in rows])}
            frames.append(frame)
            if len(rows) < CHUNK:
                frame.update(extra, complete=True)
                return frames
            after = (rows[-1]["schedd"], rows[-1]["cluster"], rows[-1]["proc"])

    def _summaries(self, keys: set[ClusterKey]) -> list[dict[str, Any]]:
        """Each cluster's summary; a DAG's carries its node progress (services/dagviews.py)."""
        return dagviews.annotate_clusters(self.ledger, self.ledger.cluster_summaries(keys))

    def _end(self, done: bool, last: int) -> dict[str, Any]:
        return {"type": "end", "done": done, "reason": "final" if done else "timeout", "event": last,
                "clusters": self._summaries(self.clusters())}

    async def stream(self, since: int | None, timeout: float | None) -> AsyncIterator[dict[str, Any]]:
        polls, ledger = self.services.polls, self.ledger
        deadline = None if timeout is None else time.monotonic() + timeout
        newest = ledger.newest_event()
        last = newest if since is None else min(since, newest)
        if self.watched is not None:
            self.watched = ledger.selected_clusters(self.sels, self.schedd, active_only=True)
            if since is not None:  # what appeared while the watcher was away
                self.watched |= ledger.clusters_with_events(last, newest, self.sels, self.schedd)
        fresh = _polled(polls.freshness())
        state = {"since": last, "clusters": self._summaries(self.clusters()), "schedds": polls.freshness()}
        for frame in self._jobs_frames("snapshot", state):
            yield frame
        quiet_since = time.monotonic()
        while True:
            # Final is decided before the read, so the events that made it so are sent before the end.
            final = self.until_final and not ledger.unfinished(self.sels, self.schedd, self.watched) \
                and not ledger.dags_unplaced(self.clusters())  # a DAG ends once its files are home
            rows = ledger.events_after(last, self.sels, self.schedd, PAGE)
            if rows:
                newest = ledger.newest_event()
                if newest - last > self.coalesce_after:
                    if self.watched is not None:
                        self.watched |= ledger.clusters_with_events(last, newest, self.sels, self.schedd)
                    extra = {"event": newest, "skipped": newest - last,
                             "clusters": self._summaries(self.clusters())}
                    for frame in self._jobs_frames("resync", extra):
                        yield frame
                    last = newest
                else:
                    touched: set[ClusterKey] = set()
                    for r in rows:
                        touched.add((r["schedd"], r["cluster"]))
                        yield change_frame(r)
                    last = rows[-1]["id"]
                    if self.watched is not None:
                        self.watched |= touched
                    yield {"type": "clusters", "event": last, "clusters": self._summaries(touched)}
                quiet_since = time.monotonic()
                continue  # read on until nothing is left, then decide again
            if final:
                yield self._end(True, last)
                return
            now_fresh = _polled(polls.freshness())
            if now_fresh != fresh:
                fresh = now_fresh
                # A DAG's node progress changes with no event of its DAGMan job: each poll says it anew.
                yield {"type": "poll", "schedds": polls.freshness(),
                       "clusters": self._summaries(self.ledger.dag_clusters(self.clusters()))}
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                yield self._end(False, last)
                return
            if now - quiet_since >= HEARTBEAT:
                quiet_since = now
                yield {"type": "heartbeat", "event": last}
            await polls.wait_for_poll(TICK if deadline is None else max(0.0, min(TICK, deadline - now)))


def _polled(freshness: dict[str, Any]) -> dict[str, Any]:
    """What a poll changes in each schedd's freshness (its staleness grows by itself between polls)."""
    return {name: (f.get("last_ok_poll"), f.get("last_error")) for name, f in freshness.items()}


def change_frame(r: dict[str, Any]) -> dict[str, Any]:
    """One event as a frame; a cluster's own event (its submit) has proc None and the cluster's id."""
    proc = r["proc"]
    ident = f"{r['cluster']}@{r['schedd']}" if proc is None else f"{job_id(r['cluster'], proc)}@{r['schedd']}"
    return {"type": "change", "event": r["id"], "at": iso(r["at"]), "id": ident, "cluster": r["cluster"],
            "proc": proc, "schedd": r["schedd"], "from": r["from_state"], "to": r["to_state"],
            # The job's exit as the ledger has it now: shown only for the states that follow one.
            "exit_code": r["exit_code"] if r["to_state"] in _EXITED else None,
            "exit_signal": r["exit_signal"] if r["to_state"] in _EXITED else None,
            "hold_reason": r["hold_reason"] if r["to_state"] == "held" else None,
            "detail": r["detail"], "needs_attention": r["attention"] is not None}
