"""`rsub daemon status|stop|log|install`: rsubd itself, its log, and the systemd user units that run it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rsub.connection import Failure, call, socket_for
from rsub.views import emit_json
from rsub.wire.vocabulary import ACTIVE_STATES, EXIT_ERROR, JSON_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any

    from rsub.commands import AddParser


def cmd_daemon_install(args: argparse.Namespace) -> int:
    import shutil

    from rsub import units

    exe = shutil.which("rsubd") or str(Path(sys.argv[0]).resolve().parent / "rsubd")
    if not os.access(exe, os.X_OK):
        raise Failure(EXIT_ERROR, f"cannot find the rsubd program (looked for {exe}); is rsub installed?")
    config_dir = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    target = Path(args.dir) if args.dir else config_dir / "systemd" / "user"
    target.mkdir(parents=True, exist_ok=True)
    sock = socket_for(args)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    listen = "%t" + sock[len(runtime):] if runtime and sock.startswith(runtime.rstrip("/") + "/") else sock
    for name, text in units.render(exe, listen).items():
        path = target / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path}")
    print("\nto start rsubd now and at every login:")
    print("  systemctl --user daemon-reload")
    print("  systemctl --user enable --now rsubd.service     # or rsubd.socket, to start it on first use")
    print("to keep it running after you log out (your jobs keep being tracked):")
    print(f"  loginctl enable-linger {os.environ.get('USER') or '$USER'}")
    return 0


def human_duration(seconds: float) -> str:
    """A duration as a person reads it: 0.8 s, 41 s, 2 min 41 s, 3 h 12 min, 2 d 4 h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def last_poll_text(at: str | None, now: float) -> str:
    """When the last query was: `last never`, or the local time and how long ago."""
    if at is None:
        return "last never"
    import datetime

    when = datetime.datetime.fromisoformat(at)
    return f"last {when.astimezone():%H:%M:%S} ({human_duration(max(0.0, now - when.timestamp()))} ago)"


def schedd_line(name: str, s: dict[str, Any], now: float) -> str:
    """A schedd's first line in `rsub daemon status`; one with no job in flight says it is idle, not stuck."""
    jobs = ", ".join(f"{n} {k}" for k, n in sorted(s["jobs"].items())) or "no jobs"
    every = s.get("interval_in_force", s["poll_interval"])
    outcome = f" {s['last_outcome']}" if s.get("last_outcome") else ""
    if not any(s["jobs"].get(state) for state in ACTIVE_STATES):
        polling = f"idle: nothing to track (a poll queries it every {human_duration(every)} once a job is in flight)"
    else:
        polling = f"poll every {human_duration(every)}, {last_poll_text(s['last_poll_at'], now)}{outcome}"
    pool_name = s.get("schedd_name") or name
    known_as = "" if pool_name == name else f", {pool_name} in the pool"
    return (f"  schedd {name} ({s['backend']}{known_as}): {polling}; {s['polls']} polls, {s['queries']} queries, "
            f"{s['retrieve_calls']} retrieves, {s['edit_calls']} edits, {s['history_calls']} history, "
            f"{s['errors']} errors; jobs: {jobs}")


def cmd_daemon(args: argparse.Namespace) -> int:
    if args.daemon_command == "install":
        return cmd_daemon_install(args)
    if args.daemon_command == "log":
        from rsub.commands.logview import cmd_daemon_log

        return cmd_daemon_log(args)
    if args.daemon_command == "stop":
        call(args, "daemon_stop")
        print("rsubd is stopping")
        return 0
    result = call(args, "daemon_status")
    if args.json:
        emit_json({"version": 1, **result})
        return 0
    import time

    now = time.time()
    print(f"rsubd {result['rsubd_version']}, pid {result['pid']}, up {human_duration(result['uptime'])}, "
          f"socket {result['socket']}")
    where = result.get("log") or {}
    if where:
        place = {"file": where.get("path"), "journal": f"the journal ({where.get('journal_command')})",
                 "stderr": "its standard error"}.get(str(where.get("to")), "?")
        print(f"  log: {place}, level {where.get('level')} (rsub daemon log)")
    for name, s in result["schedds"].items():
        print(schedd_line(name, s, now))
        if "polling" in s:
            since = s.get("seconds_since_poll_ended")
            ended = f" ({human_duration(since)} since the last ended)" if since is not None else ""
            next_in = "polling now" if s["polling"] else f"next poll in {human_duration(s['next_poll_in'])}" + ended
            alive = "alive" if s.get("schedule_alive", True) else "STALLED"
            print(f"    {next_in}; schedule {alive}, stalls {s.get('stalls', 0)}")
        if s.get("last_error"):
            print(f"    last error: {s['last_error']}")
        if s.get("backing_off"):
            print(f"    backing off after {s['consecutive_errors']} errors in a row (normal interval "
                  f"{human_duration(s['poll_interval'])}, at most {human_duration(s['backoff_max'])})")
        if s.get("token"):
            t = s["token"]
            print(f"    token {t['profile']}: {t['state']}, expires {t['expires_at'] or 'never'}")
            if t.get("action_needed"):
                print(f"    ACTION NEEDED: {t['action_needed']}")
    return 0


def add_parser(name: str, add: AddParser) -> None:
    s = add("daemon", "rsubd itself: status, stop, log, install",
            "rsub daemon status --json\nrsub daemon log -f\nrsub daemon stop")
    dsub = s.add_subparsers(dest="daemon_command", required=True, metavar="ACTION")
    ds = dsub.add_parser("status", help="what rsubd is doing, per schedd", epilog="example: rsub daemon status --json")
    ds.add_argument("--json", action="store_true", help=f"print JSON (shape version {JSON_VERSION})")
    dsub.add_parser("stop", help="stop rsubd (jobs keep running on their schedd)", epilog="example: rsub daemon stop")
    ds = dsub.add_parser("log", help="print rsubd's log (its last lines; -f to follow)",
                         epilog="examples: rsub daemon log -n 200; rsub daemon log -f; "
                                "rsub daemon log --json | jq .event")
    ds.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="the last N lines (default 50)")
    ds.add_argument("-f", "--follow", action="store_true", help="then print new lines as rsubd writes them, "
                    "across rotations, until interrupted")
    ds.add_argument("--json", action="store_true", help="print the log's own JSON lines, as they are")
    ds = dsub.add_parser("install", help="write the systemd user units and print how to enable them",
                         epilog="example: rsub daemon install && systemctl --user enable --now rsubd")
    ds.add_argument("--dir", help="where to write the units (default: ~/.config/systemd/user)")
    s.set_defaults(func=cmd_daemon)
