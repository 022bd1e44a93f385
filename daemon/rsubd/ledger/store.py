"""The ledger: every cluster and job rsubd submitted, in SQLite. Its SQL is here and in ledger.reads.

Numbered migrations (ledger.schema) run at start inside a transaction each; `PRAGMA
user_version` records the last one applied. WAL mode lets `rsub status` read while a poll writes.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rsubd.ledger import schema
from rsubd.ledger.dags import DagStore
from rsubd.ledger.diagnosis import LedgerError, check_ours, refusal
from rsubd.ledger.lineage import LineageStore
from rsubd.ledger.pendingholds import PendingHolds
from rsubd.ledger.reads import LedgerReads
from rsubd.ledger.schema import JobSelector, Row, TrackedJob
from rsubd.ledger.trackedcache import Token, TrackedCache
from rsubd.ledger.watchreads import WatchReads

__all__ = ["JobSelector", "Ledger", "LedgerError", "Row", "TrackedJob"]
Key = tuple[int, int]
# SQLite's page cache for rsubd's connection, in KiB (its default is 2 MiB): a poll's 15,000 changes of
# 100,000 tracked jobs find most of the pages they touch already in memory instead of reading them from
# the file again, about 0.1 s of that poll's CPU. 64 MiB saved a little more on the year's ledger and
# took the poll's peak to 236 MB of the 250 MB target (bench/README.md). Filled only as pages are read.
PAGE_CACHE_KIB = 32 * 1024


class Ledger(LedgerReads, WatchReads, PendingHolds, DagStore, LineageStore):
    """The durable record of rsub's clusters and jobs; safe to use from several threads."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        """Open (or create) the ledger; refuse, without writing a byte, one that is not this rsubd's to use.

        `busy_timeout` bounds the wait for another process's lock: rsubd refuses to start, it never hangs.
        """
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # private from the start; SQLite's sidecars follow
        self.path = path
        self._lock = threading.RLock()
        self._tracked = TrackedCache()  # what `tracked_by_key` last read, kept while nothing else writes
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout)
            self._conn = conn
            version = check_ours(conn, path)  # reads only: everything after it may write
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate(version)
            self.instance_id = self._instance_id()
        except BaseException as e:
            if conn is not None:
                conn.close()  # a refused ledger must not stay open (and locked) in this process
            if isinstance(e, sqlite3.DatabaseError):
                raise LedgerError(refusal(path, e)) from None
            raise
        path.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _migrate(self, version: int) -> None:
        for number in range(version + 1, len(schema.MIGRATIONS) + 1):
            with self.transaction() as conn:
                statement = ""
                for piece in schema.MIGRATIONS[number - 1].split(";"):
                    statement += piece + ";"
                    if sqlite3.complete_statement(statement):  # a trigger's body holds ";" of its own
                        if statement.strip(" \n;"):
                            conn.execute(statement)
                        statement = ""
                conn.execute(f"PRAGMA user_version = {number}")

    def _instance_id(self) -> str:
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone()
            if row:
                return str(row[0])
            value = uuid.uuid4().hex
            conn.execute("INSERT INTO meta (key, value) VALUES ('instance_id', ?)", (value,))
            return value

    def generation(self) -> Token:
        """Moves with every write to the ledger: rows changed on this connection (by any code, triggers included)
        and commits by any other (PRAGMA data_version). What the kept tracked jobs and pages are stamped with."""
        with self._lock:
            return self._conn.total_changes, int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            cur = self._conn.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur]

    # -- submit --------------------------------------------------------------

    def cluster_by_request(self, request_id: str) -> Row | None:
        rows = self._query("SELECT * FROM clusters WHERE request_id = ?", [request_id])
        return rows[0] if rows else None

    def add_submit_intent(
        self, *, request_id: str, schedd: str, tag: str, description: str, submitted_description: str,
        submit_dir: str, submit_file: str | None, token_profile: str | None = None,
    ) -> int:
        """Record a submit before the schedd hears of it; returns the cluster row id."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO clusters (request_id, schedd, tag, state, description, submitted_description,"
                " submit_dir, submit_file, created_at, token_profile)"
                " VALUES (?, ?, ?, 'submitting', ?, ?, ?, ?, ?, ?)",
                (request_id, schedd, tag, description, submitted_description, submit_dir, submit_file, time.time(),
                 token_profile),
            )
            return int(cur.lastrowid or 0)

    def record_submitted(self, row: int, cluster: int, procs: Sequence[tuple[int, str]]) -> None:
        """The schedd made the cluster: one job row per proc, in state spooling.

        The event is one for the whole cluster (proc NULL, which `events` shows
        with every proc's own): a 10,000-job submit writes 10,000 rows, not 20,000.
        """
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE clusters SET cluster = ?, state = 'spooling', num_procs = ?, submitted_at = ? WHERE id = ?",
                (cluster, len(procs), now, row),
            )
            schedd = conn.execute("SELECT schedd FROM clusters WHERE id = ?", (row,)).fetchone()[0]
            conn.executemany(
                "INSERT INTO jobs (schedd, cluster, proc, cluster_row, state, job_status, iwd, submitted_at,"
                " updated_at) VALUES (?, ?, ?, ?, 'spooling', 5, ?, ?, ?)",
                ((schedd, cluster, proc, row, iwd, now, now) for proc, iwd in procs),
            )
            conn.execute(
                "INSERT INTO events (at, schedd, cluster, proc, from_state, to_state, detail)"
                " VALUES (?, ?, ?, NULL, NULL, 'spooling', ?)",
                (now, schedd, cluster, f"{len(procs)} job(s) submitted"),
            )

    def unfinished_submits(self, schedd: str) -> list[Row]:
        """Submits whose outcome rsubd did not record (it stopped between intent and outcome)."""
        return self._query("SELECT * FROM clusters WHERE schedd = ?"
                           " AND state IN ('submitting', 'spooling', 'replacing') ORDER BY id", [schedd])

    def note_submit(self, row: int, note: str) -> None:
        """Say why a submit's outcome is unknown (its call was cut off), while recovery settles it."""
        with self.transaction() as conn:
            conn.execute("UPDATE clusters SET error = ? WHERE id = ? AND state = 'submitting'", (note, row))

    def record_interrupted(self, row: int, error: str) -> None:
        """The submit never reached the schedd: nothing exists there; a retry may submit it again."""
        with self.transaction() as conn:
            conn.execute("UPDATE clusters SET state = 'interrupted', error = ? WHERE id = ?", (error, row))

    def restart_submit(self, row: int, *, tag: str, submitted_description: str,
                       moved_to: tuple[str, str] | None = None) -> None:
        """A retried request takes up its interrupted intent again.

        `moved_to` (description, submit directory): what the retry submits, where it differs from the
        first try's (a DAG's retry is staged afresh).
        """
        with self.transaction() as conn:
            conn.execute("UPDATE clusters SET state = 'submitting', error = NULL, tag = ?, submitted_description = ?"
                         " WHERE id = ? AND state = 'interrupted'", (tag, submitted_description, row))
            if moved_to is not None:
                conn.execute("UPDATE clusters SET description = ?, submit_dir = ? WHERE id = ?", (*moved_to, row))

    def replace_with_intent(self, row: int, reason: str, *, tag: str, submitted_description: str) -> int:
        """An unspooled cluster is removed and submitted again: in one transaction, the old cluster gives up
        its request id and its jobs are removed, and the new intent takes the request id. Returns the new row."""
        now = time.time()
        with self.transaction() as conn:
            old = conn.execute("SELECT request_id, schedd, cluster, description, submit_dir, submit_file"
                               " FROM clusters WHERE id = ?", (row,)).fetchone()
            request_id, schedd, cluster = old[0], old[1], old[2]
            conn.execute("UPDATE clusters SET state = 'replacing', error = ?, request_id = ? WHERE id = ?",
                         (reason, f"{request_id}#replaced-{row}", row))
            conn.execute("UPDATE jobs SET state = 'removed', remove_reason = ?, updated_at = ? WHERE cluster_row = ?",
                         (reason, now, row))
            conn.execute("INSERT INTO events (at, schedd, cluster, proc, from_state, to_state, detail)"
                         " VALUES (?, ?, ?, NULL, 'spooling', 'removed', ?)", (now, schedd, cluster, reason))
            cur = conn.execute(
                "INSERT INTO clusters (request_id, schedd, tag, state, description, submitted_description,"
                " submit_dir, submit_file, created_at) VALUES (?, ?, ?, 'submitting', ?, ?, ?, ?, ?)",
                (request_id, schedd, tag, old[3], submitted_description, old[4], old[5], now),
            )
            # A resubmit's lineage (ledger/lineage.py) goes with its request to the new row.
            conn.execute("UPDATE lineage SET new_row = ? WHERE new_row = ?", (cur.lastrowid, row))
            return int(cur.lastrowid or 0)

    def descriptions(self, schedd: str, clusters: Sequence[int]) -> dict[int, tuple[str, str]]:
        """The submitted description and submit directory of each cluster."""
        marks = ", ".join("?" * len(clusters))
        rows = self._query(f"SELECT cluster, submitted_description, submit_dir FROM clusters WHERE schedd = ?"
                           f" AND cluster IN ({marks})", [schedd, *clusters])
        return {r["cluster"]: (r["submitted_description"], r["submit_dir"]) for r in rows}

    def record_replaced(self, row: int) -> None:
        """The replaced cluster's jobs are removed from the schedd."""
        with self.transaction() as conn:
            conn.execute("UPDATE clusters SET state = 'replaced' WHERE id = ? AND state = 'replacing'", (row,))

    def replaced_count(self, request_id: str) -> int:
        """How many times rsub already removed and resubmitted this request's cluster."""
        base = request_id.split("#", 1)[0]
        rows = self._query("SELECT COUNT(*) AS n FROM clusters WHERE request_id >= ? AND request_id < ?",
                           [f"{base}#replaced-", f"{base}#replaced."])
        return int(rows[0]["n"])

    def record_spooled(self, row: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE clusters SET state = 'submitted' WHERE id = ?", (row,))

    def record_submit_failed(self, row: int, error: str) -> None:
        """The submit or the spool failed: the cluster and any jobs it has are failed."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute("UPDATE clusters SET state = 'failed', error = ? WHERE id = ?", (error, row))
            jobs = conn.execute("SELECT schedd, cluster, proc, state FROM jobs WHERE cluster_row = ?",
                                (row,)).fetchall()
            conn.execute(
                "UPDATE jobs SET state = 'failed', error = ?, updated_at = ? WHERE cluster_row = ?", (error, now, row)
            )
            conn.executemany(
                "INSERT INTO events (at, schedd, cluster, proc, from_state, to_state, detail)"
                " VALUES (?, ?, ?, ?, ?, 'failed', ?)",
                ((now, s, c, p, st, error) for s, c, p, st in jobs),
            )

    # -- polling -------------------------------------------------------------

    def tracked_jobs(self, schedd: str) -> list[Row]:
        """Jobs a poll must look at: active, or retrieved but not yet marked on the schedd."""
        return self._query(f"SELECT * FROM jobs WHERE schedd = ? AND {schema.TRACKED_SQL}", [schedd])

    def tracked(self, schedd: str) -> list[TrackedJob]:
        """The jobs of `tracked_jobs` as `TrackedJob`s: what a poll needs, compactly."""
        with self._lock:
            cur = self._conn.execute(
                f"SELECT {', '.join(schema.TRACKED_COLUMNS)} FROM jobs WHERE schedd = ? AND {schema.TRACKED_SQL}",
                (schedd,),
            )
            # tuple.__new__ straight from the cursor: a third of what TrackedJob._make (Python code) costs
            # for 100,000 rows, and no second list of plain tuples beside the NamedTuples.
            return list(map(tuple.__new__, itertools.repeat(TrackedJob), cur))

    def tracked_by_key(self, schedd: str) -> dict[Key, TrackedJob]:
        """`tracked` by (cluster, proc), a copy the caller may keep: from memory while nothing else wrote the ledger."""
        with self._lock:
            token = self.generation()
            jobs = self._tracked.get(schedd, token)
            if jobs is None:
                jobs = {(r[0], r[1]): r for r in self.tracked(schedd)}
                self._tracked.put(schedd, token, jobs)
            return dict(jobs)

    def retrieve_failures(self, schedd: str, keys: Sequence[Key]) -> dict[Key, tuple[int, float | None]]:
        """(failed retrieves in a row, failing since) of these jobs: read only when a retrieve fails."""
        out: dict[Key, tuple[int, float | None]] = {}
        for terms, args in schema.key_terms(keys, size=5000):
            for r in self._query("SELECT cluster, proc, retrieve_failures, retrieve_failing_since FROM jobs"
                                 f" WHERE schedd = ? AND ({terms})", [schedd, *args]):
                out[(r["cluster"], r["proc"])] = (r["retrieve_failures"] or 0, r["retrieve_failing_since"])
        return out

    def apply_changes(self, schedd: str, changes: Sequence[tuple[int, int, dict[str, Any]]]) -> int:
        """Apply a poll's changes in one transaction; a state change also goes to events.

        Only the rows named are touched. Rows changing the same fields share one
        prepared UPDATE (executemany), so 10,000 changes are one statement per shape.
        """
        if not changes:
            return 0
        mutable = set(schema.MUTABLE_FIELDS)
        for _, _, fields in changes:
            if not fields.keys() <= mutable:
                raise ValueError(f"not a mutable job field: {sorted(set(fields) - mutable)}")
        now = time.time()
        with self._lock:
            with self.transaction() as conn:
                before = self.generation()  # inside the transaction: no other connection commits until ours
                # The jobs' states as the ledger has them now, from memory when it holds them all: each
                # event's from_state is then known, and its INSERT need not read the job's row.
                known = self._tracked.get(schedd, before)
                batch: list[tuple[int, int, dict[str, Any]]] = []
                keys: set[tuple[int, int]] = set()
                for change in changes:
                    if (change[0], change[1]) in keys:  # a job changed twice: the first change lands first
                        self._apply_batch(conn, schedd, batch, now, known)
                        batch, keys, known = [], set(), None  # (the states are no longer those in memory)
                    batch.append(change)
                    keys.add((change[0], change[1]))
                self._apply_batch(conn, schedd, batch, now, known)
                after = (conn.total_changes, before[1])
            self._tracked.applied(schedd, before, after, changes)  # the poll's news, kept in memory too
        return len(changes)

    @staticmethod
    def _apply_batch(conn: sqlite3.Connection, schedd: str, changes: Sequence[tuple[int, int, dict[str, Any]]],
                     now: float, known: dict[Key, TrackedJob] | None) -> None:
        """Changes to distinct jobs, inside the caller's transaction.

        The event of a state change is written first, with the job's state as it is in this
        transaction as from_state: `known` (the ledger's tracked rows as they are) where it
        holds the job, else read by the INSERT itself (so a job the ledger does not have gets
        none); then one UPDATE per shape of change.
        """
        shapes: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        events: list[tuple[Any, ...]] = []
        told: list[tuple[Any, ...]] = []
        for cluster, proc, fields in changes:
            shapes.setdefault(tuple(fields), []).append((*fields.values(), now, schedd, cluster, proc))
            if "state" in fields:
                detail = fields.get("hold_reason") or fields.get("remove_reason") or fields.get("error")
                job = known.get((cluster, proc)) if known is not None else None
                if job is None:
                    events.append((now, fields["state"], detail, schedd, cluster, proc, fields["state"]))
                elif job.state != fields["state"]:
                    told.append((now, schedd, cluster, proc, job.state, fields["state"], detail))
        conn.executemany(
            "INSERT INTO events (at, schedd, cluster, proc, from_state, to_state, detail)"
            " SELECT ?1, schedd, cluster, proc, state, ?2, ?3 FROM jobs"
            " WHERE schedd = ?4 AND cluster = ?5 AND proc = ?6 AND state IS NOT ?7",
            events,
        )
        conn.executemany("INSERT INTO events (at, schedd, cluster, proc, from_state, to_state, detail)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)", told)
        for names, rows in shapes.items():
            sets = "".join(f"{k} = ?, " for k in names)
            conn.executemany(f"UPDATE jobs SET {sets}updated_at = ? WHERE schedd = ? AND cluster = ? AND proc = ?",
                             rows)
