"""The ledger: every cluster and job rsubd submitted, in SQLite. All of rsub's SQL is here.

Numbered migrations run at start inside a transaction each; `PRAGMA user_version`
records the last one applied. WAL mode lets `rsub status` read while a poll writes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from rsubd.schedd import ACTIVE_STATES

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE clusters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL UNIQUE,
        schedd TEXT NOT NULL,
        cluster INTEGER,
        tag TEXT NOT NULL,
        state TEXT NOT NULL,
        description TEXT NOT NULL,
        submitted_description TEXT NOT NULL,
        submit_dir TEXT NOT NULL,
        submit_file TEXT,
        num_procs INTEGER,
        error TEXT,
        created_at REAL NOT NULL,
        submitted_at REAL
    );
    CREATE UNIQUE INDEX clusters_schedd_cluster ON clusters (schedd, cluster);
    CREATE TABLE jobs (
        schedd TEXT NOT NULL,
        cluster INTEGER NOT NULL,
        proc INTEGER NOT NULL,
        cluster_row INTEGER NOT NULL REFERENCES clusters (id),
        state TEXT NOT NULL,
        job_status INTEGER,
        hold_reason TEXT,
        hold_code INTEGER,
        exit_code INTEGER,
        exit_signal INTEGER,
        remove_reason TEXT,
        error TEXT,
        iwd TEXT,
        submitted_at REAL NOT NULL,
        completed_at REAL,
        retrieved_at REAL,
        marked_at REAL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (schedd, cluster, proc)
    );
    CREATE INDEX jobs_state ON jobs (schedd, state);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        schedd TEXT NOT NULL,
        cluster INTEGER NOT NULL,
        proc INTEGER,
        from_state TEXT,
        to_state TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX events_job ON events (schedd, cluster, proc);
    """,
)

JOB_FIELDS = (
    "schedd", "cluster", "proc", "state", "job_status", "hold_reason", "hold_code", "exit_code",
    "exit_signal", "remove_reason", "error", "iwd", "submitted_at", "completed_at", "retrieved_at",
    "marked_at", "updated_at",
)
# Fields a poll may change on a job row.
MUTABLE_FIELDS = ("state", "job_status", "hold_reason", "hold_code", "exit_code", "exit_signal",
                  "remove_reason", "error", "completed_at", "retrieved_at", "marked_at")


class LedgerError(Exception):
    """The ledger cannot be opened or is not rsub's."""


@dataclass(frozen=True)
class JobSelector:
    """Which jobs a client means: a cluster, a cluster.proc, optionally on one schedd."""

    cluster: int
    proc: int | None = None
    schedd: str | None = None


class Ledger:
    """The durable record of rsub's clusters and jobs; safe to use from several threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            raise LedgerError(f"cannot open the ledger {path}: {e}") from None
        path.chmod(0o600)
        self.path = path
        self.db = sqlite_utils.Database(conn)
        self._conn = conn
        self._lock = threading.RLock()
        try:
            self._migrate()
            self.instance_id = self._instance_id()
        except BaseException:
            conn.close()  # a refused ledger must not stay open (and locked) in this process
            raise

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

    def _migrate(self) -> None:
        try:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise LedgerError(f"the ledger {self.path} is not a readable SQLite database: {e}") from None
        if version > len(MIGRATIONS):
            raise LedgerError(
                f"the ledger {self.path} is at schema {version}, newer than this rsubd knows ({len(MIGRATIONS)})"
            )
        for number in range(version + 1, len(MIGRATIONS) + 1):
            with self.transaction() as conn:
                for statement in MIGRATIONS[number - 1].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    def _instance_id(self) -> str:
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone()
            if row:
                return str(row[0])
            value = uuid.uuid4().hex
            conn.execute("INSERT INTO meta (key, value) VALUES ('instance_id', ?)", (value,))
            return value

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(sql, list(args)))

    # -- submit --------------------------------------------------------------

    def cluster_by_request(self, request_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM clusters WHERE request_id = ?", [request_id])
        return rows[0] if rows else None

    def add_submit_intent(
        self, *, request_id: str, schedd: str, tag: str, description: str, submitted_description: str,
        submit_dir: str, submit_file: str | None,
    ) -> int:
        """Record a submit before the schedd hears of it; returns the cluster row id."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO clusters (request_id, schedd, tag, state, description, submitted_description,"
                " submit_dir, submit_file, created_at) VALUES (?, ?, ?, 'submitting', ?, ?, ?, ?, ?)",
                (request_id, schedd, tag, description, submitted_description, submit_dir, submit_file, time.time()),
            )
            return int(cur.lastrowid or 0)

    def record_submitted(self, row: int, cluster: int, procs: Sequence[tuple[int, str]]) -> None:
        """The schedd made the cluster: one job row per proc, in state spooling."""
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
            conn.executemany(
                "INSERT INTO events (at, schedd, cluster, proc, from_state, to_state) VALUES (?, ?, ?, ?, NULL, 'spooling')",
                ((now, schedd, cluster, proc) for proc, _ in procs),
            )

    def record_spooled(self, row: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE clusters SET state = 'submitted' WHERE id = ?", (row,))

    def record_submit_failed(self, row: int, error: str) -> None:
        """The submit or the spool failed: the cluster and any jobs it has are failed."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute("UPDATE clusters SET state = 'failed', error = ? WHERE id = ?", (error, row))
            jobs = conn.execute("SELECT schedd, cluster, proc, state FROM jobs WHERE cluster_row = ?", (row,)).fetchall()
            conn.execute(
                "UPDATE jobs SET state = 'failed', error = ?, updated_at = ? WHERE cluster_row = ?", (error, now, row)
            )
            conn.executemany(
                "INSERT INTO events (at, schedd, cluster, proc, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, 'failed', ?)",
                ((now, s, c, p, st, error) for s, c, p, st in jobs),
            )

    # -- polling -------------------------------------------------------------

    def tracked_jobs(self, schedd: str) -> list[dict[str, Any]]:
        """Jobs a poll must look at: active, or retrieved but not yet marked on the schedd."""
        marks = ", ".join("?" for _ in ACTIVE_STATES)
        return self._query(
            f"SELECT * FROM jobs WHERE schedd = ? AND (state IN ({marks}) OR (state = 'retrieved' AND marked_at IS NULL))",
            [schedd, *ACTIVE_STATES],
        )

    def apply_changes(self, schedd: str, changes: Sequence[tuple[int, int, dict[str, Any]]]) -> int:
        """Apply a poll's changes in one transaction; a state change also goes to events."""
        if not changes:
            return 0
        now = time.time()
        with self.transaction() as conn:
            for cluster, proc, fields in changes:
                unknown = set(fields) - set(MUTABLE_FIELDS)
                if unknown:
                    raise ValueError(f"not a mutable job field: {sorted(unknown)}")
                old = conn.execute(
                    "SELECT state FROM jobs WHERE schedd = ? AND cluster = ? AND proc = ?", (schedd, cluster, proc)
                ).fetchone()
                if old is None:
                    continue
                sets = ", ".join(f"{k} = ?" for k in fields)
                conn.execute(
                    f"UPDATE jobs SET {sets}, updated_at = ? WHERE schedd = ? AND cluster = ? AND proc = ?",
                    (*fields.values(), now, schedd, cluster, proc),
                )
                if "state" in fields and fields["state"] != old[0]:
                    detail = fields.get("hold_reason") or fields.get("remove_reason") or fields.get("error")
                    conn.execute(
                        "INSERT INTO events (at, schedd, cluster, proc, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (now, schedd, cluster, proc, old[0], fields["state"], detail),
                    )
        return len(changes)

    # -- reading ---------------------------------------------------------------

    def jobs(
        self, selectors: Sequence[JobSelector] = (), *, active: bool = False, limit: int = 1000, offset: int = 0
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        if selectors:
            terms = []
            for sel in selectors:
                term = "(cluster = ?"
                args.append(sel.cluster)
                if sel.proc is not None:
                    term += " AND proc = ?"
                    args.append(sel.proc)
                if sel.schedd is not None:
                    term += " AND schedd = ?"
                    args.append(sel.schedd)
                terms.append(term + ")")
            where.append("(" + " OR ".join(terms) + ")")
        if active:
            where.append(f"state IN ({', '.join('?' for _ in ACTIVE_STATES)})")
            args.extend(ACTIVE_STATES)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY schedd, cluster, proc LIMIT ? OFFSET ?"
        return self._query(sql, [*args, limit, offset])

    def cluster_row(self, row: int) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM clusters WHERE id = ?", [row])
        return rows[0] if rows else None

    def counts_by_state(self, schedd: str) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._query(
            "SELECT state, count(*) AS n FROM jobs WHERE schedd = ? GROUP BY state", [schedd])}

    def events(self, schedd: str, cluster: int, proc: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM events WHERE schedd = ? AND cluster = ?"
        args: list[Any] = [schedd, cluster]
        if proc is not None:
            sql += " AND (proc = ? OR proc IS NULL)"
            args.append(proc)
        return self._query(sql + " ORDER BY id", args)
