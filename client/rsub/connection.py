"""Talking to rsubd: one request, its errors as exit codes, and submit's retry while rsubd restarts."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rsub.wire import paths
from rsub.wire.protocol import Connection, DaemonUnavailable
from rsub.wire.vocabulary import EXIT_BY_CODE, EXIT_ERROR, EXIT_NO_DAEMON, EXIT_TIMEOUT, EXIT_USAGE, ErrorCode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from collections.abc import Iterator
    from typing import Any


class Failure(Exception):
    """What ends a command: the message rsub prints and the exit code it ends with."""

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
            raise Failure(EXIT_USAGE, f"cannot read config {cfg}: {e}") from None
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
        raise Failure(EXIT_NO_DAEMON, f"{e}; start it with 'rsubd' or 'systemctl --user start rsubd'",
                      sent=connected) from None
    except TimeoutError:
        raise Failure(EXIT_TIMEOUT, f"rsubd did not answer within {io_timeout:g} s") from None
    except OSError as e:
        raise Failure(EXIT_NO_DAEMON, f"cannot talk to rsubd: {e}", sent=connected) from None
    if not reply.get("ok"):
        err = reply.get("error") or {}
        code = err.get("code", ErrorCode.INTERNAL)
        raise Failure(EXIT_BY_CODE.get(code, EXIT_ERROR), err.get("message", "unknown error"))
    result: dict[str, Any] = reply["result"]
    return result


def stream(args: argparse.Namespace, kind: str, io_timeout: float = 60.0, **fields: Any) -> Iterator[dict[str, Any]]:
    """A streaming request's results, frame by frame; errors end it as Failures, like `call`'s.

    rsubd sends a heartbeat at least every 15 s, so `io_timeout` of silence means it is gone.
    """
    connected = False
    try:
        with Connection(socket_for(args), timeout=io_timeout) as conn:
            connected = True
            for reply in conn.stream(kind, **fields):
                if not reply.get("ok"):
                    err = reply.get("error") or {}
                    code = err.get("code", ErrorCode.INTERNAL)
                    raise Failure(EXIT_BY_CODE.get(code, EXIT_ERROR), err.get("message", "unknown error"), sent=True)
                yield reply["result"]
    except DaemonUnavailable as e:
        raise Failure(EXIT_NO_DAEMON, f"{e}; start it with 'rsubd' or 'systemctl --user start rsubd'",
                      sent=connected) from None
    except TimeoutError:
        raise Failure(EXIT_NO_DAEMON, f"rsubd sent nothing for {io_timeout:g} s", sent=connected) from None
    except OSError as e:
        raise Failure(EXIT_NO_DAEMON, f"cannot talk to rsubd: {e}", sent=connected) from None


SUBMIT_RETRY_FOR = 120.0  # seconds a submit waits for an rsubd that went away mid-request to come back

IN_PROGRESS = "rsubd is finishing this submit"


def submit_call(args: argparse.Namespace, kind: str = "submit", **fields: Any) -> dict[str, Any]:
    """Send a submit; if rsubd goes away mid-request, send the same request again once it is back.

    The request id stays the same, so rsubd gives the retry the cluster it made
    (or finishes or undoes its half-made submit first): never a second cluster.
    """
    request_id = os.urandom(16).hex()
    deadline: float | None = None
    while True:
        try:
            return call(args, kind, io_timeout=600.0, request_id=request_id, **fields)
        except Failure as e:
            lost = e.exit_code == EXIT_NO_DAEMON and (e.sent or deadline is not None)
            # A submit slower than the socket's limit goes on in rsubd: asking again with the same
            # request joins it, where a new `rsub submit` would make a second cluster.
            slow = e.exit_code == EXIT_TIMEOUT
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
