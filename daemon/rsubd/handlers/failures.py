"""When jobs fail: a cluster's summary of what its jobs used (`rsub status 12 --summary`)."""

from __future__ import annotations

from typing import Any

from rsub.wire.vocabulary import ErrorCode, RequestError
from rsubd.handlers.context import Services, selectors
from rsubd.services.usage import cluster_summary


def summary(services: Services, ids: list[Any]) -> dict[str, Any]:
    """Each named cluster's jobs by state and exit code, and their usage against the requests."""
    if not ids:
        raise RequestError(ErrorCode.BAD_REQUEST, "name the clusters to summarise: 12 or 12@local")
    out = []
    for sel, text in zip(selectors(services, ids), ids, strict=True):
        found = services.ledger.jobs([sel], limit=1)
        if not found:
            raise RequestError(ErrorCode.NOT_FOUND, f"no job {text} in rsub's ledger")
        schedd, cluster = found[0]["schedd"], found[0]["cluster"]
        rows = list(services.ledger.cluster_jobs(schedd, cluster))
        if sel.proc is not None:
            rows = [r for r in rows if r["proc"] == sel.proc]
        replaced = services.ledger.replacements(schedd, [(r["cluster"], r["proc"]) for r in rows])
        out.append({"id": f"{text.split('@')[0]}@{schedd}", "cluster": cluster, "schedd": schedd,
                    **cluster_summary(rows, replaced)})
    return {"clusters": out}
