"""The ledger's SQL for jobs run again: resubmits and their lineage, the hold policy's releases, usage summaries.

A resubmit's intent is one transaction: its cluster row (state submitting, as any submit's)
and one `lineage` row per new proc naming the job it replaces. The new cluster's number is
known once the schedd made it; `replaced_by` reads it through the cluster row.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from rsubd.ledger.schema import Row, key_terms

Key = tuple[int, int]
# A replacement that still stands: its submit is in flight or made (a failed or interrupted one replaced nothing).
_STANDING = "c.state NOT IN ('failed', 'interrupted', 'replacing', 'replaced')"


class LineageStore:
    """Resubmits, lineage and policy releases; the Ledger supplies `_query` and `transaction`."""

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    # -- resubmit --------------------------------------------------------------

    def add_resubmit_intent(
        self, *, request_id: str, schedd: str, tag: str, description: str, submitted_description: str,
        submit_dir: str, replaces: Sequence[Key],
    ) -> int:
        """A resubmit's intent and its lineage in one transaction; returns the new cluster row."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO clusters (request_id, schedd, tag, state, description, submitted_description,"
                " submit_dir, submit_file, created_at) VALUES (?, ?, ?, 'submitting', ?, ?, ?, NULL, ?)",
                (request_id, schedd, tag, description, submitted_description, submit_dir, time.time()),
            )
            row = int(cur.lastrowid or 0)
            if replaces:  # the same credential as the cluster it runs again (migration 9)
                conn.execute("UPDATE clusters SET token_profile = (SELECT token_profile FROM clusters AS old"
                             " WHERE old.schedd = ? AND old.cluster = ?) WHERE id = ?", (schedd, replaces[0][0], row))
            conn.executemany("INSERT INTO lineage (new_row, new_proc, schedd, old_cluster, old_proc)"
                             " VALUES (?, ?, ?, ?, ?)",
                             ((row, n, schedd, c, p) for n, (c, p) in enumerate(replaces)))
            return row

    def replaced_jobs(self, row: int) -> list[Key]:
        """The jobs a resubmit's cluster row replaces, in the order of its procs ([] for a plain submit)."""
        return [(r["old_cluster"], r["old_proc"]) for r in self._query(
            "SELECT old_cluster, old_proc FROM lineage WHERE new_row = ? ORDER BY new_proc", [row])]

    def jobs_by_keys(self, schedd: str, keys: Sequence[Key]) -> list[Row]:
        """These jobs' rows (those the ledger has), in no particular order."""
        out: list[Row] = []
        for terms, args in key_terms(keys):
            out += self._query(f"SELECT * FROM jobs WHERE schedd = ? AND ({terms})", [schedd, *args])
        return out

    def replacements(self, schedd: str, keys: Sequence[Key]) -> dict[Key, str]:
        """Of these jobs, those a standing resubmit replaces: key -> the new job ("30.0", or "pending")."""
        out: dict[Key, str] = {}
        wanted = set(keys)
        # By cluster, then the procs picked here: a page of 1,000 jobs is a handful of clusters, one short
        # statement (not three of 400 OR terms each); a cluster has few procs run again.
        clusters = sorted({cluster for cluster, _ in wanted})
        for start in range(0, len(clusters), 400):
            chunk = clusters[start:start + 400]
            for r in self._query(
                    "SELECT l.old_cluster, l.old_proc, c.cluster, l.new_proc FROM lineage l JOIN clusters c"
                    f" ON c.id = l.new_row WHERE l.schedd = ? AND l.old_cluster IN ({', '.join('?' * len(chunk))})"
                    f" AND {_STANDING} ORDER BY l.new_row", [schedd, *chunk]):
                key = (r["old_cluster"], r["old_proc"])
                if key in wanted:
                    out[key] = "pending" if r["cluster"] is None else f"{r['cluster']}.{r['new_proc']}"
        return out

    def lineage_of(self, page: Sequence[Row]) -> None:
        """Add `replaces` and `replaced_by` ("12.17", or None) to each row of a page of jobs, in place."""
        if not page:
            return
        rows = sorted({r["cluster_row"] for r in page})
        marks = ", ".join("?" * len(rows))
        back = {(r["new_row"], r["new_proc"]): f"{r['old_cluster']}.{r['old_proc']}" for r in self._query(
            f"SELECT new_row, new_proc, old_cluster, old_proc FROM lineage WHERE new_row IN ({marks})", rows)}
        by_schedd: dict[str, list[Key]] = {}
        for r in page:
            by_schedd.setdefault(r["schedd"], []).append((r["cluster"], r["proc"]))
        ahead = {(s, *k): v for s, keys in by_schedd.items() for k, v in self.replacements(s, keys).items()}
        for r in page:
            r["replaces"] = back.get((r["cluster_row"], r["proc"]))
            r["replaced_by"] = ahead.get((r["schedd"], r["cluster"], r["proc"]))

    def rerun_candidates(self, schedd: str | None, clusters: Sequence[int]) -> list[Row]:
        """Jobs held or done (what `rsub resubmit`'s selectors choose from), on a schedd and in clusters if named."""
        where: list[str] = ["state IN ('held', 'removed', 'failed', 'retrieved')"]
        args: list[Any] = []
        if schedd is not None:
            where.append("schedd = ?")
            args.append(schedd)
        if clusters:
            where.append(f"cluster IN ({', '.join('?' * len(clusters))})")
            args += list(clusters)
        return self._query(f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY schedd, cluster, proc", args)

    def resubmits_of(self, request_id: str) -> list[Row]:
        """The cluster rows one `rsub resubmit` request made (their request ids are its own plus schedd and cluster)."""
        # Not the rows recovery replaced (an unspooled cluster gives up its request id as "ID#replaced-N").
        return self._query("SELECT * FROM clusters WHERE request_id >= ? AND request_id < ?"
                           " AND instr(request_id, '#') = 0 ORDER BY id", [f"{request_id}:", f"{request_id};"])

    def record_replaced_removed(self, schedd: str, keys: Sequence[Key], reason: str) -> None:
        """Held jobs a resubmit replaces are removed from the schedd: the ledger says so, with an event each."""
        now = time.time()
        with self.transaction() as conn:
            for cluster, proc in keys:
                conn.execute("INSERT INTO events (at, schedd, cluster, proc, from_state, to_state, detail)"
                             " SELECT ?, schedd, cluster, proc, state, 'removed', ? FROM jobs WHERE schedd = ?"
                             " AND cluster = ? AND proc = ? AND state != 'removed'",
                             (now, reason, schedd, cluster, proc))
                conn.execute("UPDATE jobs SET state = 'removed', job_status = 3, remove_reason = ?, updated_at = ?"
                             " WHERE schedd = ? AND cluster = ? AND proc = ? AND state = 'held'",
                             (reason, now, schedd, cluster, proc))

    # -- the hold policy ---------------------------------------------------------

    def held_jobs(self, schedd: str) -> list[Row]:
        """Jobs held on this schedd (the policy's, and a resubmit's, input)."""
        return self._query("SELECT * FROM jobs WHERE schedd = ? AND state = 'held'", [schedd])

    def record_auto_release(self, schedd: str, key: Key, *, count: int, next_at: float | None,
                            detail: str | None) -> None:
        """The policy's intent for a held job: its count of releases, the next allowed time, and (`detail`) an event."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute("UPDATE jobs SET auto_releases = ?, auto_release_at = ? WHERE schedd = ?"
                         " AND cluster = ? AND proc = ?", (count, next_at, schedd, *key))
            if detail is not None:
                conn.execute("INSERT INTO events (at, schedd, cluster, proc, from_state, to_state, detail)"
                             " VALUES (?, ?, ?, ?, 'held', 'held', ?)", (now, schedd, *key, detail))

    # -- clusters done -------------------------------------------------------------

    def last_event_id(self) -> int:
        return int(self._query("SELECT coalesce(max(id), 0) AS n FROM events")[0]["n"])

    def mark_cluster_told(self, schedd: str, cluster: int) -> bool:
        """Record that a cluster's "done" is told; False if it was already (it is told once)."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE clusters SET done_told_at = ? WHERE schedd = ? AND cluster = ?"
                               " AND done_told_at IS NULL", (time.time(), schedd, cluster))
            return cur.rowcount > 0

    # -- usage -----------------------------------------------------------------

    def cluster_jobs(self, schedd: str, cluster: int) -> Iterator[Row]:
        """Every job of one cluster (the summary's input), in proc order."""
        yield from self._query("SELECT * FROM jobs WHERE schedd = ? AND cluster = ? ORDER BY proc", [schedd, cluster])
