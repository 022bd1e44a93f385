"""A DAG as `rsub q`, `status`, `wait` and `watch` show it: one row (its DAGMan job), with node progress.

`DAG_*` attributes (as the last poll saw them) give the nodes done, failed and futile;
the node jobs in the queue give running, idle and held. With `nodes`, each node with
its state, its attempts and their exit codes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from rsubd.ledger.store import Ledger

LIVE = {1: "idle", 2: "running", 5: "held", 3: "removing", 4: "finishing", 6: "running", 7: "idle"}
ENDED = (3, 4)  # the DAGMan job's JobStatus once DAGMan has exited: removed, completed


def node_state(node: Mapping[str, Any], dag_ended: bool) -> str:
    if node["live_status"] is not None:
        return LIVE.get(int(node["live_status"]), "queued")
    attempts = node["attempts"]
    if attempts:
        last = attempts[-1]
        if last.get("exit_code") == 0 and last.get("job_status") == 4:
            return "done"
        return "failed" if dag_ended or len(attempts) > int(node["retries"]) else "retrying"
    return "not run" if dag_ended else "waiting"


def dag_view(ledger: Ledger, dag: Mapping[str, Any], *, nodes: bool) -> dict[str, Any]:
    progress = json.loads(dag["progress"] or "{}")
    rows = ledger.dag_nodes(int(dag["cluster_row"]))
    ended = dag["job_status"] in ENDED
    live = [LIVE.get(int(n["live_status"]), "queued") for n in rows if n["live_status"] is not None]
    view: dict[str, Any] = {
        "file": dag["dag_file"], "dir": os.path.dirname(str(dag["dag_file"])), "dag_status": dag["dag_status"],
        "error": dag["error"], "home": dag["placed_at"] is not None, "rescue_of": dag["rescue_of"],
        "nodes": {"total": progress.get("total") or len(rows), "done": progress.get("done") or 0,
                  "running": live.count("running"), "idle": live.count("idle"), "held": live.count("held"),
                  "failed": progress.get("failed") or 0, "futile": progress.get("futile") or 0},
    }
    if nodes:
        view["node_list"] = [{"name": n["node"], "state": node_state(n, ended), "home": n["home"],
                              "parents": n["parents"].split(), "retries": n["retries"], "job": n["live_job"],
                              "attempts": n["attempts"]} for n in rows]
    return view


def annotate(ledger: Ledger, jobs: list[dict[str, Any]], *, nodes: bool = False) -> list[dict[str, Any]]:
    """Add `dag` to each DAGMan job's view; its output is in the DAG's directory, not the staging one."""
    keys = [(j["schedd"], j["cluster"]) for j in jobs if j.get("proc") == 0]
    if not keys:
        return jobs
    dags = ledger.dags_of(keys)
    for job in jobs:
        dag = dags.get((job["schedd"], job["cluster"])) if job.get("proc") == 0 else None
        if dag is not None:
            job["dag"] = dag_view(ledger, dag, nodes=nodes)
            job["iwd"] = job["dag"]["dir"]
            if dag["error"] and not job.get("error"):
                job["error"] = dag["error"]
    return jobs


def unplaced(ledger: Ledger, rows: list[dict[str, Any]]) -> bool:
    """Whether a DAG among these jobs has ended but its files are not home yet (a removed DAG, between polls)."""
    keys = [(r["schedd"], r["cluster"]) for r in rows if r.get("proc") == 0]
    return bool(keys) and any(d["placed_at"] is None and not d["error"] for d in ledger.dags_of(keys).values())


def annotate_clusters(ledger: Ledger, summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `dag` (node progress) to the summaries of clusters that are DAGs (rsub watch, rsub wait)."""
    keys = [(s["schedd"], s["cluster"]) for s in summaries]
    dags = ledger.dags_of(keys) if keys else {}
    for s in summaries:
        dag = dags.get((s["schedd"], s["cluster"]))
        if dag is not None:
            s["dag"] = dag_view(ledger, dag, nodes=False)
    return summaries
