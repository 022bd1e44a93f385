"""The ledger's reads for `rsub status`, `q` and `history`: pages of jobs, counts, events. Read-only SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rsub.wire.vocabulary import FINAL_STATES
from rsubd.ledger import schema
from rsubd.ledger.schema import JobSelector, Row


def _selector_clause(selectors: Sequence[JobSelector], args: list[Any]) -> str:
    """A WHERE term matching any of the selectors; appends their values to `args`."""
    terms = []
    for sel in selectors:
        term = "cluster = ?"
        args.append(sel.cluster)
        if sel.proc is not None:
            term += " AND proc = ?"
            args.append(sel.proc)
        if sel.schedd is not None:
            term += " AND schedd = ?"
            args.append(sel.schedd)
        terms.append(f"({term})")
    return "(" + " OR ".join(terms) + ")"


class LedgerReads:
    """What the handlers read; the Ledger supplies `_query` (one statement under the ledger's lock)."""

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    # -- reading ---------------------------------------------------------------

    def jobs(
        self, selectors: Sequence[JobSelector] = (), *, active: bool = False, limit: int = 1000, offset: int = 0
    ) -> list[Row]:
        where: list[str] = []
        args: list[Any] = []
        if selectors:
            where.append(_selector_clause(selectors, args))
        if active:
            # "+state" keeps SQLite from reading jobs_state and sorting every active job: it
            # walks the primary key in the order shown instead and stops after `limit` rows.
            where.append("+" + schema.ACTIVE_SQL)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY schedd, cluster, proc LIMIT ? OFFSET ?"
        return self._query(sql, [*args, limit, offset])

    def cluster_row(self, row: int) -> Row | None:
        rows = self._query("SELECT * FROM clusters WHERE id = ?", [row])
        return rows[0] if rows else None

    def counts_by_state(self, schedd: str) -> dict[str, int]:
        """Jobs by state, from the counts the ledger's triggers keep: 0.2 ms, where counting a year's million
        rows took 110 ms, at every systemd watchdog ping and `rsub daemon status`."""
        return {r["state"]: r["n"] for r in self._query(
            "SELECT state, n FROM job_counts WHERE schedd = ? AND n > 0", [schedd])}

    def queued_count(self, schedd: str) -> int:
        """rsub's jobs still in the schedd's queue (the tracked ones): what counts towards MAX_JOBS_PER_OWNER."""
        return int(self._query(f"SELECT count(*) AS n FROM jobs WHERE schedd = ? AND {schema.TRACKED_SQL}",
                               [schedd])[0]["n"])

    def events(self, schedd: str, cluster: int, proc: int | None = None) -> list[Row]:
        sql = "SELECT * FROM events WHERE schedd = ? AND cluster = ?"
        args: list[Any] = [schedd, cluster]
        if proc is not None:
            sql += " AND (proc = ? OR proc IS NULL)"
            args.append(proc)
        return self._query(sql + " ORDER BY id", args)

    # -- the jobsub views (read-only) ----------------------------------------------

    @staticmethod
    def _page_where(
        selectors: Sequence[JobSelector], states: Sequence[str], schedd: str | None, clusters: Sequence[int],
        submitted_after: float | None, submitted_before: float | None, args: list[Any], *, counting: bool = False,
    ) -> str:
        """The WHERE clause (or "") of a page's filters; appends their values to `args`."""
        where: list[str] = []
        if selectors:
            where.append(_selector_clause(selectors, args))
        if states:
            # "+state": as in `jobs`, walk the table in the order wanted and stop at the limit,
            # rather than read jobs_state (whose first column is the schedd) and sort. A count has no
            # order: it reads jobs_state (see job_count).
            where.append(f"{'' if counting else '+'}state IN ({', '.join('?' * len(states))})")
            args.extend(states)
        if schedd is not None:
            where.append("schedd = ?")
            args.append(schedd)
        if clusters:
            where.append(f"cluster IN ({', '.join('?' * len(clusters))})")
            args.extend(clusters)
        if submitted_after is not None:
            where.append("submitted_at >= ?")
            args.append(submitted_after)
        if submitted_before is not None:
            where.append("submitted_at <= ?")
            args.append(submitted_before)
        return " WHERE " + " AND ".join(where) if where else ""

    def job_page(
        self, selectors: Sequence[JobSelector] = (), *, states: Sequence[str] = (), schedd: str | None = None,
        clusters: Sequence[int] = (), submitted_after: float | None = None, submitted_before: float | None = None,
        newest_first: bool = False, limit: int = 1000, offset: int = 0, columns: Sequence[str] = (),
    ) -> list[Row]:
        """One page of jobs, filtered, with their run times from the events: one statement for the page.

        `columns`: only these of the `jobs` row (and the run times), for a view that needs few of its
        fifty (the table of `rsub q`): half the time to read a page of 1,000 into rows. The run times
        are then read only for jobs whose schedd's wall time does not say how long they ran (where
        services.usage.wall_seconds gives None): the rest keep None, and their events are not read.

        Each row is a `jobs` row (so it has `cluster_row`) plus `run_started_at` (when a poll
        first saw the job running), `run_left_at` (when it last left running) and `finished_at`
        (when it first became completed, removed or failed), each None if no event says so.
        The events are read for the page's jobs only, through `events_job`. `newest_first`
        orders by when the job finished (retrieved, else completed, else last changed), as
        a history does, and a page cut short keeps the most recently finished. Otherwise the
        page holds the newest jobs submitted (rows are written in submit order: the rowid walks
        backwards, no sort) shown by schedd, cluster and proc as condor_q shows them, newest
        last: a page cut short leaves out the oldest, never the jobs just submitted.
        """
        args: list[Any] = []
        where = self._page_where(selectors, states, schedd, clusters, submitted_after, submitted_before, args)
        source = "jobs"
        if newest_first and states and set(states) <= set(FINAL_STATES) and not selectors and not clusters:
            # A history of final jobs walks jobs_finished newest first and stops at the limit: the index's own
            # WHERE, said again, lets SQLite use it, and INDEXED BY keeps it from taking jobs_state for a
            # schedd filter and sorting a third of a million rows. (By id or cluster, jobs_cluster is better.)
            where += f" AND {schema.FINAL_SQL}"
            source = "jobs INDEXED BY jobs_finished"
        order = (f"{schema.FINISHED_AT} DESC, schedd, cluster DESC, proc"
                 if newest_first else "schedd, cluster, proc")
        pick = order if newest_first else "rowid DESC"
        kept = ("kept_run_started_at", "kept_run_left_at", "kept_finished_at", "retrieved_at", "completed_at",
                "updated_at")  # what the run times and the order below read
        picked = ", ".join(dict.fromkeys([*columns, *kept, "state", "wall_time", "run_start"])) if columns else "*"
        # wall_seconds(row) is None: no wall time, or none yet of a job not done nor running since run_start.
        unknown = (" AND (page.wall_time IS NULL OR NOT ((page.state = 'running' AND coalesce(page.run_start, 0) != 0)"
                   " OR page.wall_time > 0 OR page.state IN ('completed', 'retrieved')))")
        unknown = unknown if columns else ""
        sql = (
            f"WITH page AS MATERIALIZED (SELECT {picked} FROM {source}{where} ORDER BY {pick} LIMIT ? OFFSET ?)"
            # A LEFT JOIN reads the page first, then each job's events through events_job.
            f" SELECT {', '.join(f'page.{c} AS {c}' for c in columns) if columns else 'page.*'},"
            # A compacted job (ledger/compaction.py) has no events of its own left: its row kept these times.
            " coalesce(min(CASE WHEN e.to_state = 'running' THEN e.at END), page.kept_run_started_at)"
            " AS run_started_at,"
            " coalesce(max(CASE WHEN e.from_state = 'running' THEN e.at END), page.kept_run_left_at) AS run_left_at,"
            " coalesce(min(CASE WHEN e.to_state IN ('completed', 'removed', 'failed') THEN e.at END),"
            " page.kept_finished_at) AS finished_at"
            " FROM page LEFT JOIN events e"
            f" ON e.schedd = page.schedd AND e.cluster = page.cluster AND e.proc = page.proc{unknown}"
            " GROUP BY page.schedd, page.cluster, page.proc"
            f" ORDER BY {order}"
        )
        return self._query(sql, [*args, limit, offset])

    def submits_without_jobs(self, *, since: float, schedd: str | None = None, limit: int = 20) -> list[Row]:
        """Submits that made no cluster: being settled (`submitting`), interrupted or failed; newest first.

        They have no job rows, so the job views would show nothing of them. A scan of the clusters
        table, one row per submit: small beside the jobs.
        """
        args: list[Any] = [since]
        where = ""
        if schedd is not None:
            where = " AND schedd = ?"
            args.append(schedd)
        args.append(limit)
        return self._query("SELECT id, request_id, schedd, state, submit_dir, submit_file, error, created_at"
                           " FROM clusters WHERE cluster IS NULL AND state IN ('submitting', 'interrupted', 'failed')"
                           f" AND created_at >= ?{where}"
                           # One submitted again since (the same file, or the same description from the same
                           # directory) is settled.
                           " AND NOT EXISTS (SELECT 1 FROM clusters AS later WHERE later.id > clusters.id"
                           " AND later.cluster IS NOT NULL AND ((later.submit_dir = clusters.submit_dir"
                           " AND later.description = clusters.description)"
                           " OR later.submit_file = clusters.submit_file))"
                           " ORDER BY id DESC LIMIT ?", args)

    def job_count(
        self, selectors: Sequence[JobSelector] = (), *, states: Sequence[str] = (), schedd: str | None = None,
        clusters: Sequence[int] = (), submitted_after: float | None = None, submitted_before: float | None = None,
    ) -> int:
        """How many jobs the same filters as `job_page` match, on every page."""
        if states and not selectors and not clusters and submitted_after is None and submitted_before is None:
            # By state (and schedd) alone: the counts the triggers keep (migration 5), not a count of the rows.
            marks = ", ".join("?" * len(states))
            counted = f"state IN ({marks})" + ("" if schedd is None else " AND schedd = ?")
            values = [*states, *([] if schedd is None else [schedd])]
            return int(self._query(f"SELECT coalesce(sum(n), 0) AS n FROM job_counts WHERE {counted}",
                                   values)[0]["n"])
        args: list[Any] = []
        where = self._page_where(selectors, states, schedd, clusters, submitted_after, submitted_before, args,
                                 counting=True)
        if states and schedd is None:
            # Every job's schedd is a cluster's: said so, SQLite counts the states through jobs_state, one range
            # per schedd and state (5 ms for 100,000 active jobs among 1,000,000), not by scanning every job.
            where += " AND schedd IN (SELECT DISTINCT schedd FROM clusters)"
        return int(self._query(f"SELECT count(*) AS n FROM jobs{where}", args)[0]["n"])

    def submitted_descriptions(self, cluster_rows: Sequence[int]) -> dict[int, str]:
        """The submitted description of each cluster row (what the schedd was given)."""
        if not cluster_rows:
            return {}
        marks = ", ".join("?" * len(cluster_rows))
        rows = self._query(f"SELECT id, submitted_description FROM clusters WHERE id IN ({marks})", list(cluster_rows))
        return {r["id"]: r["submitted_description"] for r in rows}
