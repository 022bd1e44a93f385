"""The ledger's reads for the `watch` stream: new events, the selected jobs, per-cluster summaries. Read-only SQL.

A selection is the request's job selectors (any of them) and an optional schedd; with no
selectors, the caller names the clusters it watches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rsub.wire.vocabulary import ACTIVE_STATES, FINAL_STATES
from rsubd.ledger.schema import JobSelector, Row

ClusterKey = tuple[str, int]
_ACTIVE = ", ".join(f"'{s}'" for s in ACTIVE_STATES)
_FINAL = ", ".join(f"'{s}'" for s in FINAL_STATES)


def selection(sels: Sequence[JobSelector], schedd: str | None, args: list[Any], prefix: str = "") -> str:
    """A WHERE term for the selection; a selector with a proc also takes its cluster's own events (proc NULL)."""
    terms = []
    if schedd is not None:
        terms.append(f"{prefix}schedd = ?")
        args.append(schedd)
    if sels:
        alts = []
        for sel in sels:
            alt = f"{prefix}cluster = ?"
            args.append(sel.cluster)
            if sel.proc is not None:
                alt += f" AND ({prefix}proc = ? OR {prefix}proc IS NULL)"
                args.append(sel.proc)
            if sel.schedd is not None:
                alt += f" AND {prefix}schedd = ?"
                args.append(sel.schedd)
            alts.append(f"({alt})")
        terms.append("(" + " OR ".join(alts) + ")")
    return " AND ".join(terms) if terms else "1"


def _clusters_term(clusters: Iterable[ClusterKey], args: list[Any]) -> str:
    keys = sorted(clusters)
    for name, cluster in keys:
        args += [name, cluster]
    return "(" + " OR ".join("(schedd = ? AND cluster = ?)" for _ in keys) + ")" if keys else "0"


class WatchReads:
    """What the watch stream reads; the Ledger supplies `_query`."""

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def newest_event(self) -> int:
        return int(self._query("SELECT max(id) AS n FROM events")[0]["n"] or 0)

    def selects_any(self, sels: Sequence[JobSelector], schedd: str | None) -> bool:
        args: list[Any] = []
        return bool(self._query(f"SELECT 1 FROM jobs WHERE {selection(sels, schedd, args)} LIMIT 1", args))

    def selected_jobs(self, sels: Sequence[JobSelector], schedd: str | None, clusters: Iterable[ClusterKey] | None,
                      after: tuple[str, int, int] | None, limit: int) -> list[Row]:
        """The next `limit` selected jobs after `after` in (schedd, cluster, proc) order; `clusters` narrows."""
        args: list[Any] = []
        where = selection(sels, schedd, args)
        if clusters is not None:
            where += " AND " + _clusters_term(clusters, args)
        if after is not None:
            where += " AND (schedd, cluster, proc) > (?, ?, ?)"
            args += list(after)
        return self._query(f"SELECT * FROM jobs WHERE {where} ORDER BY schedd, cluster, proc LIMIT ?", [*args, limit])

    def selected_clusters(self, sels: Sequence[JobSelector], schedd: str | None, *,
                          active_only: bool = False) -> set[ClusterKey]:
        args: list[Any] = []
        where = selection(sels, schedd, args) + (f" AND state IN ({_ACTIVE})" if active_only else "")
        return {(r["schedd"], r["cluster"]) for r in self._query(
            f"SELECT DISTINCT schedd, cluster FROM jobs WHERE {where}", args)}

    def unfinished(self, sels: Sequence[JobSelector], schedd: str | None,
                   clusters: Iterable[ClusterKey] | None = None) -> bool:
        """Whether a selected job is neither final nor waiting for a person."""
        args: list[Any] = []
        where = selection(sels, schedd, args)
        if clusters is not None:
            where += " AND " + _clusters_term(clusters, args)
        return bool(self._query(
            f"SELECT 1 FROM jobs WHERE {where} AND state NOT IN ({_FINAL}) AND attention IS NULL LIMIT 1", args))

    def events_after(self, after: int, sels: Sequence[JobSelector], schedd: str | None, limit: int) -> list[Row]:
        """The next selected events, with the job's exit and hold fields as the ledger has them now."""
        args: list[Any] = [after]
        where = selection(sels, schedd, args, "e.")
        return self._query(
            "SELECT e.id, e.at, e.schedd, e.cluster, e.proc, e.from_state, e.to_state, e.detail, j.exit_code,"
            " j.exit_signal, j.hold_reason, j.hold_code, j.attention FROM events e LEFT JOIN jobs j"
            " ON j.schedd = e.schedd AND j.cluster = e.cluster AND j.proc = e.proc"
            f" WHERE e.id > ? AND {where} ORDER BY e.id LIMIT ?", [*args, limit])

    def clusters_with_events(self, after: int, upto: int, sels: Sequence[JobSelector],
                             schedd: str | None) -> set[ClusterKey]:
        args: list[Any] = [after, upto]
        where = selection(sels, schedd, args)
        return {(r["schedd"], r["cluster"]) for r in self._query(
            f"SELECT DISTINCT schedd, cluster FROM events WHERE id > ? AND id <= ? AND {where}", args)}

    def cluster_summaries(self, clusters: Iterable[ClusterKey]) -> list[dict[str, Any]]:
        """Per cluster: jobs in each state, how many are final, exited non-zero, need a person."""
        keys = sorted(set(clusters))
        out: dict[ClusterKey, dict[str, Any]] = {}
        for start in range(0, len(keys), 400):  # SQLite's default limit of bound variables is far above 800
            args: list[Any] = []
            term = _clusters_term(keys[start:start + 400], args)
            for r in self._query(
                    "SELECT schedd, cluster, state, count(*) AS n, sum(exit_code IS NOT NULL AND exit_code != 0)"
                    " AS bad, sum(attention IS NOT NULL) AS attention, min(iwd) AS iwd FROM jobs"
                    f" WHERE {term} GROUP BY schedd, cluster, state", args):
                s = out.setdefault((r["schedd"], r["cluster"]), {
                    "id": f"{r['cluster']}@{r['schedd']}", "cluster": r["cluster"], "schedd": r["schedd"],
                    "total": 0, "done": 0, "states": {}, "exit_nonzero": 0, "needs_attention": 0, "iwd": r["iwd"]})
                s["total"] += r["n"]
                s["states"][r["state"]] = r["n"]
                s["done"] += r["n"] if r["state"] in FINAL_STATES else 0
                s["exit_nonzero"] += r["bad"] or 0
                s["needs_attention"] += r["attention"] or 0
        return [out[k] for k in keys if k in out]
