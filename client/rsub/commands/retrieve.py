"""`rsub retrieve`: fetch completed jobs' output now."""

from __future__ import annotations

import argparse
import os
import sys

from rsub.connection import Failure, call
from rsub.views import emit_json
from rsub.wire.vocabulary import EXIT_SCHEDD, JSON_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from rsub.commands import AddParser


def cmd_retrieve(args: argparse.Namespace) -> int:
    dest = None if args.dest is None else os.path.abspath(os.path.expanduser(args.dest))
    result = call(args, "retrieve", io_timeout=3600.0, ids=args.ids, dest=dest)
    if args.json:
        emit_json({"version": JSON_VERSION, **result})
    failed = [j for j in result["jobs"] if j["state"] == "completed"]
    if not args.json:
        for job in result["jobs"]:
            if job["state"] == "retrieved":
                print(f"{job['id']}: retrieved into {job.get('retrieved_to') or job['iwd']}")
            elif job["state"] == "completed":
                print(f"{job['id']}: not retrieved: {job.get('attention') or job.get('error') or 'unknown error'}")
        for skipped in result["skipped"]:
            print(f"{skipped}: skipped (no output waiting on the schedd)", file=sys.stderr)
    if failed:
        raise Failure(EXIT_SCHEDD, f"{len(failed)} job(s) could not be retrieved")
    return 0


def add_parser(name: str, add: AddParser) -> None:
    s = add("retrieve", "fetch completed jobs' output now (after fixing what stopped it), here or into --dest",
            "rsub retrieve 12.0\nrsub retrieve 12 --dest /scratch/me/out12")
    s.add_argument("ids", nargs="+", metavar="ID")
    s.add_argument("--dest", metavar="DIR", help="retrieve into DIR instead of each job's own directory")
    s.add_argument("--json", action="store_true", help=f"print JSON (shape version {JSON_VERSION})")
    s.set_defaults(func=cmd_retrieve)
