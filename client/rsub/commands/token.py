"""`rsub token status|refresh|request`: the tokens rsubd keeps fresh."""

from __future__ import annotations

import argparse
import os
import sys

from rsub.connection import Failure, call
from rsub.views import emit_json
from rsub.wire.vocabulary import EXIT_LATER, EXIT_TOKEN, JSON_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any

    from rsub.commands import AddParser


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    h, rest = divmod(int(seconds), 3600)
    return f"{sign}{h}h{rest // 60:02d}m" if h else f"{sign}{rest // 60}m{rest % 60:02d}s"


def show_tokens(tokens: list[dict[str, Any]]) -> None:
    if not tokens:
        print("no token profiles are configured (add [tokens.NAME] tables to the config)")
        return
    for t in tokens:
        print(f"{t['name']} ({t['kind']}): {t['state']}, expires {t['expires_at'] or 'never'} "
              f"(left {duration(t['time_left'])})")
        who = ", ".join(x for x in (t["subject"] and f"subject {t['subject']}",
                                    t["issuer"] and f"issuer {t['issuer']}") if x)
        if who:
            print(f"    {who}")
        if t["groups"] or t["scopes"]:
            print(f"    groups: {' '.join(t['groups']) or '-'}; scopes: {' '.join(t['scopes']) or '-'}")
        print(f"    file {t['file']}; refreshed {t['last_refresh'] or 'never'} by {t['refresh_command'] or 'nobody'}")
        if t["last_error"]:
            print(f"    last error: {t['last_error']}")
        for warning in t["warnings"]:
            print(f"    warning: {warning}")
        if t["action_needed"]:
            print(f"    ACTION NEEDED: {t['action_needed']}")


def cmd_token(args: argparse.Namespace) -> int:
    if args.token_command == "status":
        result = call(args, "token_status")
        if args.json:
            emit_json({"version": 1, **result})
        else:
            show_tokens(result["tokens"])
        # ACTION NEEDED is "a person must act", whatever the form of the output.
        return EXIT_TOKEN if any(t["action_needed"] for t in result["tokens"]) else 0
    if args.token_command == "refresh":
        result = call(args, "token_refresh", io_timeout=args.wait + 30.0, name=args.name, wait=args.wait)
        if args.json:
            emit_json({"version": 1, **result})
        failed = later = False
        for name, outcome in result["results"].items():
            # Declined by the rate limit (or one already running) is "try again later", not "a person must act".
            later = later or (outcome["refreshed"] is False and bool(outcome.get("rate_limited")))
            failed = failed or (outcome["refreshed"] is False and not outcome.get("rate_limited"))
            if not args.json:
                word = {True: "refreshed", False: "not refreshed", None: "still refreshing"}[outcome["refreshed"]]
                print(f"{name}: {word}" + (f": {outcome['reason']}" if outcome.get("reason") else ""))
        if not args.json:
            for t in result["tokens"]:
                if t["action_needed"] and (args.name in (None, t["name"])):
                    print(f"{t['name']}: ACTION NEEDED: {t['action_needed']}", file=sys.stderr)
        return EXIT_TOKEN if failed else EXIT_LATER if later else 0
    plan = call(args, "token_request_plan", name=args.name, schedd=args.schedd)
    import shutil
    import subprocess

    tool = shutil.which(plan["argv"][0])
    if tool is None or args.print_only:
        print("\n".join(plan["instructions"][1:] if tool else plan["instructions"]))
        return 0
    print(f"running {' '.join(plan['argv'])} (the schedd's administrator must approve the request)", file=sys.stderr)
    code = subprocess.run([tool, *plan["argv"][1:]], env={**os.environ, **plan["env"]}, check=False).returncode
    if code != 0:
        raise Failure(EXIT_TOKEN, f"{plan['argv'][0]} failed with status {code}")
    os.chmod(plan["target"], 0o600)
    call(args, "token_refresh", name=plan["profile"], wait=5.0)
    print(f"new token in {plan['target']}; rsubd has read it")
    return 0


def add_parser(name: str, add: AddParser) -> None:
    s = add("token", "the tokens rsubd keeps fresh: status, refresh, request",
            "rsub token status\nrsub token refresh dune")
    tsub = s.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    ts = tsub.add_parser("status", help="each token profile: who, until when, and any action needed",
                         epilog="example: rsub token status --json")
    ts.add_argument("--json", action="store_true", help=f"print JSON (shape version {JSON_VERSION})")
    ts = tsub.add_parser("refresh", help="refresh a profile's token now (at most once per refresh_floor)",
                         epilog="example: rsub token refresh dune")
    ts.add_argument("name", nargs="?", help="the profile (default: all)")
    ts.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the refresh (default 30)")
    ts.add_argument("--json", action="store_true")
    ts = tsub.add_parser("request", help="request a new IDTOKEN from the schedd with condor_token_request",
                         epilog="example: rsub token request fnal")
    ts.add_argument("name", nargs="?", help="the idtoken profile (default: the first)")
    ts.add_argument("--schedd", help="the schedd to ask (default: the one using the profile)")
    ts.add_argument("--print", dest="print_only", action="store_true",
                    help="only print the commands to run on the submit host")
    s.set_defaults(func=cmd_token)
