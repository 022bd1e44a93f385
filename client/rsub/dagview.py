"""A DAG in `rsub q`/`status`/`wait`: its one line of node progress and, with --nodes, each node's attempts."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DAG_STATUS = {0: "ok", 1: "error", 2: "node failed", 3: "aborted by ABORT-DAG-ON", 4: "removed", 5: "cycle",
              6: "halted"}


def progress(dag: dict[str, Any]) -> str:
    """'4 nodes: 2 done, 1 running, 0 idle, 0 held, 0 failed, 0 futile'."""
    n = dag["nodes"]
    parts = ", ".join(f"{n[k]} {k}" for k in ("done", "running", "idle", "held", "failed", "futile"))
    text = f"{n['total']} nodes: {parts}"
    status = dag.get("dag_status")
    if status not in (None, 0):
        text += f" (DAG status {status}: {DAG_STATUS.get(status, 'unknown')})"
    return text


def attempt_text(a: dict[str, Any]) -> str:
    if a.get("exit_signal") is not None:
        return f"{a['job']} signal {a['exit_signal']}"
    if a.get("job_status") == 3:
        return f"{a['job']} removed"
    return f"{a['job']} exit {a.get('exit_code')}"


def split_node(ident: str) -> tuple[str, str | None]:
    """`12@fnal:B` is node B of DAG 12@fnal."""
    head, colon, node = ident.partition(":")
    return (head, node) if colon and node else (ident, None)


def show(jobs: list[dict[str, Any]], *, nodes: bool, only: set[str] | None = None, summary: bool = True) -> None:
    """Below the table: each DAG's line (unless the table's note has it), then with `nodes` its nodes."""
    for job in jobs:
        dag = job.get("dag")
        if not dag or not (summary or nodes):
            continue
        name = dag["file"].rsplit("/", 1)[-1]
        print(f"DAG {job['id']} ({name}): {progress(dag)}")
        if dag.get("error"):
            print(f"  {dag['error']}")
        if not nodes:
            continue
        for node in dag.get("node_list", []):
            if only and node["name"] not in only:
                continue
            tries = "; ".join(attempt_text(a) for a in node["attempts"]) or "-"
            live = f" (job {node['job']})" if node.get("job") else ""
            print(f"  {node['name']:<16} {node['state']:<9}{live} attempts: {tries}")
