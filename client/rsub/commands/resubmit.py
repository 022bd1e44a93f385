"""`rsub resubmit`: run failed jobs again, exactly as they ran (their own item rows), outputs beside the others'."""

from __future__ import annotations

import argparse

from rsub.commands.status import cluster_number
from rsub.connection import Failure, submit_call
from rsub.views import emit_json
from rsub.wire.vocabulary import EXIT_USAGE, JSON_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any

    from rsub.commands import AddParser

SELECTORS = (("--failed", "failed", "every job that did not succeed: held, exited non-zero or by a signal, or failed"),
             ("--held", "held", "held jobs (removed first, then run again)"),
             ("--removed", "removed", "removed jobs"),
             ("--exit-nonzero", "exit_nonzero", "retrieved jobs that exited non-zero or were killed by a signal"))


def cmd_resubmit(args: argparse.Namespace) -> int:
    ids = [*args.ids, *args.jobids]
    if not ids and not args.select:
        raise Failure(EXIT_USAGE, "rsub resubmit needs job ids (12.17, 12, 12.17@local) or a selector: "
                      "--failed, --held, --removed, --exit-nonzero")
    if (args.cluster or args.schedd) and ids:
        raise Failure(EXIT_USAGE, "--cluster and --schedd narrow a selector; with job ids, name the jobs themselves")
    # The same request id on every retry while rsubd restarts: never a second cluster for the same jobs.
    result = submit_call(args, "resubmit", ids=ids, select=args.select or [], clusters=args.cluster or [],
                         schedd=args.schedd, overrides=args.append)
    if args.json:
        emit_json({"version": JSON_VERSION, **result})
        return 0
    for c in result["clusters"]:
        if c.get("rescue_of") is not None:
            print(f"DAG {c['rescue_of']}@{c['schedd']} runs again from its rescue file (the nodes not done) "
                  f"as cluster {c['cluster']}@{c['schedd']}.")
            continue
        pairs: list[dict[str, Any]] = c.get("replaces") or []
        print(f"{len(pairs)} job(s) submitted to cluster {c['cluster']}@{c['schedd']}.")
        for p in pairs:
            print(f"  {p['old']} -> {p['new']}")
    return 0


def add_parser(name: str, add: AddParser) -> None:
    s = add(name, "submit failed jobs again, each with its own item row and macros, outputs beside the others'",
            "rsub resubmit 12.17 12.403\nrsub resubmit --failed --cluster 12\n"
            "rsub resubmit --held -a 'request_memory = 4096'\nrsub resubmit --exit-nonzero --schedd fnal --json")
    s.add_argument("ids", nargs="*", metavar="ID", help="CLUSTER.PROC or CLUSTER, optionally @SCHEDD")
    s.add_argument("-J", "--jobid", dest="jobids", action="append", default=[], metavar="ID",
                   help="a job id, as jobsub's -J takes it (repeatable)")
    for flag, value, text in SELECTORS:
        s.add_argument(flag, dest="select", action="append_const", const=value, help=text)
    s.add_argument("--cluster", action="append", type=cluster_number, metavar="CLUSTER",
                   help="with a selector: only jobs of this cluster (repeatable)")
    s.add_argument("--schedd", help="with a selector: only jobs on this schedd")
    s.add_argument("-a", "--append", action="append", default=[], metavar="'KEY = VALUE'",
                   help="a submit command for the new jobs, replacing the old one (repeatable)")
    s.add_argument("--json", action="store_true", help=f"print JSON (shape version {JSON_VERSION})")
    s.set_defaults(func=cmd_resubmit)
