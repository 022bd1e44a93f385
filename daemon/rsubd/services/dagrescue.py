"""Rerunning a failed or removed DAG from its rescue file: only the nodes not done run again.

DAGMan wrote `<dag>.rescueNNN` (the nodes DONE) when the DAG failed or was removed, and
rsubd brought it home beside the .dag. A rescue submit spools the DAG again (a fresh
spool directory) with that rescue file; DAGMan (-AutoRescue 1) runs it in combination
with the DAG. The outputs of done nodes that later nodes read are home by then, so the
discovery that spools every node's inputs spools them again.

`rescue_files` is what `rsub submit --rescue 12` (and `rsub resubmit 12` for a DAG) calls.
"""

from __future__ import annotations

import re
from pathlib import Path

from rsub.wire.vocabulary import ACTIVE_STATES, ErrorCode, RequestError
from rsubd.ledger.store import Ledger

_RESCUE = re.compile(r"\.rescue(\d{3})$")


def latest_rescue(dag_file: Path) -> Path | None:
    """The highest-numbered rescue file of a DAG, beside it, or None."""
    found = []
    for path in dag_file.parent.glob(dag_file.name + ".rescue[0-9][0-9][0-9]"):
        m = _RESCUE.search(path.name)
        if m and path.is_file():
            found.append((int(m.group(1)), path))
    return max(found)[1] if found else None


def rescue_files(ledger: Ledger, schedd: str | None, cluster: int) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(schedd, the .dag to submit again, the files to spool beside it) for DAG `cluster`; RequestError if none."""
    dag = ledger.dag_by_cluster(schedd, cluster)
    if dag is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"cluster {cluster} is not a DAG rsub submitted"
                           + (f" to schedd {schedd}" if schedd else ""))
    jobs = ledger.jobs_of_cluster(str(dag["schedd"]), cluster)
    if any(j["state"] in ACTIVE_STATES for j in jobs) or dag["placed_at"] is None:
        raise RequestError(ErrorCode.BAD_REQUEST, f"DAG {cluster} has not ended (or its outputs are not home yet):"
                           " a rescue reruns a DAG that failed or was removed")
    if dag["dag_status"] == 0 and all(j["state"] == "retrieved" for j in jobs):
        raise RequestError(ErrorCode.BAD_REQUEST, f"DAG {cluster} succeeded: nothing to rerun")
    dag_file = Path(str(dag["dag_file"]))
    rescue = latest_rescue(dag_file)
    if rescue is None:
        raise RequestError(ErrorCode.BAD_REQUEST, f"DAG {cluster} left no rescue file beside {dag_file}"
                           " (it succeeded, or its rescue file was removed): nothing to rerun")
    return str(dag["schedd"]), str(dag_file), ((rescue.name, str(rescue)),)
