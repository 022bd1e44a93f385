"""The tracked jobs of each schedd, kept in memory between polls; the ledger stays the truth.

Reading 100,000 tracked rows costs a poll about 0.3 s of CPU, and most polls change
few of them. So the ledger keeps what it last read, stamped with a token that
changes with every write to it: `Connection.total_changes` (every row inserted,
updated or deleted through rsubd's one connection, whichever code wrote it,
triggers included, rolled back or not) and `PRAGMA data_version` (a commit by any
other connection). A read whose token differs from the stamp reads the ledger
afresh. A poll's own changes (`Ledger.apply_changes`) are applied to the copy
instead, and only when nothing else wrote in between and each change can be
applied exactly as the row would read back; anything else clears it. Nothing is
written from here: a restart, or a crash, simply reads the ledger again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rsub.wire.vocabulary import ACTIVE_STATES
from rsubd.ledger.schema import TrackedJob

Key = tuple[int, int]
Token = tuple[int, int]
_INDEX = {name: i for i, name in enumerate(TrackedJob._fields)}
_TEXT = {"state", "hold_reason", "remove_reason"}  # TEXT columns; the others read back as numbers
_ACTIVE = frozenset(ACTIVE_STATES)


def is_tracked(job: TrackedJob) -> bool:
    """`schema.TRACKED_SQL` on a row: active, or retrieved and not yet marked."""
    return job.state in _ACTIVE or (job.state == "retrieved" and job.marked_at is None)


_NOT_BEFORE = _INDEX["retrieve_not_before"]
# What a change of these fields does to a TrackedJob: (index, name, a TEXT column) of each field it reads,
# and whether retrieve_not_before follows. Built once per shape of change: a poll's 15,000 changes have a few.
Plan = tuple[tuple[tuple[int, str, bool], ...], bool]
_PLANS: dict[tuple[str, ...], Plan | None] = {}


def _plan(names: tuple[str, ...]) -> Plan | None:
    if "retrieve_not_before" in names:
        return None
    read = tuple((_INDEX[n], n, n in _TEXT) for n in names if _INDEX.get(n, 0) >= 2)
    return read, "retrieve_paused" in names or "retrieve_retry_at" in names


def _reads_back(value: object, text: bool) -> bool:
    """Whether the ledger returns `value` as it is (equal in Python) for a TEXT column or a numeric one.

    A number written to a TEXT column, or text to a numeric one, is converted by SQLite's
    column affinity; the copy would then differ from what a read gives, so it is not kept.
    """
    if value is None:
        return True
    return value.__class__ is str if text else isinstance(value, (int, float))


def changed(job: TrackedJob, fields: Mapping[str, Any]) -> TrackedJob | None:
    """The row as the ledger reads it once `fields` are written; None if that cannot be told exactly."""
    names = tuple(fields)
    plan = _PLANS[names] if names in _PLANS else _PLANS.setdefault(names, _plan(names))
    if plan is None:
        return None
    read, timed = plan
    values = list(job)
    for i, name, text in read:
        value = fields[name]
        if not _reads_back(value, text):
            return None
        values[i] = value
    if timed and not _not_before(job, fields, values):
        return None
    return tuple.__new__(TrackedJob, values)


def _not_before(job: TrackedJob, fields: Mapping[str, Any], values: list[Any]) -> bool:
    """Set retrieve_not_before in `values`, `CASE WHEN retrieve_paused THEN inf ELSE retrieve_retry_at END`;
    False if the row cannot tell it."""
    old = job.retrieve_not_before
    if "retrieve_paused" in fields:
        paused = fields["retrieve_paused"]
        if not isinstance(paused, (int, float)):
            return False
    elif old is not None and math.isinf(old):
        return False  # paused, or a retry_at of inf: the row alone does not tell which
    else:
        paused = 0
    if paused:
        values[_NOT_BEFORE] = math.inf
    elif "retrieve_retry_at" in fields:
        retry_at = fields["retrieve_retry_at"]
        if not _reads_back(retry_at, False):
            return False
        values[_NOT_BEFORE] = retry_at
    elif old is not None and math.isinf(old):
        return False  # unpaused: its retry_at, which the row does not carry, shows again
    return True


class TrackedCache:
    """Each schedd's tracked jobs as the ledger said at `token`; used under the ledger's lock."""

    def __init__(self) -> None:
        self._jobs: dict[str, dict[Key, TrackedJob]] = {}
        self._token: Token | None = None

    def get(self, schedd: str, token: Token) -> dict[Key, TrackedJob] | None:
        if token != self._token:
            self.clear()
            return None
        return self._jobs.get(schedd)

    def put(self, schedd: str, token: Token, jobs: dict[Key, TrackedJob]) -> None:
        if token != self._token:
            self.clear()
        self._token = token
        self._jobs[schedd] = jobs

    def clear(self) -> None:
        self._jobs.clear()
        self._token = None

    def applied(self, schedd: str, before: Token, after: Token,
                changes: Sequence[tuple[int, int, Mapping[str, Any]]]) -> None:
        """`changes` to the schedd's jobs were committed, and nothing else, between tokens `before` and `after`."""
        if before != self._token:
            self.clear()
            return
        jobs = self._jobs.get(schedd)
        if jobs is not None:
            for cluster, proc, fields in changes:
                key = (cluster, proc)
                job = jobs.get(key)
                new = changed(job, fields) if job is not None else None
                if new is None:  # a row not tracked (it may become so), or a change not told exactly
                    self.clear()
                    return
                if is_tracked(new):
                    jobs[key] = new
                else:
                    del jobs[key]
        self._token = after  # the other schedds' rows did not change
