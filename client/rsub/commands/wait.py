"""`rsub wait`: follow jobs until they are retrieved, removed or failed."""

from __future__ import annotations

import argparse
import json
import sys
import time

from rsub.connection import Failure, call
from rsub.views import note
from rsub.wire.vocabulary import EXIT_ATTENTION, EXIT_NO_DAEMON, EXIT_TIMEOUT, EXIT_USAGE

RECONNECT_FOR = 120.0  # seconds a wait keeps asking an rsubd that went away (a restart) to come back

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from rsub.commands import AddParser


def cmd_wait(args: argparse.Namespace) -> int:
    if args.timeout is not None and not (0 <= args.timeout < float("inf")):
        raise Failure(EXIT_USAGE, f"--timeout must be a number of seconds >= 0, not {args.timeout}")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    seen: dict[str, tuple[str, bool]] = {}
    gone_since: float | None = None
    while True:
        chunk = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
        try:
            result = call(args, "wait", io_timeout=chunk + 30.0, ids=args.ids, timeout=chunk)
        except Failure as e:
            # A wait only reads, so asking again is always safe: an rsubd restarted (systemd, an upgrade,
            # a crash) must not end `rsub submit ... && rsub wait ...` scripts. Not when rsubd was never
            # reached: with no rsubd at all, saying so at once is more use.
            if e.exit_code != EXIT_NO_DAEMON or not (e.sent or seen or gone_since is not None):
                raise
            at = time.monotonic()
            if gone_since is None:
                gone_since = at
                print(f"rsub: {e.message}; waiting up to {RECONNECT_FOR:g} s for it to come back", file=sys.stderr)
            if at - gone_since > RECONNECT_FOR or (deadline is not None and at >= deadline):
                raise
            time.sleep(0.5)
            continue
        gone_since = None
        for job in result["jobs"]:
            now = (job["state"], bool(job.get("needs_attention")))
            if seen.get(job["id"]) != now:
                seen[job["id"]] = now
                if args.json:
                    print(json.dumps({"id": job["id"], "state": job["state"], "exit_code": job["exit_code"],
                                      "needs_attention": now[1]}), flush=True)
                else:
                    extra = note(job)
                    print(f"{job['id']}: {job['state']}" + (f" ({extra})" if extra else ""), flush=True)
        if result["done"]:
            stuck = [j for j in result["jobs"] if j.get("needs_attention")]
            if stuck:
                raise Failure(EXIT_ATTENTION, f"{len(stuck)} job(s) need attention: their output cannot be"
                              f" retrieved until you act (see above; then 'rsub retrieve ID')")
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            raise Failure(EXIT_TIMEOUT, f"timed out after {args.timeout:g} s; jobs still active")


def add_parser(name: str, add: AddParser) -> None:
    s = add("wait", "wait until jobs are retrieved, removed or failed", "rsub wait --timeout 600 12")
    s.add_argument("ids", nargs="+", metavar="ID")
    s.add_argument("--timeout", type=float, help="give up after this many seconds (exit 6)")
    s.add_argument("--json", action="store_true", help="print each state change as a JSON line")
    s.set_defaults(func=cmd_wait)
