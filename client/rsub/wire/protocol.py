"""The rsubd socket protocol: one JSON object per line, both ways.

A request is `{"v": 1, "id": "...", "kind": "<kind>", ...fields}`; a response is
`{"v": 1, "id": "...", "ok": true, "result": {...}}` or
`{"v": 1, "id": "...", "ok": false, "error": {"code": "...", "message": "..."}}`.
Every frame is at most `MAX_FRAME` bytes. The daemon imports this module; the
client imports nothing else of the daemon's.
"""

from __future__ import annotations

import _socket  # not `socket`: its enums cost every `rsub` start 4 ms, and a Unix socket needs none of it
import os

from rsub.wire import fastjson  # not `json`: its regular expressions cost every `rsub` start 2 ms
from rsub.wire.vocabulary import ErrorCode

TYPE_CHECKING = False
if TYPE_CHECKING:  # the client's start-up time is a feature: typing's names only for the checker
    from collections.abc import Iterator
    from typing import Any

VERSION = 1
MAX_FRAME = 8 * 1024 * 1024

# The filters of the reading requests (status, history): states, schedd, clusters, and the age of
# the submit in seconds (`since`: submitted at most this long ago; `older_than`: at least).
FILTERS: dict[str, tuple[type, ...]] = {
    "states": (list,), "schedd": (str, type(None)), "clusters": (list,),
    "since": (int, float, type(None)), "older_than": (int, float, type(None)),
    # jobsub_q's -G and --user: the job's group (the [jobsub] group_attribute), and its owner.
    "group": (str, type(None)), "user": (str, type(None)),
}

# A job's fields in a `brief` status or history reply: what `rsub q` and `rsub history` show in jobsub's columns.
# (plus "replaces" and "replaced_by" on a job rsub resubmit ran again, or one it ran for another)
BRIEF_FIELDS = ("id", "cluster", "proc", "schedd", "state", "submitted_at", "exit_code", "exit_signal", "jobsub")

# `rows`: the same jobs as lists under one header, `{"columns": TABLE_COLUMNS, "rows": [[...], ...]}` in place of
# "jobs" (a third of the bytes of brief dicts, and no dict to build on either side). "owner" to "size" are the
# "jobsub" object's; "more" is null or an object of what few rows have: "replaces", "replaced_by", "dag".
# A reader finds each column by its name in "columns", so a later rsubd may add columns. An rsubd from before
# `rows` refuses the field (unknown field): the client then asks again with `brief` (rsub.commands.status).
TABLE_COLUMNS = ("id", "cluster", "schedd", "state", "submitted_at", "exit_code", "exit_signal", "owner", "status",
                 "run_time", "command", "priority", "size", "more")

# Request kinds and the fields each takes (name -> accepted types).
REQUESTS: dict[str, dict[str, tuple[type, ...]]] = {
    "ping": {},
    "submit": {"description": (str,), "cwd": (str,), "submit_file": (str, type(None)),
               "schedd": (str, type(None)), "request_id": (str,), "token": (str, type(None)),
               "group": (str, type(None)), "role": (str, type(None)), "scopes": (list,),
               # A DAG: `dag` is the .dag file's absolute path (description: its text); rsubd spools it all.
               "dag": (str, type(None)), "max_jobs": (int, type(None)), "rescue_of": (int, type(None))},
    # brief: each job with only what the jobsub table shows (BRIEF_FIELDS), less than half the bytes.
    "status": {"ids": (list,), "active": (bool,), "limit": (int,), "offset": (int,), "nodes": (bool,),
               "brief": (bool,), "rows": (bool,), **FILTERS},
    "history": {"ids": (list,), "limit": (int,), "offset": (int,), "nodes": (bool,), "brief": (bool,),
                "rows": (bool,), **FILTERS},
    "fetchlog": {"job": (str,)},  # not "id": that is the request's own
    "wait": {"ids": (list,), "timeout": (int, float)},
    # A stream of frames (rsubd/handlers/watch.py): a snapshot, then each event as it is recorded.
    "watch": {"ids": (list,), "schedd": (str, type(None)), "since": (int, type(None)), "jobs": (bool,),
              "until_final": (bool,), "timeout": (int, float, type(None)), "coalesce_after": (int, type(None))},
    # `rsub submit --dry-run`: every check of a submit, and the description as it would be sent; nothing sent.
    "dry_run": {"description": (str,), "cwd": (str,), "schedd": (str, type(None)), "dag": (str, type(None)),
                "max_jobs": (int, type(None))},
    "retrieve": {"ids": (list,), "dest": (str, type(None))},
    # Issue 16: a cluster's usage summary; jobs run again; why a job is where it is.
    "summary": {"ids": (list,)},
    "why": {"ids": (list,)},
    "resubmit": {"request_id": (str,), "ids": (list,), "select": (list,), "clusters": (list,),
                 "schedd": (str, type(None)), "overrides": (list,)},
    # `ids` may be empty when `constraint` is given: then the jobs are rsub's own that match it on `schedd`.
    "act": {"action": (str,), "ids": (list,), "reason": (str, type(None)), "constraint": (str, type(None)),
            "schedd": (str, type(None))},
    "poke": {"schedd": (str, type(None))},
    "daemon_status": {},
    "daemon_stop": {},
    "token_status": {},
    "token_refresh": {"name": (str, type(None)), "wait": (int, float)},
    "token_request_plan": {"name": (str, type(None)), "schedd": (str, type(None))},
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "submit": ("description", "cwd", "request_id"),
    "wait": ("ids",),
    "dry_run": ("description", "cwd"),
    "retrieve": ("ids",),
    "summary": ("ids",),
    "resubmit": ("request_id",),
    "why": ("ids",),
    "fetchlog": ("job",),
    "act": ("action", "ids"),
}
ACTIONS = ("hold", "release", "remove")


class ProtocolError(Exception):
    """A frame or request that breaks the protocol."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Request:
    """A validated request: its kind, id and fields."""

    __slots__ = ("fields", "id", "kind")

    def __init__(self, kind: str, id: str, fields: dict[str, Any]) -> None:  # noqa: A002 - the protocol's name
        self.kind = kind
        self.id = id
        self.fields = fields

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and (self.kind, self.id, self.fields) == (other.kind, other.id, other.fields)

    def __repr__(self) -> str:
        return f"Request(kind={self.kind!r}, id={self.id!r}, fields={self.fields!r})"


def make_request(kind: str, **fields: Any) -> dict[str, Any]:
    return {"v": VERSION, "id": os.urandom(6).hex(), "kind": kind, **fields}


def encode(message: dict[str, Any]) -> bytes:
    data = fastjson.dumps(message).encode() + b"\n"
    if len(data) > MAX_FRAME:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"frame of {len(data)} bytes is over the {MAX_FRAME} byte cap")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_request(line: bytes) -> Request:
    """Validate one request frame; ProtocolError says what is wrong with it."""
    import json  # here, in rsubd (which has it loaded), not at every start of rsub

    try:
        obj = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # also NaN/Infinity, and nesting too deep to parse
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request must be a JSON object")
    # `true == 1` and `1.0 == 1` in Python; the version is the JSON integer 1 and nothing else.
    if type(obj.get("v")) is not int or obj["v"] != VERSION:
        raise ProtocolError(ErrorCode.VERSION,
                            f"protocol version {obj.get('v')!r} is not {VERSION}; upgrade rsub or rsubd")
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid or len(rid) > 64:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'id' must be a non-empty string of at most 64 characters")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in REQUESTS:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown request kind {kind!r}; known: {', '.join(REQUESTS)}")
    spec = REQUESTS[kind]
    fields = {k: v for k, v in obj.items() if k not in ("v", "id", "kind")}
    for name, value in fields.items():
        if name not in spec:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown field {name!r} for {kind}")
        types = spec[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            allowed = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"field {name!r} of {kind} must be {allowed}")
    for name in REQUIRED.get(kind, ()):
        if name not in fields:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{kind} needs field {name!r}")
    return Request(kind=kind, id=rid, fields=fields)


def ok(request_id: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "id": request_id, "ok": True, "result": result}


def error(request_id: str | None, code: str, message: str) -> dict[str, Any]:
    return {"v": VERSION, "id": request_id, "ok": False, "error": {"code": code, "message": message}}


class DaemonUnavailable(Exception):
    """No rsubd answers on the socket."""


class Connection:
    """A blocking client connection: send a request, read its response."""

    def __init__(self, path: str, timeout: float | None = 30.0) -> None:
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            self._sock.close()
            raise DaemonUnavailable(f"rsubd is not running (no answer on {path}: {e.strerror})") from None
        self._buffer = bytearray()  # what was read past the last frame's newline

    def call(self, kind: str, *, io_timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        # Not `timeout`: that is a field of some requests (wait), and must reach the daemon.
        if io_timeout is not None:
            self._sock.settimeout(io_timeout)
        self._sock.sendall(encode(make_request(kind, **fields)))
        return self._read()

    def stream(self, kind: str, *, io_timeout: float | None = None, **fields: Any) -> Iterator[dict[str, Any]]:
        """Send a streaming request (`watch`); yield each reply frame, the last one without "more"."""
        if io_timeout is not None:
            self._sock.settimeout(io_timeout)
        self._sock.sendall(encode(make_request(kind, **fields)))
        while True:
            reply = self._read()
            yield reply
            if not reply.get("more"):
                return

    def _read(self) -> dict[str, Any]:
        line = self._readline(MAX_FRAME + 1)
        if not line:
            raise DaemonUnavailable("rsubd closed the connection without answering")
        try:
            reply = fastjson.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
            raise DaemonUnavailable("rsubd answered with something that is not a protocol frame") from None
        if not isinstance(reply, dict):
            raise DaemonUnavailable("rsubd answered with something that is not a protocol frame")
        return reply

    def _readline(self, limit: int) -> bytes:
        """Up to `limit` bytes, through the next newline (or what came before the end of the stream)."""
        buffer, start = self._buffer, 0
        while True:
            end = buffer.find(b"\n", start)
            if end >= 0 or len(buffer) >= limit:
                cut = min(limit, len(buffer) if end < 0 else end + 1)
                line = bytes(buffer[:cut])
                del buffer[:cut]
                return line
            start = len(buffer)
            chunk = self._sock.recv(1 << 18)
            if not chunk:
                line = bytes(buffer)
                buffer.clear()
                return line
            buffer += chunk

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
