"""Compaction: old final jobs keep their rows and lose their own events, so the ledger stops growing by them.

The rule (config `compact_after_days`, 30 by default, 0 never): a job that is final
(retrieved and marked on the schedd, removed or failed) and finished longer ago than
that (retrieved_at, else completed_at, else its last change: the time `rsub history`
sorts by) is compacted. Its row stays as it is, so `rsub history`, `rsub status ID`
and `rsub q ID` find and show it as before, run time and exit code included; its own
events (idle, running, completed, retrieved: about four rows a job, and with their
index most of the ledger's bytes) are replaced by the three times the views read
from them (`kept_run_started_at`, `kept_run_left_at`, `kept_finished_at`), and
`compacted_at` says when. The event that a cluster was submitted stays.

A poll runs it after its own work (`Compactor.maybe`), one transaction of at most
`BATCH` jobs, again at the next poll while there is more to do, then at most once
an hour (or once per the age, if it is shorter). Each schedd keeps a watermark in
`meta` (every job finished before it is done), so a run reads only the jobs that
came of age since the last one. (A job still unmarked when it comes of age, its
schedd unreachable for the whole age, finished before the watermark once marked:
it is left as it is, whole.) SQLite
reuses the pages freed, so the file stops growing by the events of old jobs; it does
not shrink unless VACUUMed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rsubd.ledger.schema import FINAL_SQL, FINISHED_AT

if TYPE_CHECKING:
    from rsubd.ledger.store import Ledger

BATCH = 10_000
PAUSE = 3600.0  # seconds between two runs once there is nothing left to compact (or the age, if shorter)
# The three times the views read from a job's events (ledger.reads.job_page), kept on its row.
KEEP = (
    "UPDATE jobs SET"
    " kept_run_started_at = (SELECT min(at) FROM events e WHERE e.schedd = ?1 AND e.cluster = ?2 AND e.proc = ?3"
    " AND e.to_state = 'running'),"
    " kept_run_left_at = (SELECT max(at) FROM events e WHERE e.schedd = ?1 AND e.cluster = ?2 AND e.proc = ?3"
    " AND e.from_state = 'running'),"
    " kept_finished_at = (SELECT min(at) FROM events e WHERE e.schedd = ?1 AND e.cluster = ?2 AND e.proc = ?3"
    " AND e.to_state IN ('completed', 'removed', 'failed')),"
    " compacted_at = ?4 WHERE schedd = ?1 AND cluster = ?2 AND proc = ?3"
)


def compact(ledger: Ledger, schedd: str, before: float, *, now: float, limit: int = BATCH) -> int:
    """Compact up to `limit` of the schedd's final jobs finished before `before`, in one transaction.

    Returns how many; fewer than `limit` means none is left before `before`.
    """
    key = f"compacted_through:{schedd}"
    with ledger.transaction() as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        since = float(row[0]) if row else 0.0
        # Through the partial index jobs_finished: its WHERE and expression spelled as here.
        jobs = conn.execute(
            f"SELECT cluster, proc, {FINISHED_AT} FROM jobs WHERE {FINAL_SQL} AND {FINISHED_AT} >= ?"
            f" AND {FINISHED_AT} < ? AND schedd = ? AND compacted_at IS NULL"
            " AND (state != 'retrieved' OR marked_at IS NOT NULL)"
            f" ORDER BY {FINISHED_AT} LIMIT ?", (since, before, schedd, limit)).fetchall()
        conn.executemany(KEEP, ((schedd, c, p, now) for c, p, _ in jobs))
        conn.executemany("DELETE FROM events WHERE schedd = ? AND cluster = ? AND proc = ?",
                         ((schedd, c, p) for c, p, _ in jobs))
        # A full batch may have left jobs finished at its last time: the next run starts there.
        through = jobs[-1][2] if len(jobs) >= limit else before
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, repr(max(since, through))))
    return len(jobs)


class Compactor:
    """When a poll should compact: while there is a backlog, every poll; then at most once per PAUSE."""

    def __init__(self, ledger: Ledger, after: float, *, clock: Callable[[], float] = time.time) -> None:
        self.ledger, self.after, self._clock = ledger, after, clock
        self._next: dict[str, float] = {}

    def maybe(self, schedd: str) -> int:
        """Compact one batch of the schedd's old final jobs if it is time; returns how many (0 if not time)."""
        now = self._clock()
        if self.after <= 0 or now < self._next.get(schedd, 0.0):
            return 0
        done = compact(self.ledger, schedd, now - self.after, now=now, limit=BATCH)
        if done < BATCH:  # nothing left for now: a job comes of age no sooner than `after` from now
            self._next[schedd] = now + min(PAUSE, self.after)
        return done
