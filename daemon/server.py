"""The Unix socket server: frames in, one handler call per request, frames out.

One catch-all lives here: a known error becomes an error reply with its code;
anything else is logged with the request id and answered as `internal`. A bad
request never takes the daemon down.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from rsub import protocol
from rsub.protocol import ErrorCode, ProtocolError, Request

log = structlog.get_logger("rsubd.server")
Handler = Callable[[Request], Awaitable[dict[str, Any]]]
IDLE_TIMEOUT = 300.0


class RequestError(Exception):
    """A request that cannot be done; `code` is one of protocol.ErrorCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end (SO_PEERCRED)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class SocketServer:
    """Serves `handler` on a Unix socket made mode 0600 in a 0700 directory."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._bound = False
        self._uid = os.getuid()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=protocol.MAX_FRAME + 2)
        finally:
            os.umask(old)
        self.path.chmod(0o600)
        self._bound = True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._bound:  # never remove a socket another rsubd is serving
            self.path.unlink(missing_ok=True)
            self._bound = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock) if sock is not None else None
        try:
            if uid is not None and uid != self._uid:
                log.warning("connection.refused", peer_uid=uid)
                await self._send(writer, protocol.error(None, ErrorCode.BAD_REQUEST,
                                                        f"uid {uid} may not talk to this rsubd"))
                return
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except (asyncio.LimitOverrunError, ValueError):
                    await self._send(writer, protocol.error(None, ErrorCode.BAD_REQUEST,
                                                            f"frame over the {protocol.MAX_FRAME} byte cap"))
                    return
                if not line:
                    return
                if not line.endswith(b"\n"):
                    return  # the client went away mid-frame
                await self._send(writer, await self._answer(line))
        except (asyncio.TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # the daemon is shutting down; the client sees the connection close
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = protocol.decode_request(line)
        except ProtocolError as e:
            return protocol.error(None, e.code, e.message)
        try:
            return protocol.ok(request.id, await self._handler(request))
        except RequestError as e:
            return protocol.error(request.id, e.code, e.message)
        except Exception:
            log.exception("request.failed", request_id=request.id, kind=request.kind)
            return protocol.error(request.id, ErrorCode.INTERNAL,
                                  f"internal error in rsubd (request {request.id}); see the daemon's log")

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(protocol.encode(message))
        await writer.drain()
