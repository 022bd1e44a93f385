"""`rsub watch`: a live view of the active clusters from rsubd's watch stream, like condor_watch_q.

condor_watch_q reads the jobs' event logs, which for spooled jobs live on the schedd; rsub
reads its own ledger's events instead. On a terminal it is a full-screen view (rsub.watchview,
curses: imported only here); elsewhere it prints plain lines, a change or a cluster's progress
each, with no escape codes.
"""

from __future__ import annotations

import argparse
import sys

from rsub.follow import Tracker, follow
from rsub.progress import change_line, cluster_line

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from rsub.commands import AddParser


def cmd_watch(args: argparse.Namespace) -> int:
    fields = {"ids": args.ids, "schedd": args.schedd, "jobs": False, "until_final": bool(args.exit and args.ids),
              "timeout": args.timeout}
    tracker = Tracker()
    if sys.stdout.isatty() and not args.plain:
        from rsub import watchview

        return watchview.run(args, tracker, fields)
    try:
        for changes in follow(args, tracker, **fields):
            for change in changes:
                if change.before is not None:  # the snapshot's jobs are summed up by their clusters' lines
                    print(change_line(change.job), flush=True)
            for ident in tracker.touched:
                print(cluster_line(tracker.clusters[ident]), flush=True)
    except KeyboardInterrupt:
        return 0
    return 0


def add_parser(name: str, add: AddParser) -> None:
    from rsub.commands.wait import parse_timeout

    s = add("watch", "a live view of the active clusters: progress, counts, recent events (q quits)",
            "rsub watch\nrsub watch 12 13 --exit\nrsub watch --schedd fnal\nrsub watch --plain | tee watch.log")
    s.add_argument("ids", nargs="*", metavar="ID", help="clusters or jobs to watch (default: every active cluster)")
    s.add_argument("--schedd", help="only this schedd's jobs")
    s.add_argument("--exit", action="store_true", help="with IDs: end once every one is retrieved, removed or failed")
    s.add_argument("--timeout", type=parse_timeout, metavar="DURATION", help="end after this long (90s, 2h)")
    s.add_argument("--plain", action="store_true", help="plain lines even on a terminal")
    s.set_defaults(func=cmd_watch)
