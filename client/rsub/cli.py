"""rsub: the command line client of rsubd.

Imports only the standard library and `rsub.wire.protocol`, so it starts in the time
Python itself takes. Exit codes: 0 ok, 1 error, 2 usage or bad request,
3 rsubd not running, 4 no such job, 5 submit description refused, 6 timed out,
7 the schedd failed, 8 a token is missing, expired or refused (a person must act).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from rsub import __version__

from rsub.wire import paths

from rsub.wire import protocol
from rsub.wire.protocol import Connection, DaemonUnavailable

# `rsub q` must start in little more than Python's own time: modules only some commands need
# (subprocess, shutil, jobsub) are imported where they are used, and typing only for the checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TERMINAL = ("retrieved", "removed", "failed")


class Failure(Exception):
    def __init__(self, exit_code: int, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message
        self.sent = sent  # the request reached rsubd before the connection was lost


def socket_for(args: argparse.Namespace) -> str:
    if args.socket:
        return str(paths.socket_path(args.socket))
    if os.environ.get("RSUB_SOCKET"):
        return str(paths.socket_path())
    cfg = paths.config_file(args.config)
    if cfg is not None and cfg.exists():
        import tomllib

        try:
            data = tomllib.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise Failure(protocol.EXIT_USAGE, f"cannot read config {cfg}: {e}") from None
        if isinstance(data.get("socket"), str):
            return str(Path(data["socket"]).expanduser())
    return str(paths.socket_path())


def call(args: argparse.Namespace, kind: str, io_timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
    """One request; a daemon error becomes a Failure with its exit code."""
    connected = False
    try:
        with Connection(socket_for(args), timeout=io_timeout) as conn:
            connected = True
            reply = conn.call(kind, **fields)
    except DaemonUnavailable as e:
        raise Failure(protocol.EXIT_NO_DAEMON, f"{e}; start it with 'rsubd' or 'systemctl --user start rsubd'",
                      sent=connected) from None
    except TimeoutError:
        raise Failure(protocol.EXIT_TIMEOUT, f"rsubd did not answer within {io_timeout:g} s") from None
    except OSError as e:
        raise Failure(protocol.EXIT_NO_DAEMON, f"cannot talk to rsubd: {e}", sent=connected) from None
    if not reply.get("ok"):
        err = reply.get("error") or {}
        code = err.get("code", protocol.ErrorCode.INTERNAL)
        raise Failure(protocol.EXIT_BY_CODE.get(code, protocol.EXIT_ERROR), err.get("message", "unknown error"))
    result: dict[str, Any] = reply["result"]
    return result


SUBMIT_RETRY_FOR = 120.0  # seconds a submit waits for an rsubd that went away mid-request to come back
IN_PROGRESS = "rsubd is finishing this submit"


def submit_call(args: argparse.Namespace, **fields: Any) -> dict[str, Any]:
    """Send a submit; if rsubd goes away mid-request, send the same request again once it is back.

    The request id stays the same, so rsubd gives the retry the cluster it made
    (or finishes or undoes its half-made submit first): never a second cluster.
    """
    request_id = os.urandom(16).hex()
    deadline: float | None = None
    while True:
        try:
            return call(args, "submit", io_timeout=600.0, request_id=request_id, **fields)
        except Failure as e:
            lost = e.exit_code == protocol.EXIT_NO_DAEMON and (e.sent or deadline is not None)
            # A submit slower than the socket's limit goes on in rsubd: asking again with the same
            # request joins it, where a new `rsub submit` would make a second cluster.
            slow = e.exit_code == protocol.EXIT_TIMEOUT
            if not (lost or slow or e.message.startswith(IN_PROGRESS)):
                raise
            if deadline is None:
                deadline = time.monotonic() + SUBMIT_RETRY_FOR
                print("rsub: " + ("the submit is taking long; still waiting for it" if slow else
                                  "rsubd went away during the submit; waiting for it to finish it")
                      + " (the same request: never a second cluster)", file=sys.stderr)
            if time.monotonic() > deadline:
                raise Failure(e.exit_code, f"{e.message} (gave up after {SUBMIT_RETRY_FOR:g} s; running the same "
                              "rsub submit again is safe only if `rsub q` shows no new cluster)") from None
            time.sleep(0.5)


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# -- tables: aligned and coloured on a terminal, tab-separated and plain otherwise ----------------

# SGR colours of the job states (and so of their jobsub letters).
STATE_COLOURS = {"running": "32", "held": "33", "failed": "31", "removed": "2", "completed": "36",
                 "retrieved": "32;2", "spooling": "34", "submitting": "34"}


def on_terminal() -> bool:
    return sys.stdout.isatty()


def use_colour() -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org) or TERM is dumb."""
    return on_terminal() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def render_table(rows: list[list[str]], header: list[str], *, tty: bool, colour: bool = False,
                 colour_column: int | None = None, row_states: list[str] | None = None) -> list[str]:
    """The lines of a table: on a terminal, aligned columns (the state column coloured if `colour`);
    otherwise a header and one line per row, the columns separated by tabs, for cut, awk and sort."""
    rows = [[" ".join(str(c).split()) for c in r] for r in rows]  # a hold reason may hold tabs or newlines
    if not tty:
        return ["\t".join(header), *("\t".join(r) for r in rows)]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, r in enumerate([header, *rows]):
        cells = list(r)
        pads = [" " * (w - len(c)) for c, w in zip(cells, widths)]
        code = STATE_COLOURS.get(row_states[n - 1], "") if colour and n and row_states else ""
        if code and colour_column is not None:
            cells[colour_column] = f"\033[{code}m{cells[colour_column]}\033[0m"
        line = "  ".join(c + p for c, p in zip(cells, pads)).rstrip()
        lines.append(f"\033[1m{line}\033[0m" if colour and n == 0 else line)
    return lines


def table(rows: list[list[str]], header: list[str], row_states: list[str] | None = None,
          colour_column: int | None = None) -> None:
    tty = on_terminal()
    for line in render_table(rows, header, tty=tty, colour=tty and use_colour(), colour_column=colour_column,
                             row_states=row_states):
        print(line)


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """An age such as 90s, 45m, 2h, 3d, 1w or 1d12h, in seconds (argparse's type for --since and --older-than)."""
    import re

    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.strip().lower())
    if not parts or re.sub(r"\s+", "", text.lower()) != "".join(n + u for n, u in parts):
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (use a number and a unit: 90s, 45m, 2h, 3d, 1w, 1d12h)")
    return sum(float(n) * _AGE_UNITS[u] for n, u in parts)


def run_time_text(seconds: float | None) -> str:
    """jobsub_q's RUN_TIME: D+HH:MM:SS, or - when rsub never saw the job run."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    return f"{days}+{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


_SUBMITTED: dict[str, str] = {}  # a cluster's jobs share their submit time: format it once


def submitted_text(iso_time: str | None) -> str:
    """jobsub_q's SUBMITTED: MM/DD HH:MM in local time."""
    if not iso_time:
        return "-"
    if iso_time not in _SUBMITTED:
        import datetime

        _SUBMITTED[iso_time] = datetime.datetime.fromisoformat(iso_time).astimezone().strftime("%m/%d %H:%M")
    return _SUBMITTED[iso_time]


JOBSUB_HEADER = ["JOBID", "OWNER", "SUBMITTED", "RUN_TIME", "ST", "PRI", "SIZE", "CMD"]


def jobsub_row(job: dict[str, Any]) -> list[str]:
    js = job.get("jobsub") or {}
    return [job["id"], js.get("owner") or "-", submitted_text(job.get("submitted_at")),
            run_time_text(js.get("run_time")), js.get("status") or "?", str(js.get("priority", 0)),
            str(js.get("size") or "-"), js.get("command") or "-"]


def show_jobsub(jobs: list[dict[str, Any]]) -> None:
    """jobsub_q's columns, and on a terminal its closing count of jobs by state."""
    tty = on_terminal()
    if not jobs and tty:
        print("no jobs")
        return
    table([jobsub_row(j) for j in jobs], JOBSUB_HEADER, [j["state"] for j in jobs], colour_column=4)
    if tty:
        counts: dict[str, int] = {}
        for j in jobs:
            counts[j["state"]] = counts.get(j["state"], 0) + 1
        print(f"\n{len(jobs)} jobs; " + ", ".join(f"{n} {state}" for state, n in counts.items()))


def note(job: dict[str, Any]) -> str:
    if job.get("attention"):
        return f"NEEDS ATTENTION: {job['attention']}"
    if job["state"] in ("held", "spooling") and job.get("hold_reason"):
        hint = f" [{job['hold_hint']}]" if job.get("hold_hint") else ""
        return f"held (code {job.get('hold_code')}): {job['hold_reason']}{hint}"
    if job.get("exit_signal") is not None and job["state"] in ("retrieved", "completed"):
        return f"killed by signal {job['exit_signal']}; output in {job['iwd']}"
    if job.get("error"):
        return str(job["error"])
    if job["state"] == "removed":
        return f"removed: {job.get('remove_reason') or ''}"
    if job["state"] in ("retrieved", "completed"):
        return f"output in {job.get('retrieved_to') or job['iwd']}"
    return ""


def exit_text(job: dict[str, Any]) -> str:
    if job.get("exit_signal") is not None:
        return f"sig {job['exit_signal']}"
    return "" if job.get("exit_code") is None else str(job["exit_code"])


def show_jobs(jobs: list[dict[str, Any]]) -> None:
    if not jobs and on_terminal():
        print("no jobs")
        return
    table([[j["id"], j["state"], exit_text(j), (j["submitted_at"] or "")[:19], note(j)] for j in jobs],
          ["JOB", "STATE", "EXIT", "SUBMITTED", "NOTE"], [j["state"] for j in jobs], colour_column=1)


# -- subcommands ---------------------------------------------------------------


def cmd_ping(args: argparse.Namespace) -> int:
    result = call(args, "ping")
    if args.json:
        emit_json({"version": protocol.JSON_VERSION, "rsubd_version": result["version"], "pid": result["pid"]})
        return 0
    print(f"rsubd {result['version']} is running (pid {result['pid']})")
    return 0


def cmd_poke(args: argparse.Namespace) -> int:
    result = call(args, "poke", schedd=args.schedd)
    if args.json:
        emit_json({"version": protocol.JSON_VERSION, **result})
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


def add_submit_options(parser: argparse.ArgumentParser) -> None:
    """The options of `rsub submit`, shared by its parser and by `submit_options_parser`."""
    from rsub import jobsub

    parser.add_argument("--schedd", help="schedd name from the config (default: the first)")
    parser.add_argument("-G", "--group", help="the group (experiment) whose token profile to use, as jobsub's -G")
    parser.add_argument("--role", help="the role within the group, as jobsub's --role")
    parser.add_argument("--token", help="the token profile to use, by name (default: the schedd's)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    jobsub.add_options(parser)


def submit_options_parser() -> argparse.ArgumentParser:
    """Reads options given after a plain submit file ("rsub submit job.sub --json")."""
    parser = argparse.ArgumentParser(prog="rsub submit", add_help=False)
    add_submit_options(parser)
    return parser


def show_submitted(result: dict[str, Any], source: str) -> None:
    print(f"Submitted {len(result['jobs'])} job(s) to cluster {result['cluster']} on schedd {result['schedd']}.")
    for job in result["jobs"]:
        print(job)
    for key in result.get("replaced", []):
        print(f"note: rsub set its own {key}; the value in {source} was replaced", file=sys.stderr)


def cmd_submit(args: argparse.Namespace) -> int:
    # The submit file (or file:// script) and what follows it arrive as one list: after a
    # file:// script everything is the job's arguments, as with jobsub_submit.
    target = list(args.target)
    if target[:1] == ["--"]:
        target = target[1:]
    if not target:
        raise Failure(protocol.EXIT_USAGE, "submit needs a submit description file, or a script as file:///path/to/script")
    if target[0].startswith("file://"):
        return submit_script(args, target[0], target[1:])
    if target[1:]:
        submit_options_parser().parse_args(target[1:], namespace=args)
    from rsub import jobsub

    if used := jobsub.options_used(args):
        raise Failure(protocol.EXIT_USAGE, f"{', '.join(used)}: only for a script given as file:///path/to/script, "
                                           "not with a submit description file")
    path = Path(target[0])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise Failure(protocol.EXIT_BAD_SUBMIT, f"cannot read submit file {path}: {getattr(e, 'strerror', e)}") from None
    result = submit_call(args, description=text, cwd=os.getcwd(), submit_file=str(path.resolve()),
                         schedd=args.schedd, token=args.token, group=args.group, role=args.role)
    if args.json:
        emit_json(result)
        return 0
    show_submitted(result, path.name)
    return 0


def submit_script(args: argparse.Namespace, url: str, job_args: list[str]) -> int:
    """`rsub submit [options] file:///path/to/script [ARG ...]`: build the job as jobsub_submit does, then submit it."""
    from rsub import jobsub

    try:
        plan = jobsub.build(url, job_args, count=args.count, input_files=args.input_files, tars=args.tars,
                            memory=args.memory, disk=args.disk, cpus=args.cpus, lifetime=args.lifetime,
                            environment=args.environment, lines=args.lines, cwd=os.getcwd(), environ=os.environ)
        directory = jobsub.submit_dir(plan.script.name)
        text = jobsub.describe(plan, directory)
        if args.dry_run:
            print(text, end="")
            print("rsub: dry run: nothing was written or submitted", file=sys.stderr)
            return 0
        jobsub.materialize(plan, directory, text)
    except jobsub.BuildError as e:
        raise Failure(protocol.EXIT_BAD_SUBMIT, str(e)) from None
    try:
        with jobsub.Progress(jobsub.input_bytes(plan, directory), sys.stderr):
            result = submit_call(args, description=text, cwd=str(directory),
                                 submit_file=str(directory / jobsub.SUBMIT_FILE), schedd=args.schedd,
                                 token=args.token, group=args.group, role=args.role)
    except Failure as e:
        # rsubd refused before sending anything to a schedd: no job will ever use the directory.
        if e.exit_code in (protocol.EXIT_BAD_SUBMIT, protocol.EXIT_USAGE, protocol.EXIT_TOKEN):
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
        raise
    if args.json:
        emit_json({**result, "output_dir": str(directory)})
        return 0
    show_submitted(result, jobsub.SUBMIT_FILE)
    print(f"output will be in {directory}")
    return 0


def filter_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The filters of q, status and history, as the request's fields."""
    return {"states": args.state or [], "schedd": args.schedd, "clusters": args.cluster or [],
            "since": args.since, "older_than": args.older_than}


def cmd_status(args: argparse.Namespace, *, view: str = "status") -> int:
    """`rsub status` (rsub's own columns), `rsub q` (active jobs) and `rsub history` (final ones), jobsub's columns."""
    fields = {"ids": args.ids, "limit": args.limit, **filter_fields(args)}
    if view == "history":
        result = call(args, "history", **fields)
    else:
        result = call(args, "status", active=view == "q", **fields)
    if args.json:
        emit_json({"version": protocol.JSON_VERSION, **result})
        return 0
    if view == "status":
        show_jobs(result["jobs"])
    else:
        show_jobsub(result["jobs"])
    for name, info in result.get("schedds", {}).items():
        if info.get("last_error"):
            print(f"warning: schedd {name} is not answering ({info['last_error']}); "
                  f"this view is {info['stale_seconds']} s old", file=sys.stderr)
    return 0


def member_name(path: str, iwd: str | None) -> str:
    """A file's name in a fetchlog archive: its path under the job's iwd, else its base name; never absolute."""
    if iwd:
        rel = os.path.relpath(path, iwd)
        if not rel.startswith(".."):
            return rel
    return os.path.basename(path)


def pack_logs(result: dict[str, Any], archive: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Write the archive of `rsub fetchlog`: job.sub and each job's existing output, error and log files.

    Returns the member names and the (file, job state) pairs that were not there. The archive
    is written beside its final name and renamed over it, so a failure never leaves half of one.
    """
    import io
    import tarfile

    members = ["job.sub"]
    missing: list[tuple[str, str]] = []
    packed: set[str] = set()  # paths, each packed (or reported missing) once: a cluster's procs share its log
    names: set[str] = {"job.sub"}
    tmp = archive.with_name(f".{archive.name}.{os.getpid()}.partial")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            data = result["submitted_description"].encode()
            info = tarfile.TarInfo("job.sub")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
            for job in result["jobs"]:
                for name in ("output", "error", "log"):
                    value = job["files"].get(name)
                    if not value:
                        continue
                    path = os.path.join(job["iwd"] or "", value)
                    if path in packed:
                        continue
                    packed.add(path)
                    if not os.path.isfile(path):
                        missing.append((path, job["state"]))
                        continue
                    arcname = member_name(path, job["iwd"])
                    if arcname in names:
                        arcname = f"{job['proc']}/{arcname}"
                    names.add(arcname)
                    tar.add(path, arcname=arcname, recursive=False)
                    members.append(arcname)
        tmp.replace(archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return members, missing


def cmd_fetchlog(args: argparse.Namespace) -> int:
    result = call(args, "fetchlog", job=args.id)
    dest = Path(args.dest or ".")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        archive = dest / f"{result['id']}.tgz"
        members, missing = pack_logs(result, archive)
    except OSError as e:
        raise Failure(protocol.EXIT_ERROR, f"cannot write the archive in {dest}: {e.strerror or e}") from None
    for path, state in missing:
        why = "" if state == "retrieved" else f" (the job is {state}: its output is not home yet)"
        print(f"rsub: not in the archive, no such file: {path}{why}", file=sys.stderr)
    if args.json:
        emit_json({"version": protocol.JSON_VERSION, "archive": str(archive), "members": members,
                   "missing": [path for path, _ in missing]})
    else:
        print(f"wrote {archive}: {', '.join(members)}")
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    from rsub import completion

    print(completion.script(args.shell, build_parser()), end="")
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    dest = None if args.dest is None else os.path.abspath(os.path.expanduser(args.dest))
    result = call(args, "retrieve", io_timeout=3600.0, ids=args.ids, dest=dest)
    if args.json:
        emit_json({"version": protocol.JSON_VERSION, **result})
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
        raise Failure(protocol.EXIT_SCHEDD, f"{len(failed)} job(s) could not be retrieved")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    if args.timeout is not None and not (0 <= args.timeout < float("inf")):
        raise Failure(protocol.EXIT_USAGE, f"--timeout must be a number of seconds >= 0, not {args.timeout}")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    seen: dict[str, tuple[str, bool]] = {}
    while True:
        chunk = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
        result = call(args, "wait", io_timeout=chunk + 30.0, ids=args.ids, timeout=chunk)
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
                raise Failure(protocol.EXIT_ATTENTION, f"{len(stuck)} job(s) need attention: their output cannot be"
                              f" retrieved until you act (see above; then 'rsub retrieve ID')")
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            raise Failure(protocol.EXIT_TIMEOUT, f"timed out after {args.timeout:g} s; jobs still active")


def act_summary(action: str, name: str, counts: dict[str, int]) -> str:
    """One line per schedd from the schedd's own tally: how many jobs matched and what became of them."""
    parts = [f"{counts[k]} {k.replace('_', ' ')}" for k in
             ("success", "already_done", "bad_status", "not_found", "error", "permission_denied") if counts.get(k)]
    matched = counts.get("job_ads", 0)
    return f"{name}: {action}: {matched} job(s) matched; " + (", ".join(parts) or "nothing to do")


def cmd_act(args: argparse.Namespace) -> int:
    constraint = args.constraint
    if constraint is not None:
        if args.ids:
            raise Failure(protocol.EXIT_USAGE, "give job ids or --constraint, not both")
        if not constraint.strip():
            raise Failure(protocol.EXIT_USAGE, "--constraint needs a ClassAd expression, e.g. 'JobStatus == 5'")
    elif not args.ids:
        raise Failure(protocol.EXIT_USAGE, f"{args.command} needs job ids (12, 12.0, 12.0@local) or --constraint EXPR")
    result = call(args, "act", action=args.action, ids=args.ids, reason=args.reason, constraint=constraint,
                  schedd=args.schedd)
    if args.json:
        emit_json({"version": protocol.JSON_VERSION, **result})
        return 0
    for name, counts in result["schedds"].items():
        print(act_summary(args.action, name, counts))
    return 0


def cmd_daemon_install(args: argparse.Namespace) -> int:
    from rsub import units

    import shutil

    exe = shutil.which("rsubd") or str(Path(sys.argv[0]).resolve().parent / "rsubd")
    if not os.access(exe, os.X_OK):
        raise Failure(protocol.EXIT_ERROR, f"cannot find the rsubd program (looked for {exe}); is rsub installed?")
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


def cmd_daemon(args: argparse.Namespace) -> int:
    if args.daemon_command == "install":
        return cmd_daemon_install(args)
    if args.daemon_command == "stop":
        call(args, "daemon_stop")
        print("rsubd is stopping")
        return 0
    result = call(args, "daemon_status")
    if args.json:
        emit_json({"version": 1, **result})
        return 0
    print(f"rsubd {result['rsubd_version']}, pid {result['pid']}, up {result['uptime']:.0f} s, socket {result['socket']}")
    for name, s in result["schedds"].items():
        jobs = ", ".join(f"{n} {k}" for k, n in sorted(s["jobs"].items())) or "no jobs"
        every = s.get("interval_in_force", s["poll_interval"])
        print(f"  schedd {name} ({s['backend']}): poll every {every:g} s, last {s['last_poll_at']} "
              f"{s['last_outcome'] or ''}; {s['polls']} polls, {s['queries']} queries, {s['retrieve_calls']} retrieves, "
              f"{s['edit_calls']} edits, {s['history_calls']} history, {s['errors']} errors; jobs: {jobs}")
        if "polling" in s:
            since = s.get("seconds_since_poll_ended")
            now = ("polling now" if s["polling"] else
                   f"next poll in {s['next_poll_in']:g} s" + (f" ({since:g} s since the last ended)" if since is not None else ""))
            alive = "alive" if s.get("schedule_alive", True) else "STALLED"
            print(f"    {now}; schedule {alive}, stalls {s.get('stalls', 0)}")
        if s.get("last_error"):
            print(f"    last error: {s['last_error']}")
        if s.get("backing_off"):
            print(f"    backing off after {s['consecutive_errors']} errors in a row "
                  f"(normal interval {s['poll_interval']:g} s, at most {s['backoff_max']:g} s)")
        if s.get("token"):
            t = s["token"]
            print(f"    token {t['profile']}: {t['state']}, expires {t['expires_at'] or 'never'}")
            if t.get("action_needed"):
                print(f"    ACTION NEEDED: {t['action_needed']}")
    return 0


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
        return 0
    if args.token_command == "refresh":
        result = call(args, "token_refresh", io_timeout=args.wait + 30.0, name=args.name, wait=args.wait)
        if args.json:
            emit_json({"version": 1, **result})
        failed = False
        for name, outcome in result["results"].items():
            failed = failed or outcome["refreshed"] is False
            if not args.json:
                word = {True: "refreshed", False: "not refreshed", None: "still refreshing"}[outcome["refreshed"]]
                print(f"{name}: {word}" + (f": {outcome['reason']}" if outcome.get("reason") else ""))
        if not args.json:
            for t in result["tokens"]:
                if t["action_needed"] and (args.name in (None, t["name"])):
                    print(f"{t['name']}: ACTION NEEDED: {t['action_needed']}", file=sys.stderr)
        return protocol.EXIT_TOKEN if failed else 0
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
        raise Failure(protocol.EXIT_TOKEN, f"{plan['argv'][0]} failed with status {code}")
    os.chmod(plan["target"], 0o600)
    call(args, "token_refresh", name=plan["profile"], wait=5.0)
    print(f"new token in {plan['target']}; rsubd has read it")
    return 0


def cluster_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"not a cluster id: {text!r}")
    return int(text)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


EXIT_CODES = """\
exit codes:
  0  done
  1  error inside rsubd (see its log)
  2  usage error or malformed request
  3  rsubd is not running
  4  no such job in the ledger
  5  submit description refused (nothing was sent to the schedd)
  6  timed out (rsub wait --timeout)
  7  the schedd failed or refused
  8  a token is missing, expired or refused: a person must act
  9  rsub wait: some job needs attention (its output cannot be retrieved until you act)"""

MAIN_EXAMPLES = """\
examples:
  rsub submit job.sub && rsub wait 12
  rsub q --state running --since 2h
  rsub history --json | jq '.jobs[].id'
  rsub fetchlog 12.0@local --dest logs/
  rsub hold --constraint 'RequestMemory > 4000'
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; given the command about to run, only its subparser (argparse builds each in ~2 ms)."""
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="rsub", description="Submit HTCondor jobs through rsubd and follow them until their output is home.",
        epilog=MAIN_EXAMPLES + "\n" + EXIT_CODES, formatter_class=raw,
    )
    p.add_argument("--socket", help="rsubd's socket (default: $RSUB_SOCKET, the config's socket, or the XDG runtime dir)")
    p.add_argument("--config", help="config file to read the socket path from")
    p.add_argument("--version", action="version", version=f"rsub {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def wanted(name: str) -> bool:
        return command is None or command == name

    def add(name: str, help_text: str, examples: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A subcommand whose help ends with its examples, one per line."""
        lines = "\n".join(f"  {e}" for e in examples.split("\n"))
        description = help_text[:1].upper() + help_text[1:] + "."
        return sub.add_parser(name, help=help_text, description=description, formatter_class=raw,
                              epilog=f"examples:\n{lines}\n\nexit codes: see rsub --help", **kwargs)

    if wanted("ping"):
        s = add("ping", "check that rsubd answers", "rsub ping\nrsub ping --json")
        s.add_argument("--json", action="store_true", help=f"print JSON (shape version {protocol.JSON_VERSION})")
        s.set_defaults(func=cmd_ping)

    if wanted("poke"):
        s = add("poke", "ask rsubd to poll now (rate-limited, never during a backoff)", "rsub poke\nrsub poke --schedd fnal")
        s.add_argument("--schedd", help="only this schedd (default: all)")
        s.add_argument("--json", action="store_true", help=f"print JSON (shape version {protocol.JSON_VERSION})")
        s.set_defaults(func=cmd_poke)

    if wanted("submit"):
        s = add("submit", "submit a submit description file, or a script as jobsub_submit does",
                "rsub submit examples/hello.sub\n"
                "rsub submit -N 10 -f data.txt --tar code/ file://$PWD/run.sh --seed 7",
                usage="rsub submit [options] FILE.sub\n       rsub submit [options] file:///path/to/script [ARG ...]")
        add_submit_options(s)
        s.add_argument("target", nargs=argparse.REMAINDER, metavar="FILE | file:///SCRIPT [ARG ...]",
                       help="the submit description file; or the script, options first, then the job's arguments")
        s.set_defaults(func=cmd_submit)

    views = (
        ("q", "jobs still active, in jobsub_q's columns",
         "rsub q\nrsub q --state held --schedd fnal\nrsub q --since 2h --json"),
        ("status", "jobs, all or by id, with their exit codes and what to do about them",
         "rsub status 12\nrsub status --state failed --older-than 3d\nrsub status 12.0@local --json"),
        ("history", "jobs that are done (retrieved, removed or failed), newest first, in jobsub's columns",
         "rsub history\nrsub history --state removed --since 1d\nrsub history --cluster 12 --json"),
    )
    for name, text, examples in views:
        if not wanted(name):
            continue
        s = add(name, text, examples)
        s.add_argument("ids", nargs="*", metavar="ID", help="CLUSTER, CLUSTER.PROC, optionally @SCHEDD")
        s.add_argument("--json", action="store_true", help=f"print JSON (shape version {protocol.JSON_VERSION})")
        s.add_argument("--limit", type=positive_int, default=1000, help="at most this many jobs (default 1000)")
        s.add_argument("--state", action="append", choices=protocol.STATES, metavar="STATE",
                       help=f"only jobs in this state (repeatable): {', '.join(protocol.STATES)}")
        s.add_argument("--schedd", help="only jobs on this schedd")
        s.add_argument("--cluster", action="append", type=cluster_number, metavar="CLUSTER",
                       help="only jobs of this cluster (repeatable)")
        s.add_argument("--since", type=parse_age, metavar="AGE", help="only jobs submitted at most AGE ago (90s, 45m, 2h, 3d, 1w)")
        s.add_argument("--older-than", type=parse_age, metavar="AGE", help="only jobs submitted at least AGE ago")
        s.set_defaults(func=lambda a, view=name: cmd_status(a, view=view))

    if wanted("wait"):
        s = add("wait", "wait until jobs are retrieved, removed or failed", "rsub wait --timeout 600 12")
        s.add_argument("ids", nargs="+", metavar="ID")
        s.add_argument("--timeout", type=float, help="give up after this many seconds (exit 6)")
        s.add_argument("--json", action="store_true", help="print each state change as a JSON line")
        s.set_defaults(func=cmd_wait)

    if wanted("retrieve"):
        s = add("retrieve", "fetch completed jobs' output now (after fixing what stopped it), here or into --dest",
                "rsub retrieve 12.0\nrsub retrieve 12 --dest /scratch/me/out12")
        s.add_argument("ids", nargs="+", metavar="ID")
        s.add_argument("--dest", metavar="DIR", help="retrieve into DIR instead of each job's own directory")
        s.add_argument("--json", action="store_true", help=f"print JSON (shape version {protocol.JSON_VERSION})")
        s.set_defaults(func=cmd_retrieve)

    if wanted("fetchlog"):
        s = add("fetchlog", "pack a job's stdout, stderr, job log and submit description into ID.tgz",
                "rsub fetchlog 12.0\nrsub fetchlog 12@local --dest logs/")
        s.add_argument("id", metavar="ID", help="CLUSTER.PROC, or CLUSTER for all its jobs; optionally @SCHEDD")
        s.add_argument("--dest", metavar="DIR", help="where to write the archive (default: here)")
        s.add_argument("--json", action="store_true", help=f"print JSON (shape version {protocol.JSON_VERSION})")
        s.set_defaults(func=cmd_fetchlog)

    for name, action in (("hold", "hold"), ("release", "release"), ("rm", "remove")):
        if not wanted(name):
            continue
        s = add(name, f"{action} jobs: by id, or rsub's own that match a constraint",
                f"rsub {name} --reason 'fixing input' 12.0\nrsub {name} 12\n"
                f"rsub {name} --constraint 'JobStatus == 5 && HoldReasonCode == 26'")
        s.add_argument("ids", nargs="*", metavar="ID", help="CLUSTER, CLUSTER.PROC, optionally @SCHEDD")
        s.add_argument("--constraint", metavar="EXPR",
                       help="a ClassAd expression: the jobs of this rsubd that match it on the schedd")
        s.add_argument("--schedd", help="the schedd for --constraint, or of ids without @SCHEDD (default: the first)")
        s.add_argument("--reason", help="recorded by the schedd with the action")
        s.add_argument("--json", action="store_true", help=f"print JSON (shape version {protocol.JSON_VERSION})")
        s.set_defaults(func=cmd_act, action=action)

    if wanted("daemon"):
        s = add("daemon", "rsubd itself: status, stop, install", "rsub daemon status --json\nrsub daemon stop")
        dsub = s.add_subparsers(dest="daemon_command", required=True, metavar="ACTION")
        ds = dsub.add_parser("status", help="what rsubd is doing, per schedd", epilog="example: rsub daemon status --json")
        ds.add_argument("--json", action="store_true", help=f"print JSON (shape version {protocol.JSON_VERSION})")
        dsub.add_parser("stop", help="stop rsubd (jobs keep running on their schedd)", epilog="example: rsub daemon stop")
        ds = dsub.add_parser("install", help="write the systemd user units and print how to enable them",
                             epilog="example: rsub daemon install && systemctl --user enable --now rsubd")
        ds.add_argument("--dir", help="where to write the units (default: ~/.config/systemd/user)")
        s.set_defaults(func=cmd_daemon)

    if wanted("token"):
        s = add("token", "the tokens rsubd keeps fresh: status, refresh, request",
                "rsub token status\nrsub token refresh dune")
        tsub = s.add_subparsers(dest="token_command", required=True, metavar="ACTION")
        ts = tsub.add_parser("status", help="each token profile: who, until when, and any action needed",
                             epilog="example: rsub token status --json")
        ts.add_argument("--json", action="store_true", help=f"print JSON (shape version {protocol.JSON_VERSION})")
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

    if wanted("completion"):
        s = add("completion", "print a shell completion script for bash or zsh",
                "rsub completion bash > ~/.local/share/bash-completion/completions/rsub\n"
                "rsub completion zsh > ~/.zfunc/_rsub   # with fpath+=(~/.zfunc) before compinit in ~/.zshrc")
        s.add_argument("shell", choices=("bash", "zsh"))
        s.set_defaults(func=cmd_completion)
    return p


COMMANDS = ("ping", "poke", "submit", "q", "status", "history", "wait", "retrieve", "fetchlog", "hold", "release", "rm", "daemon",
            "token", "completion")
VALUED_OPTIONS = ("--socket", "--config")


def command_of(argv: list[str]) -> str | None:
    """The subcommand named in argv, if it is a known one (else the full parser explains)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in VALUED_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_of(argv)).parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except Failure as e:
        print(f"rsub: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
