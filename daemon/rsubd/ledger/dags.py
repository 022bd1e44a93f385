"""The ledger's DAGs: each DAG's origin, progress and staging directory, and its nodes with their attempts."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from rsubd.ledger.schema import Row

# The DAGMan job's attributes a poll reads into `progress`, and the names rsub shows them by.
DAG_ATTRS = {"DAG_NodesTotal": "total", "DAG_NodesDone": "done", "DAG_NodesFailed": "failed",
             "DAG_NodesFutile": "futile", "DAG_NodesQueued": "queued", "DAG_JobsSubmitted": "submitted"}


class DagStore:
    """DAG rows; the Ledger supplies `_query` and `transaction`."""

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def add_dag(self, cluster_row: int, *, schedd: str, cluster: int, dag_file: str, staging_dir: str,
                nodes: Sequence[Mapping[str, Any]], rescue_of: int | None = None) -> None:
        now = time.time()
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO dags (cluster_row, schedd, cluster, dag_file, staging_dir, rescue_of,"
                         " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (cluster_row, schedd, cluster, dag_file, staging_dir, rescue_of, now))
            conn.executemany("INSERT OR REPLACE INTO dag_nodes (cluster_row, node, home, submit_file, retries, parents)"
                             " VALUES (?, ?, ?, ?, ?, ?)",
                             ((cluster_row, n["name"], n["home"], n["submit_file"], n["retries"],
                               " ".join(n["parents"])) for n in nodes))

    def active_dags(self, schedd: str) -> dict[int, Row]:
        """The DAGs a poll follows on `schedd`: not yet home. By DAGMan cluster."""
        rows = self._query("SELECT * FROM dags WHERE schedd = ? AND placed_at IS NULL", [schedd])
        return {int(r["cluster"]): r for r in rows}

    def dag_by_cluster(self, schedd: str | None, cluster: int) -> Row | None:
        rows = self._query("SELECT * FROM dags WHERE cluster = ?" + (" AND schedd = ?" if schedd else "")
                           + " ORDER BY cluster_row DESC", [cluster, schedd] if schedd else [cluster])
        return rows[0] if rows else None

    def dags_of(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Row]:
        """The DAG rows of these (schedd, cluster) pairs, for the views."""
        out: dict[tuple[str, int], Row] = {}
        clusters = sorted({c for _, c in keys})
        for start in range(0, len(clusters), 500):
            chunk = clusters[start:start + 500]
            for r in self._query(f"SELECT * FROM dags WHERE cluster IN ({', '.join('?' * len(chunk))})", chunk):
                if (r["schedd"], r["cluster"]) in keys:
                    out[(r["schedd"], int(r["cluster"]))] = r
        return out

    def iwds_of(self, schedd: str, clusters: Sequence[int]) -> dict[int, tuple[int, str]]:
        """cluster -> (its cluster row, proc 0's iwd), for these clusters."""
        out: dict[int, tuple[int, str]] = {}
        for start in range(0, len(clusters), 500):
            chunk = list(clusters[start:start + 500])
            for r in self._query(f"SELECT cluster, cluster_row, iwd FROM jobs WHERE schedd = ? AND proc = 0 AND"
                                 f" cluster IN ({', '.join('?' * len(chunk))})", [schedd, *chunk]):
                if r["iwd"]:
                    out[int(r["cluster"])] = (int(r["cluster_row"]), str(r["iwd"]))
        return out

    def jobs_of_cluster(self, schedd: str, cluster: int) -> list[Row]:
        return self._query("SELECT proc, state FROM jobs WHERE schedd = ? AND cluster = ?", [schedd, cluster])

    def dag_clusters(self, keys: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """Those of these (schedd, cluster) pairs that are DAGs."""
        if not keys:
            return set()
        return {(r["schedd"], int(r["cluster"])) for r in self._query("SELECT schedd, cluster FROM dags")} & keys

    def dags_unplaced(self, keys: set[tuple[str, int]]) -> bool:
        """Whether a DAG among these (schedd, cluster) pairs is not home yet."""
        if not keys:
            return False
        rows = self._query("SELECT schedd, cluster FROM dags WHERE placed_at IS NULL")
        return any((r["schedd"], r["cluster"]) in keys for r in rows)

    def dag_nodes(self, cluster_row: int) -> list[Row]:
        rows = self._query("SELECT * FROM dag_nodes WHERE cluster_row = ? ORDER BY rowid", [cluster_row])
        for r in rows:
            r["attempts"] = json.loads(r["attempts"] or "[]")
        return rows

    def record_dag_progress(self, cluster_row: int, *, job_status: Any, dag_status: Any,
                            progress: Mapping[str, Any], error: str | None,
                            live: Mapping[str, tuple[str, int]]) -> None:
        """What a poll saw of a DAG: its DAGMan job's DAG_* attributes, and which node jobs are in the queue."""
        with self.transaction() as conn:
            conn.execute("UPDATE dags SET job_status = ?, dag_status = ?, progress = ?, error = ?, updated_at = ?"
                         " WHERE cluster_row = ?", (job_status, dag_status, json.dumps(dict(progress)), error,
                                                    time.time(), cluster_row))
            conn.execute("UPDATE dag_nodes SET live_job = NULL, live_status = NULL WHERE cluster_row = ?",
                         (cluster_row,))
            conn.executemany("UPDATE dag_nodes SET live_job = ?, live_status = ? WHERE cluster_row = ? AND node = ?",
                             ((job, status, cluster_row, node) for node, (job, status) in live.items()))

    def record_dag_attempts(self, cluster_row: int, attempts: Mapping[str, list[dict[str, Any]]]) -> None:
        """Every finished attempt of each node, from history (oldest first)."""
        with self.transaction() as conn:
            conn.executemany("UPDATE dag_nodes SET attempts = ? WHERE cluster_row = ? AND node = ?",
                             ((json.dumps(a), cluster_row, node) for node, a in attempts.items()))

    def record_dag_placed(self, cluster_row: int, *, error: str | None = None) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE dags SET placed_at = ?, error = COALESCE(?, error) WHERE cluster_row = ?",
                         (time.time(), error, cluster_row))

    def dags_to_clean(self, schedd: str) -> list[Row]:
        """DAGs home whose DAGMan job rsub no longer tracks (marked, or removed): their staging directory can go.

        Not one with an error: files that could not be moved home are still in it.
        """
        return self._query(
            "SELECT d.cluster_row, d.staging_dir FROM dags d WHERE d.schedd = ? AND d.placed_at IS NOT NULL"
            " AND d.cleaned_at IS NULL AND d.error IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.cluster_row = d.cluster_row"
            " AND (j.state IN ('submitting', 'spooling', 'idle', 'running', 'held', 'completed')"
            " OR (j.state = 'retrieved' AND j.marked_at IS NULL)))", [schedd])

    def dags_to_place_again(self, schedd: str, error_prefix: str) -> list[Row]:
        """DAGs whose files could not all be moved home (their error starts so): tried again at each poll."""
        return self._query("SELECT cluster_row, cluster, schedd, staging_dir, error FROM dags WHERE schedd = ?"
                           " AND placed_at IS NOT NULL AND cleaned_at IS NULL AND substr(error, 1, ?) = ?",
                           [schedd, len(error_prefix), error_prefix])

    def record_dag_placed_again(self, cluster_row: int, *, error: str | None) -> None:
        """A new try at moving a DAG's files home: `error` None when all are home now."""
        with self.transaction() as conn:
            conn.execute("UPDATE dags SET error = ?, updated_at = ? WHERE cluster_row = ?",
                         (error, time.time(), cluster_row))

    def record_dag_cleaned(self, cluster_row: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE dags SET cleaned_at = ? WHERE cluster_row = ?", (time.time(), cluster_row))

    def dag_rows(self) -> Iterator[Row]:
        yield from self._query("SELECT * FROM dags ORDER BY cluster_row")
