"""`rsub submit work.dag`, `rsub submit --dag file://work.dagnabbit` and `rsub submit --rescue 12`: a DAG, remotely.

rsubd reads the .dag and every node's description, spools every file they need and
runs the access point's condor_dagman on them; each node's output comes home to its
own initialdir when the DAG ends.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rsub.connection import Failure, call, submit_call
from rsub.views import emit_json
from rsub.wire.vocabulary import EXIT_BAD_SUBMIT, EXIT_USAGE, JSON_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DAG_KEYWORDS = ("JOB", "PARENT", "SPLICE", "SUBDAG", "FINAL")


def is_dag(path: str) -> bool:
    """A .dag file, or a file whose first statement is a DAG's (condor_submit_dag takes any name)."""
    if path.endswith(".dag"):
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.split()
                if words and not words[0].startswith("#"):
                    return words[0].upper() in DAG_KEYWORDS and len(words) >= 2 and "=" not in line.split()[1]
    except OSError:
        return False
    return False


def submit_dag(args: argparse.Namespace, dag: Path, *, rescue_of: int | None = None) -> int:
    """Send the DAG to rsubd: the file's path and text; rsubd finds and spools the rest."""
    try:
        text = dag.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise Failure(EXIT_BAD_SUBMIT, f"cannot read DAG file {dag}: {getattr(e, 'strerror', None) or e}") from None
    path = str(dag.resolve())
    max_jobs = getattr(args, "max_concurrent", None)
    if args.dry_run:
        checked = call(args, "dry_run", io_timeout=120.0, description=text, cwd=os.getcwd(), schedd=args.schedd,
                       dag=path, max_jobs=max_jobs)
        if args.json:
            emit_json({"version": JSON_VERSION, **checked})
            return 0
        print(checked["description"], end="")
        print(f"rsub: dry run: the DAG's {len(checked['nodes'])} node(s) and {len(checked['files'])} file(s) would"
              f" be spooled to schedd {checked['schedd']} as above; nothing was sent", file=sys.stderr)
        return 0
    fields: dict[str, Any] = {"dag": path, "max_jobs": max_jobs}
    if rescue_of is not None:
        fields["rescue_of"] = rescue_of
    result = submit_call(args, description=text, cwd=os.getcwd(), submit_file=path, schedd=args.schedd,
                         token=args.token, group=args.group, role=args.role, **fields)
    if args.json:
        emit_json({"version": JSON_VERSION, **result})
        return 0
    nodes = result.get("dag", {}).get("nodes", [])
    print(f"DAG {dag.name} ({len(nodes)} node(s)) submitted as cluster {result['cluster']} on schedd"
          f" {result['schedd']}.")
    print(f"its outputs come home to {dag.resolve().parent} (and each node's initialdir) when it ends;"
          f" follow it with: rsub q {result['cluster']} --nodes")
    for note in result.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    return 0


def check_dag_options(args: argparse.Namespace) -> None:
    from rsub import jobsub

    if used := jobsub.options_used(args):
        raise Failure(EXIT_USAGE, f"{', '.join(used)}: for a DAG, give jobsub options on each line of a dagnabbit"
                      " file (rsub submit --dag file://work.dagnabbit), or in each node's .sub")
