"""`rsub ping` and `rsub poke`: is rsubd there, and ask it to poll now."""

from __future__ import annotations

import argparse

from rsub.connection import call
from rsub.views import emit_json
from rsub.wire.vocabulary import JSON_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from rsub.commands import AddParser


def cmd_ping(args: argparse.Namespace) -> int:
    result = call(args, "ping")
    if args.json:
        emit_json({"version": JSON_VERSION, "rsubd_version": result["version"], "pid": result["pid"]})
        return 0
    print(f"rsubd {result['version']} is running (pid {result['pid']})")
    return 0


def cmd_poke(args: argparse.Namespace) -> int:
    result = call(args, "poke", schedd=args.schedd)
    if args.json:
        emit_json({"version": JSON_VERSION, **result})
        return 0
    for name, info in result["schedds"].items():
        if info["poked"]:
            print(f"{name}: polling now")
        elif info.get("decision") == "queued":
            print(f"{name}: a poll is running; another follows it")
        elif info["backing_off"]:
            print(f"{name}: not now: rsubd is backing off from this schedd (next poll in {info['next_poll_in']} s)")
        else:
            wait = info.get("early_poll_available_in")
            print(f"{name}: not now: the next poll is due anyway or early polls are used up"
                  + (f" (next early poll allowed in {wait:g} s)" if wait else ""))
    return 0


def add_parser(name: str, add: AddParser) -> None:
    if name == "ping":
        s = add("ping", "check that rsubd answers", "rsub ping\nrsub ping --json")
        s.add_argument("--json", action="store_true", help=f"print JSON (shape version {JSON_VERSION})")
        s.set_defaults(func=cmd_ping)
    else:
        s = add("poke", "ask rsubd to poll now (rate-limited, never during a backoff)",
                "rsub poke\nrsub poke --schedd fnal")
        s.add_argument("--schedd", help="only this schedd (default: all)")
        s.add_argument("--json", action="store_true", help=f"print JSON (shape version {JSON_VERSION})")
        s.set_defaults(func=cmd_poke)
