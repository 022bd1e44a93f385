"""`rsub daemon log [-f] [-n N] [--json]`: find rsubd's log, print its last lines, follow it across rotations.

Where the log is comes from rsubd itself (`daemon_status` says where it writes);
with no rsubd running, from the config (`log_file`, `state_dir`) or the default
`<state dir>/rsubd.log`. A log that goes to the journal or to a terminal is no
file to read: rsub says where it goes instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from rsub.connection import Failure, call
from rsub.views import use_colour
from rsub.wire import paths
from rsub.wire.vocabulary import EXIT_ERROR, EXIT_NO_DAEMON, EXIT_USAGE

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from collections.abc import Callable
    from typing import IO, Any

FOLLOW_EVERY = 0.2  # seconds between two looks at a followed log that has nothing new
BLOCK = 65536
LEVEL_COLOURS = {"debug": "2", "info": "32", "warning": "33", "error": "31", "critical": "31;1"}


def _config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = paths.config_file(args.config)
    if cfg is None or not cfg.exists():
        return {}
    import tomllib

    try:
        data: dict[str, Any] = tomllib.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise Failure(EXIT_USAGE, f"cannot read config {cfg}: {e}") from None
    return data


def _not_a_file(where: dict[str, Any], flags: str) -> Failure:
    if where.get("to") == "journal":
        command = where.get("journal_command") or "journalctl --user -u rsubd"
        return Failure(EXIT_ERROR, f"rsubd logs to the systemd journal, not to a file; read it with: {command}{flags}")
    return Failure(EXIT_ERROR, "rsubd logs to its standard error (it was started on a terminal, or with "
                               "--log-file -), not to a file; start it with --log-file PATH to keep one")


def find_log(args: argparse.Namespace) -> Path:
    """The file rsubd writes its log to: asked of rsubd, else from the config or the default place."""
    flags = (" -f" if args.follow else "") + f" -n {args.lines}"
    try:
        where = call(args, "daemon_status").get("log")
    except Failure as e:
        if e.exit_code != EXIT_NO_DAEMON:
            raise
        where = None
    if where is not None:
        if where.get("to") != "file" or not where.get("path"):
            raise _not_a_file(where, flags)
        return Path(where["path"])
    # No rsubd to ask: where it writes by default, as rsubd would choose with stderr not a terminal.
    data = _config(args)
    configured = data.get("log_file")
    if configured == "-":
        raise _not_a_file({"to": "stderr"}, flags)
    if isinstance(configured, str) and configured:
        path = Path(configured).expanduser()
    else:
        state = Path(data["state_dir"]).expanduser() if isinstance(data.get("state_dir"), str) else None
        path = paths.log_file(state)
    if not path.exists() and not args.follow:
        raise Failure(EXIT_NO_DAEMON, f"rsubd is not running, and there is no log at {path} (an rsubd started "
                                      "on a terminal logs there; under systemd: journalctl --user -u rsubd)")
    print(f"rsub: rsubd is not running; its log is {path}", file=sys.stderr)
    return path


# -- reading ---------------------------------------------------------------------------------------

def last_lines(path: Path, count: int) -> tuple[list[bytes], int]:
    """The last `count` whole lines of a file, and the offset just past the last of them."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, whichever way the reading ends
    except FileNotFoundError:
        return [], 0
    with f:
        end = f.seek(0, os.SEEK_END)
        pos, data = end, b""
        while pos > 0 and data.count(b"\n") <= count:
            step = min(BLOCK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    whole = data[:data.rfind(b"\n") + 1]  # a line still being written is left for -f
    lines = whole.splitlines()
    return (lines[-count:] if count > 0 else []), end - (len(data) - len(whole))


def tail(path: Path, count: int) -> tuple[list[bytes], int]:
    """The last `count` lines of the log, reaching back into its rotated files (.1, .2, ...) if need be."""
    lines, offset = last_lines(path, count)
    older = 1
    while len(lines) < count and (old := path.with_name(f"{path.name}.{older}")).exists():
        lines = last_lines(old, count - len(lines))[0] + lines
        older += 1
    return lines, offset


def follow(path: Path, offset: int, emit: Callable[[bytes], None], *, every: float = FOLLOW_EVERY) -> None:
    """Print lines as they are written, from `offset`, until interrupted; across a rotation into the new file."""
    f: IO[bytes] | None = None
    inode = None
    rest = b""

    def drain() -> None:
        nonlocal rest
        assert f is not None
        data = rest + f.read()
        *complete, rest = data.split(b"\n")
        for line in complete:
            emit(line)
        if complete:
            sys.stdout.flush()

    try:
        while True:
            if f is None:
                try:
                    f = open(path, "rb")  # noqa: SIM115 - kept open while it is followed, closed at rotation
                except FileNotFoundError:
                    time.sleep(every)  # not there yet, or between a rotation's rename and the new file
                    continue
                inode = os.fstat(f.fileno()).st_ino
                f.seek(min(offset, os.fstat(f.fileno()).st_size))
                offset = 0  # a file opened again after a rotation is read from its start
            drain()
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is None or st.st_ino != inode:  # rotated: what the old file still got, then the new one
                drain()
                if rest:
                    emit(rest)
                    rest = b""
                f.close()
                f = None
                continue
            if st.st_size < f.tell():  # truncated in place
                f.seek(0)
                continue
            time.sleep(every)
    finally:
        if f is not None:
            f.close()


# -- showing ---------------------------------------------------------------------------------------

def _value(value: Any) -> str:
    if isinstance(value, str):
        return value if value and not any(c.isspace() or c in "\"'=" for c in value) else json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def _when(stamp: Any) -> str:
    import datetime

    try:
        moment = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return str(stamp)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def render(line: bytes, *, colour: bool = False) -> str:
    """One JSON log line as `time level event key=value ...`; any other line as it is."""
    text = line.decode("utf-8", "replace")
    try:
        event = json.loads(text)
    except ValueError:
        return text
    if not isinstance(event, dict) or "event" not in event:
        return text
    stamp, level, name = event.pop("timestamp", ""), str(event.pop("level", "")), str(event.pop("event"))
    trace = event.pop("exception", None)
    shown = f"{level:<7}"
    if colour and level in LEVEL_COLOURS:
        shown = f"\033[{LEVEL_COLOURS[level]}m{shown}\033[0m"
    fields = " ".join(f"{k}={_value(v)}" for k, v in event.items() if v is not None)
    out = f"{_when(stamp)} {shown} {name}" + (f" {fields}" if fields else "")
    if trace:
        out += "\n" + "\n".join(f"    {t}" for t in str(trace).splitlines())
    return out


def cmd_daemon_log(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise Failure(EXIT_USAGE, f"-n takes a number of lines, 0 or more, not {args.lines}")
    path = find_log(args)
    colour = use_colour()

    def emit(line: bytes) -> None:
        if args.json:
            sys.stdout.write(line.decode("utf-8", "replace") + "\n")
        else:
            sys.stdout.write(render(line, colour=colour) + "\n")

    lines, offset = tail(path, args.lines)
    for line in lines:
        emit(line)
    sys.stdout.flush()
    if args.follow:
        follow(path, offset, emit)
    return 0
