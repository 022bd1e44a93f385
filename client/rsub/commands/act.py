"""`rsub hold`, `rsub release` and `rsub rm`: by job id, or rsub's own jobs that match a constraint."""

from __future__ import annotations

import argparse
import sys

from rsub.connection import Failure, call
from rsub.views import emit_json
from rsub.wire.vocabulary import EXIT_USAGE, JSON_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any

    from rsub.commands import AddParser


def finished_text(finished: dict[str, list[str]]) -> str:
    """`12.0 is already retrieved`, `3 jobs are already removed`: jobs rsub did not send, being done with."""
    parts = []
    for state, ids in finished.items():
        who = ", ".join(ids) if len(ids) <= 3 else f"{len(ids)} jobs"
        parts.append(f"{who} {'is' if len(ids) == 1 else 'are'} already {state}")
    return "; ".join(parts)


def act_summary(action: str, name: str, counts: dict[str, Any]) -> str:
    """One line per schedd from the schedd's own tally: how many jobs matched and what became of them.

    Jobs the ledger has in a final state (retrieved, removed, failed) are not sent: the line says so.
    """
    parts = [f"{counts[k]} {k.replace('_', ' ')}" for k in
             ("success", "already_done", "bad_status", "not_found", "error", "permission_denied") if counts.get(k)]
    matched = counts.get("job_ads", 0)
    if finished := counts.get("finished"):
        if not matched and not parts:
            return f"{name}: {action}: nothing to do: {finished_text(finished)}"
        parts.append(finished_text(finished))
    return f"{name}: {action}: {matched} job(s) matched; " + (", ".join(parts) or "nothing to do")


def cmd_act(args: argparse.Namespace) -> int:
    args.ids = [*args.ids, *args.jobids]
    constraint = args.constraint
    if constraint is not None:
        if args.ids:
            raise Failure(EXIT_USAGE, "give job ids or --constraint, not both")
        if not constraint.strip():
            raise Failure(EXIT_USAGE, "--constraint needs a ClassAd expression, e.g. 'JobStatus == 5'")
    elif not args.ids:
        raise Failure(EXIT_USAGE, f"{args.command} needs job ids (12, 12.0, 12.0@local) or --constraint EXPR")
    result = call(args, "act", action=args.action, ids=args.ids, reason=args.reason, constraint=constraint,
                  schedd=args.schedd)
    if args.json:
        emit_json({"version": JSON_VERSION, **result})
        return 0
    for name, counts in result["schedds"].items():
        print(act_summary(args.action, name, counts))
        if spooling := counts.get("held_once_spooled"):
            who = ", ".join(spooling) if len(spooling) <= 3 else f"{len(spooling)} jobs"
            print(f"{name}: {who} {'is' if len(spooling) == 1 else 'are'} still held for spooling the input; "
                  "rsubd holds them as soon as that ends (the schedd would release them)")
        if cancelled := counts.get("hold_cancelled"):
            who = ", ".join(cancelled) if len(cancelled) <= 3 else f"{len(cancelled)} jobs"
            one = len(cancelled) == 1
            print(f"{name}: {who}: {'the hold' if one else 'the holds'} rsubd was keeping for after spooling "
                  f"{'is' if one else 'are'} dropped; {'it runs' if one else 'they run'} once spooled")
        if counts.get("reason_missing"):
            print(f"rsub: {name} does not show the reason on {', '.join(counts['reason_missing'])}", file=sys.stderr)
    if "reason" in result:
        print(f"rsub: the reason was sent as {result['reason']!r}: a schedd keeps no double quote or line break",
              file=sys.stderr)
    return 0


ACTIONS = {"hold": "hold", "release": "release", "rm": "remove"}  # the command, and the action it asks for


def add_parser(name: str, add: AddParser) -> None:
    action = ACTIONS[name]
    s = add(name, f"{action} jobs: by id, or rsub's own that match a constraint",
            f"rsub {name} --reason 'fixing input' 12.0\nrsub {name} 12\nrsub {name} -J 12.0@local\n"
            f"rsub {name} --constraint 'JobStatus == 5 && HoldReasonCode == 26'")
    s.add_argument("ids", nargs="*", metavar="ID", help="CLUSTER, CLUSTER.PROC, optionally @SCHEDD")
    s.add_argument("--constraint", metavar="EXPR",
                   help="a ClassAd expression: the jobs of this rsubd that match it on the schedd")
    s.add_argument("--schedd", help="the schedd for --constraint, or of ids without @SCHEDD (default: the first)")
    s.add_argument("--reason", help="recorded by the schedd with the action")
    s.add_argument("--json", action="store_true", help=f"print JSON (shape version {JSON_VERSION})")
    s.add_argument("-J", "--jobid", dest="jobids", action="append", default=[], metavar="ID",
                   help="a job id, as jobsub's -J takes it: 12.0@SCHEDD (repeatable)")
    s.set_defaults(func=cmd_act, action=action)
