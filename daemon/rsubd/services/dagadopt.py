"""A DAG a crash left unrecorded: known by its DAGMan job's initialdir, a staging directory with a manifest.

Kept apart from services/dagsubmit.py so the poll can adopt a DAG without importing the submit workflow.
"""

from __future__ import annotations

import re
from pathlib import Path

import structlog

from rsubd.dag import stage
from rsubd.ledger.store import Ledger

log = structlog.get_logger("rsubd.services.dagadopt")
STAGING_NAME = re.compile(r"[0-9a-f]{32}")  # each staging directory's name (uuid4().hex)


def adopt(ledger: Ledger, schedd: str, clusters: list[int]) -> int:
    """Record the DAGs among these clusters that a crash left unrecorded (after the schedd's submit).

    A DAGMan job's initialdir is its staging directory, whose manifest says what the DAG is.
    """
    known = {c for c in clusters if ledger.dag_by_cluster(schedd, c) is not None} if clusters else set()
    adopted = 0
    for cluster, (row, iwd) in ledger.iwds_of(schedd, [c for c in clusters if c not in known]).items():
        if not STAGING_NAME.fullmatch(Path(iwd).name) or (manifest := stage.read_manifest(Path(iwd))) is None:
            continue
        dag_file = str(Path(manifest["dag_dir"], manifest["dag_name"]))
        ledger.add_dag(row, schedd=schedd, cluster=cluster, dag_file=dag_file, staging_dir=iwd,
                       nodes=manifest["nodes"])
        log.warning("dag.adopted", schedd=schedd, cluster=cluster, staging_dir=iwd)
        adopted += 1
    return adopted
