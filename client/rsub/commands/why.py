"""`rsub why ID`: why a job is idle (its Requirements against the pool's slots), held, failed or removed."""

from __future__ import annotations

import argparse

from rsub.connection import call
from rsub.views import emit_json
from rsub.wire.vocabulary import JSON_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any

    from rsub.commands import AddParser


def job_lines(job: dict[str, Any]) -> list[str]:
    lines = [f"{job['id']}: {job['state']}"]
    lines += [f"  {s}" for s in job.get("says") or []]
    analysis = job.get("analysis")
    if analysis:
        lines.append(f"  {analysis['matching_slots']} of {analysis['slots']} slot(s) match every clause:")
        width = max((len(c["clause"]) for c in analysis["clauses"]), default=0)
        for c in analysis["clauses"]:
            added = "  (added for the request)" if c["added_for_request"] else ""
            lines.append(f"    {c['clause']:<{width}}  {c['slots']:>5} slot(s){added}")
        start = analysis.get("start") or {}
        if start.get("read"):
            lines.append(f"    the slots' START accepts it on {start['accepting']} of {start['read']}")
    if job.get("stderr_tail"):
        lines.append("  the last lines of its stderr:")
        lines += [f"    | {line}" for line in job["stderr_tail"]]
    return lines


def cmd_why(args: argparse.Namespace) -> int:
    result = call(args, "why", io_timeout=120.0, ids=args.ids)
    if args.json:
        emit_json({"version": JSON_VERSION, **result})
        return 0
    for n, job in enumerate(result["jobs"]):
        if n:
            print()
        print("\n".join(job_lines(job)))
    return 0


def add_parser(name: str, add: AddParser) -> None:
    s = add(name, "why a job is idle (its Requirements against the pool's slots), held, failed or removed",
            "rsub why 12.0\nrsub why 12.0@fnal --json")
    s.add_argument("ids", nargs="+", metavar="ID", help="CLUSTER.PROC (or CLUSTER), optionally @SCHEDD")
    s.add_argument("--json", action="store_true", help=f"print JSON (shape version {JSON_VERSION})")
    s.set_defaults(func=cmd_why)
