"""`rsub wait`: follow jobs on rsubd's watch stream until they are retrieved, removed or failed.

Each change is printed as it is recorded. On a terminal, a progress line per cluster is kept up
to date in place under the changes worth a line (held, failed, removed, exit != 0, needs
attention); elsewhere every change is a line; with --json every change is a JSON line. The
exit code says how it ended (README, "Exit codes").
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from rsub.connection import Failure
from rsub.follow import Tracker, follow
from rsub.progress import change_line, cluster_line, summary_lines
from rsub.wire.vocabulary import (
    EXIT_ATTENTION,
    EXIT_FAILED,
    EXIT_NONZERO,
    EXIT_REMOVED,
    EXIT_TIMEOUT,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import TextIO

    from rsub.commands import AddParser
    from rsub.follow import Change

REDRAW_EVERY = 0.2  # seconds between redraws of the progress lines


def parse_timeout(text: str) -> float:
    """Seconds, or a duration as --since takes it (90s, 45m, 2h, 1d12h)."""
    try:
        seconds = float(text)
    except ValueError:
        from rsub.commands.status import parse_age

        return parse_age(text)
    if not (0 <= seconds < float("inf")):
        raise argparse.ArgumentTypeError(f"--timeout must be a duration >= 0, not {text!r}")
    return seconds


class _Progress:
    """The progress lines at the bottom of a terminal, redrawn in place; lines printed above them."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.drawn = 0
        self.last = 0.0

    def line(self, text: str) -> None:
        self._erase()
        self.out.write(text + "\n")

    def draw(self, tracker: Tracker, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < REDRAW_EVERY:
            return
        self.last = now
        self._erase()
        lines = [cluster_line(s) for s in tracker.clusters.values()]
        for text in lines:
            self.out.write("\x1b[2K" + text + "\n")
        self.drawn = len(lines)
        self.out.flush()

    def _erase(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the first progress line, clear to the end
            self.drawn = 0


def _worth_a_line(change: Change) -> bool:
    job = change.job
    if job.get("needs_attention") or job["state"] in ("held", "failed", "removed"):
        return True
    return job["state"] == "retrieved" and (job.get("exit_signal") is not None or job.get("exit_code") not in (None, 0))


def _json_line(change: Change) -> str:
    j = change.job
    return json.dumps({"id": change.id, "state": j["state"], "exit_code": j.get("exit_code"),
                       "exit_signal": j.get("exit_signal"), "needs_attention": bool(j.get("needs_attention")),
                       "from": change.before})


def cmd_wait(args: argparse.Namespace) -> int:
    out = sys.stdout
    live = not args.json and out.isatty()
    progress = _Progress(out) if live else None
    tracker = Tracker()
    for changes in follow(args, tracker, ids=args.ids, jobs=True, until_final=True, timeout=args.timeout):
        for change in changes:
            if args.json:
                print(_json_line(change), flush=True)
            elif progress is None:
                print(change_line(change.job), flush=True)
            elif _worth_a_line(change):
                progress.line(change_line(change.job))
        if progress is not None:
            progress.draw(tracker, force=tracker.ended is not None)
    return _ended(args, tracker, out)


def _ended(args: argparse.Namespace, tracker: Tracker, out: TextIO) -> int:
    outcome = tracker.outcome()
    done = tracker.ended is not None and tracker.ended.get("done")
    if not args.json:
        for text in summary_lines(outcome):
            print(text, file=out)
        out.flush()
    if not done:
        raise Failure(EXIT_TIMEOUT, f"timed out after {args.timeout:g} s; {len(outcome['active'])} job(s) still"
                      " active" if args.timeout is not None else "the watch ended before the jobs did")
    if outcome["attention"]:
        raise Failure(EXIT_ATTENTION, f"{len(outcome['attention'])} job(s) need attention: their output cannot be"
                      f" retrieved until you act (see above; then 'rsub retrieve ID')")
    if outcome["failed"]:
        raise Failure(EXIT_FAILED, f"{len(outcome['failed'])} job(s) failed (the submit, spool or output was lost)")
    if outcome["removed"]:
        raise Failure(EXIT_REMOVED, f"{len(outcome['removed'])} job(s) were removed")
    if outcome["nonzero"]:
        raise Failure(EXIT_NONZERO, f"{len(outcome['nonzero'])} job(s) exited non-zero or were killed by a signal")
    return 0


def add_parser(name: str, add: AddParser) -> None:
    s = add("wait", "wait until jobs are retrieved, removed or failed, showing each change as it happens",
            "rsub wait 12\nrsub wait --timeout 2h 12 13.4\nrsub wait --json 12 | jq .state")
    s.add_argument("ids", nargs="+", metavar="ID")
    s.add_argument("--timeout", type=parse_timeout, metavar="DURATION",
                   help="give up after this long: seconds, or 90s, 45m, 2h (exit 6)")
    s.add_argument("--json", action="store_true", help="print each state change as a JSON line")
    s.set_defaults(func=cmd_wait)
