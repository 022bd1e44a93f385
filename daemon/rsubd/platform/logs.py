"""Structured logging: where rsubd's log goes, and how each line looks.

- `--log-file PATH` (or `log_file` in the config): that file; `-` is stderr.
- Otherwise, stderr when it is the systemd journal (`$JOURNAL_STREAM` names its
  device and inode, as systemd.exec(5) documents) or a terminal;
- else `<state dir>/rsubd.log`, so that `rsubd &` under nohup, cron or a script
  keeps a log somewhere known.

A file and the journal get JSON lines; a terminal gets structlog's console
renderer (no colour when NO_COLOR is set or TERM is dumb). A file is created
mode 0600 and rotated by size, keeping a few old ones (rsubd.log.1, ...).

Secrets never reach a log line: a processor redacts values of keys that name
tokens or credentials, and bearer tokens or JWTs found inside any string.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, TextIO

import structlog

from rsub.wire import paths

SECRET_KEYS = re.compile(r"token|secret|password|credential|authorization|bearer", re.I)
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
# Token values rsubd has read (opaque tokens included), redacted wherever they appear.
_SECRETS: set[str] = set()
MIN_SECRET = 16  # shorter strings are not tokens, and redacting them would garble ordinary words


def add_secret(value: str) -> None:
    """Remember a secret so that no log line or reply ever shows it."""
    value = value.strip()
    if len(value) >= MIN_SECRET:
        _SECRETS.add(value)


def scrub(text: str) -> str:
    """`text` with every known secret and anything shaped like a JWT replaced."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return JWT.sub("[redacted]", text) if "eyJ" in text else text


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key != "event" and SECRET_KEYS.search(key) and not key.endswith(("_state", "_file", "_kind")):
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = scrub(value)
    return event


MAX_BYTES = 10 * 1024 * 1024  # a log file is rotated past this size ...
BACKUPS = 5  # ... keeping this many old ones


@dataclass(frozen=True)
class Destination:
    """Where the log goes: a file (`path`), the journal (of `unit`) or stderr."""

    to: str  # "file", "journal" or "stderr"
    path: Path | None = None
    unit: str = "rsubd.service"
    user: bool = True  # the unit is the user manager's (journalctl --user)

    @property
    def journal_command(self) -> str:
        return f"journalctl {'--user ' if self.user else ''}-u {self.unit}"

    def describe(self) -> str:
        """Where to look, in words a message can end with."""
        if self.to == "file":
            return str(self.path)
        if self.to == "journal":
            return f"the systemd journal: {self.journal_command}"
        return "rsubd's standard error"

    def as_dict(self, level: str) -> dict[str, Any]:
        return {"to": self.to, "path": None if self.path is None else str(self.path), "level": level,
                "journal_command": self.journal_command if self.to == "journal" else None}


_current = Destination("stderr")
_level = "info"
_handler: logging.Handler | None = None  # the open log file's, closed when the log is set up again


def current() -> Destination:
    """Where rsubd's log goes now (the last `configure`)."""
    return _current


def status() -> dict[str, Any]:
    """The log's place and level, for `rsub daemon status` (and so `rsub daemon log`)."""
    return _current.as_dict(_level)


def where() -> str:
    return _current.describe()


def on_journal(stream: Any, env: Mapping[str, str]) -> bool:
    """Whether `stream` is the journal: $JOURNAL_STREAM is "<device>:<inode>" of the stream systemd connected."""
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both an OSError and a ValueError
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _unit(cgroup: Path = Path("/proc/self/cgroup")) -> tuple[str, bool]:
    """The systemd unit rsubd runs in, and whether it is a user unit, from its cgroup path."""
    try:
        text = cgroup.read_text()
    except OSError:
        return "rsubd.service", True
    for line in text.splitlines():
        parts = [p for p in line.split(":", 2)[-1].split("/") if p]
        units = [p for p in parts if p.endswith(".service")]
        if units and not units[-1].startswith("user@"):
            return units[-1], any(p.startswith("user@") for p in parts)
    return "rsubd.service", True


def choose(explicit: str | None, state_dir: Path, stream: Any = None,
           env: Mapping[str, str] | None = None) -> Destination:
    """Where the log goes: see the module's docstring."""
    stream = stream or sys.stderr
    env = os.environ if env is None else env
    if explicit and explicit != "-":
        return Destination("file", Path(explicit).expanduser().absolute())
    if on_journal(stream, env):
        unit, user = _unit()
        return Destination("journal", unit=unit, user=user)
    if explicit == "-" or _isatty(stream):
        return Destination("stderr")
    return Destination("file", paths.log_file(state_dir))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (OSError, ValueError):
        return False


class PrivateRotatingFileHandler(RotatingFileHandler):
    """A RotatingFileHandler whose files are created mode 0600 (and one found looser is made so)."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


class FileLogger:
    """structlog's PrintLogger, written through a rotating handler (which also makes writes thread-safe)."""

    def __init__(self, handler: logging.Handler) -> None:
        self._handler = handler

    def msg(self, message: str) -> None:
        self._handler.handle(logging.makeLogRecord({"msg": message, "levelno": logging.INFO}))

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def open_file(path: Path, *, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> PrivateRotatingFileHandler:
    """The log file's handler; its directory is made (0700) if missing. Raises OSError if it cannot be opened."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return PrivateRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")


def configure(level: str = "info", stream: TextIO | None = None, *, destination: Destination | None = None,
              max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
    """Set up structlog for `destination` (default: `stream`, else stderr); raises OSError for a file it cannot open."""
    global _current, _level, _handler
    stream = stream or sys.stderr
    destination = destination or Destination("stderr")
    renderer: Any
    factory: Any
    handler = None
    if destination.to == "file":
        assert destination.path is not None
        handler = open_file(destination.path, max_bytes=max_bytes, backups=backups)
        file_logger = FileLogger(handler)
        factory = lambda *_args: file_logger  # noqa: E731 - one shared logger, as PrintLoggerFactory's
    else:
        factory = structlog.PrintLoggerFactory(stream)
    if destination.to == "stderr" and _isatty(stream):
        colours = not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        renderer = structlog.dev.ConsoleRenderer(colors=colours)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,  # after format_exc_info, so that tracebacks are scrubbed too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    if _handler is not None:
        _handler.close()
    _current, _level, _handler = destination, level, handler


def setup(level: str, explicit: str | None, state_dir: Path, *, max_bytes: int = MAX_BYTES,
          backups: int = BACKUPS) -> Destination:
    """rsubd's log at start: choose where it goes and set it up there. Raises OSError (or PermissionError)."""
    destination = choose(explicit, state_dir)
    if destination.path is not None and destination.path.parent == state_dir:
        paths.ensure_private_dir(state_dir)  # the default place: the state directory, 0700, as rsubd keeps it
    configure(level, destination=destination, max_bytes=max_bytes, backups=backups)
    if destination.to == "file" and _isatty(sys.stderr):
        print(f"rsubd: logging to {destination.path}", file=sys.stderr)  # rather than seeming to say nothing
    return destination
