"""Following rsubd's watch stream: what `rsub wait` and `rsub watch` know of the jobs, frame by frame.

A `Tracker` keeps the last known view of each job and each cluster's summary, and turns every
frame (snapshot, change, resync, clusters, end) into the list of job changes it means. A resync
(rsubd sends one to a reader that fell far behind) is compared with what was known, so a reader
still hears of every job that changed, if not of every step between. `follow` reconnects with
`since=<last event>` when rsubd restarts, so nothing is missed.
"""

from __future__ import annotations

import argparse
import sys
import time

from rsub.connection import Failure, stream
from rsub.wire.vocabulary import EXIT_NO_DAEMON, FINAL_STATES

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from collections.abc import Iterator
    from typing import Any

RECONNECT_FOR = 120.0  # seconds a follower keeps asking an rsubd that went away (a restart) to come back
_FIELDS = ("state", "exit_code", "exit_signal", "hold_reason", "hold_code", "hold_hint", "needs_attention",
           "attention", "remove_reason", "error", "iwd", "retrieved_to")


class Change:
    """One job's news: its id, the state it was in (None when first seen) and its view now."""

    __slots__ = ("before", "id", "job")

    def __init__(self, ident: str, before: str | None, job: dict[str, Any]) -> None:
        self.id = ident
        self.before = before
        self.job = job


class Tracker:
    """What a follower knows: each job's view, each cluster's summary, each schedd's freshness."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.clusters: dict[str, dict[str, Any]] = {}
        self.schedds: dict[str, Any] = {}
        self.last_event: int | None = None
        self.recent: list[dict[str, Any]] = []  # the latest change frames, for `rsub watch`'s bottom lines
        self.ended: dict[str, Any] | None = None
        self.touched: list[str] = []  # the clusters whose summaries the last frame brought

    def apply(self, frame: dict[str, Any]) -> list[Change]:
        kind = frame.get("type")
        changes: list[Change] = []
        if kind in ("snapshot", "resync"):
            for job in frame.get("jobs", []):
                changes += self._update(job["id"], job)
        elif kind == "change":
            self.recent = [*self.recent[-49:], frame]
            if frame.get("proc") is not None:
                known = self.jobs.get(frame["id"], {"id": frame["id"], "cluster": frame["cluster"],
                                                    "proc": frame["proc"], "schedd": frame["schedd"]})
                view = {**known, "state": frame["to"], "needs_attention": frame.get("needs_attention", False)}
                for key in ("exit_code", "exit_signal", "hold_reason"):
                    if frame.get(key) is not None or key == "hold_reason":
                        view[key] = frame.get(key)
                if frame.get("detail") and frame["to"] in ("removed", "failed"):
                    view["remove_reason" if frame["to"] == "removed" else "error"] = frame["detail"]
                changes += self._update(frame["id"], view)
        if kind == "snapshot" and "since" in frame:
            self.last_event = frame["since"]
        for key in ("event",):
            if isinstance(frame.get(key), int):
                self.last_event = frame[key]
        self.touched = []
        for summary in frame.get("clusters", []) or []:
            self.clusters[summary["id"]] = summary
            self.touched.append(summary["id"])
        if isinstance(frame.get("schedds"), dict):
            self.schedds = frame["schedds"]
        if kind == "end":
            self.ended = frame
        return changes

    def _update(self, ident: str, view: dict[str, Any]) -> list[Change]:
        known = self.jobs.get(ident)
        merged = {**(known or {}), **view}
        self.jobs[ident] = merged
        if known is not None and all(known.get(k) == merged.get(k) for k in ("state", "needs_attention")):
            return []
        return [Change(ident, None if known is None else known.get("state"), merged)]

    # -- how it ended ----------------------------------------------------------------------------

    def outcome(self) -> dict[str, list[dict[str, Any]]]:
        """The jobs by how they ended: needs attention, failed, removed, exited non-zero, fine, not final."""
        out: dict[str, list[dict[str, Any]]] = {k: [] for k in ("attention", "failed", "removed", "nonzero", "ok",
                                                                 "active")}
        for job in self.jobs.values():
            if job.get("needs_attention"):
                out["attention"].append(job)
            elif job["state"] == "failed":
                out["failed"].append(job)
            elif job["state"] == "removed":
                out["removed"].append(job)
            elif job["state"] in FINAL_STATES and (job.get("exit_signal") is not None or job.get("exit_code") not in (
                    None, 0)):
                out["nonzero"].append(job)
            elif job["state"] in FINAL_STATES:
                out["ok"].append(job)
            else:
                out["active"].append(job)
        return out


def follow(args: argparse.Namespace, tracker: Tracker, **fields: Any) -> Iterator[list[Change]]:
    """The watch stream's frames as the changes each makes known, across rsubd restarts."""
    gone_since: float | None = None
    deadline = None if fields.get("timeout") is None else time.monotonic() + float(fields["timeout"])
    while True:
        if deadline is not None:
            fields["timeout"] = max(0.0, deadline - time.monotonic())
        try:
            for frame in stream(args, "watch", **fields):
                gone_since = None
                yield tracker.apply(frame)
            return
        except Failure as e:
            # A watch only reads, so asking again is always safe; not when rsubd was never reached.
            if e.exit_code != EXIT_NO_DAEMON or not (e.sent or tracker.last_event is not None):
                raise
            at = time.monotonic()
            if gone_since is None:
                gone_since = at
                print(f"rsub: {e.message}; waiting up to {RECONNECT_FOR:g} s for it to come back", file=sys.stderr)
            if at - gone_since > RECONNECT_FOR or (deadline is not None and at >= deadline):
                raise
            if tracker.last_event is not None:
                fields["since"] = tracker.last_event
            time.sleep(0.5)
