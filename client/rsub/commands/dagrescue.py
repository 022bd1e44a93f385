"""`rsub submit --rescue 12`: rerun a failed or removed DAG from its rescue file (only the nodes not done)."""

from __future__ import annotations

import argparse
import os
import sys

from rsub.connection import Failure, submit_call
from rsub.views import emit_json
from rsub.wire.vocabulary import EXIT_USAGE, JSON_VERSION


def parse_id(text: str) -> tuple[int, str | None]:
    """A DAG's id as rsub shows it: 12 or 12@schedd."""
    cluster, _, schedd = text.partition("@")
    if not cluster.isdigit():
        raise Failure(EXIT_USAGE, f"--rescue {text}: give the DAG's cluster id, as 12 or 12@schedd")
    return int(cluster), schedd or None


def rescue(args: argparse.Namespace, ident: str) -> int:
    cluster, schedd = parse_id(ident)
    if schedd and args.schedd and schedd != args.schedd:
        raise Failure(EXIT_USAGE, f"--rescue {ident} names schedd {schedd}, --schedd {args.schedd}")
    result = submit_call(args, description="", cwd=os.getcwd(), schedd=schedd or args.schedd, token=args.token,
                         group=args.group, role=args.role, rescue_of=cluster,
                         max_jobs=getattr(args, "max_concurrent", None))
    if args.json:
        emit_json({"version": JSON_VERSION, **result})
        return 0
    print(f"rescue of DAG {cluster} submitted as cluster {result['cluster']} on schedd {result['schedd']}:"
          " only the nodes not done run again.")
    for note in result.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    return 0
