"""On-disk state of the embedded scheduler: its job queue and its history.

This is the scheduler's own database, as a real schedd has its job_queue.log and
history file; it is not rsub's ledger and shares nothing with it. Like a real
schedd's queue, a cluster ad holds what all its procs share and each proc ad
only what differs, which keeps a 100,000-job queue small.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rsubd.backends.local.ads import Ad, dumps, loads

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clusters (cluster INTEGER PRIMARY KEY, ad TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    cluster INTEGER NOT NULL, proc INTEGER NOT NULL, ad TEXT NOT NULL,
    PRIMARY KEY (cluster, proc)
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster INTEGER NOT NULL, proc INTEGER NOT NULL, ad TEXT NOT NULL
);
"""


class QueueStore:
    """The queue and history tables; every method is one transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # private from the start; SQLite's sidecars follow
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        path.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def next_cluster(self) -> int:
        """Allocate a cluster id; never reused, like a schedd's."""
        with self._lock, self._tx():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'next_cluster'").fetchone()
            cluster = int(row[0]) if row else 1
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('next_cluster', ?)", (str(cluster + 1),)
            )
            return cluster

    def load(self) -> tuple[dict[int, Ad], dict[tuple[int, int], Ad]]:
        with self._lock:
            clusters = {c: loads(a) for c, a in self._db.execute("SELECT cluster, ad FROM clusters")}
            jobs = {(c, p): loads(a) for c, p, a in self._db.execute("SELECT cluster, proc, ad FROM jobs")}
        return clusters, jobs

    def add_cluster(self, cluster: int, cluster_ad: Ad, procs: Mapping[int, Ad]) -> None:
        with self._lock, self._tx():
            self._db.execute("INSERT INTO clusters (cluster, ad) VALUES (?, ?)", (cluster, dumps(cluster_ad)))
            self._db.executemany(
                "INSERT INTO jobs (cluster, proc, ad) VALUES (?, ?, ?)",
                ((cluster, p, dumps(ad)) for p, ad in procs.items()),
            )

    def save_jobs(self, jobs: Mapping[tuple[int, int], Ad]) -> None:
        if not jobs:
            return
        with self._lock, self._tx():
            self._db.executemany(
                "UPDATE jobs SET ad = ? WHERE cluster = ? AND proc = ?",
                ((dumps(ad), c, p) for (c, p), ad in jobs.items()),
            )

    def to_history(self, entries: Sequence[tuple[int, int, Ad]], empty_clusters: Sequence[int]) -> None:
        """Move jobs out of the queue into history (full ads), in the order given."""
        if not entries:
            return
        with self._lock, self._tx():
            self._db.executemany(
                "INSERT INTO history (cluster, proc, ad) VALUES (?, ?, ?)",
                ((c, p, dumps(ad)) for c, p, ad in entries),
            )
            self._db.executemany(
                "DELETE FROM jobs WHERE cluster = ? AND proc = ?", ((c, p) for c, p, _ in entries)
            )
            self._db.executemany("DELETE FROM clusters WHERE cluster = ?", ((c,) for c in empty_clusters))

    def history_newest_first(self) -> Iterator[tuple[int, int, Ad]]:
        with self._lock:
            rows = self._db.execute("SELECT cluster, proc, ad FROM history ORDER BY seq DESC").fetchall()
        for c, p, a in rows:
            yield c, p, loads(a)

    def _tx(self) -> Any:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
