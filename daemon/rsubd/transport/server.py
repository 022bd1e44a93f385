"""The Unix socket server: frames in, one handler call per request, frames out.

One catch-all lives here: a known error becomes an error reply with its code;
anything else is logged with the request id and answered as `internal`. A bad
request never takes the daemon down, and neither does a bad client: a stranger
(another uid), a client that says nothing, one that sends a frame over the cap
or one past the connection limit gets one error frame and is dropped; one that
goes away mid-frame is just dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from rsub.wire import protocol
from rsub.wire.protocol import ProtocolError, Request
from rsub.wire.vocabulary import ErrorCode, RequestError
from rsubd.platform import logs

log = structlog.get_logger("rsubd.transport.server")
# A handler answers with one result, or with a stream of them (`watch`): each sent as a frame with
# "more": true, the stream ending with a result of type "end" (sent without "more").
Handler = Callable[[Request], Awaitable[dict[str, Any] | AsyncIterator[dict[str, Any]]]]

IDLE_TIMEOUT = 60.0  # seconds a client may take to send one whole request
IDLE_TIMEOUT_ENV = "RSUBD_IDLE_TIMEOUT"  # overrides IDLE_TIMEOUT; lets e2e tests watch an idle drop
SEND_TIMEOUT = 30.0  # seconds a reply may wait on a client that does not read
CLOSE_TIMEOUT = 2.0
MAX_CLIENTS = 512
READ_CHUNK = 64 * 1024
# Characters of an error message sent back; some quote the request, which may be megabytes.
MAX_MESSAGE = 2000
# The kernel queue of connections not yet accepted; a burst of clients waits there, not refused.
BACKLOG = 1024
_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid


class _FrameTooLarge(Exception):
    pass


def error_reply(request_id: str | None, code: str, message: str) -> dict[str, Any]:
    """protocol.error, with the message cut to MAX_MESSAGE characters."""
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} more characters)"
    return protocol.error(request_id, code, message)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end (SO_PEERCRED), or None if the kernel will not say."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    _pid, uid, _gid = _UCRED.unpack(creds)
    return int(uid)


def default_idle_timeout() -> float:
    value = os.environ.get(IDLE_TIMEOUT_ENV)
    if value:
        try:
            seconds = float(value)
        except ValueError:
            seconds = 0.0
        if 0 < seconds < float("inf"):
            return seconds
        log.warning("idle_timeout.ignored", variable=IDLE_TIMEOUT_ENV, value=value)
    return IDLE_TIMEOUT


def default_max_clients() -> int:
    # Past the descriptor limit accept() fails and asyncio stops accepting for a while, owner
    # included; refusing with a clear error well before that keeps the daemon answering.
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CLIENTS
    return max(8, min(MAX_CLIENTS, soft // 2))


class SocketServer:
    """Serves `handler` on a Unix socket made mode 0600 in a 0700 directory, to this uid only."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        idle_timeout: float | None = None,
        send_timeout: float = SEND_TIMEOUT,
        max_clients: int | None = None,
        max_frame: int = protocol.MAX_FRAME,
    ) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._bound = False
        self._uid = os.getuid()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.idle_timeout = default_idle_timeout() if idle_timeout is None else idle_timeout
        self.send_timeout = send_timeout
        self.max_clients = default_max_clients() if max_clients is None else max_clients
        self.max_frame = max_frame
        self.clients = 0  # connections being served now (strangers and refused ones not counted)

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on our own socket at `path`, or on `sock`, one systemd passed (socket activation)."""
        if sock is not None:
            # systemd made it, owns its path and its mode (rsubd.socket sets SocketMode=0600).
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=READ_CHUNK)
            return
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        old = os.umask(0o177)
        try:
            # A small reader limit: frames are assembled here, up to max_frame, not in the StreamReader.
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=READ_CHUNK,
                                                           backlog=BACKLOG)
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
        if self._server is not None:
            await self._server.wait_closed()
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
            if uid != self._uid:  # unknown (None) is refused too: fail closed
                log.warning("connection.refused", peer_uid=uid)
                await self._send(writer, error_reply(
                    None, ErrorCode.BAD_REQUEST,
                    f"uid {uid} may not talk to this rsubd; it serves uid {self._uid} only"))
                return
            if self.clients >= self.max_clients:
                log.warning("connection.busy", clients=self.clients, max_clients=self.max_clients)
                await self._send(writer, error_reply(
                    None, ErrorCode.INTERNAL,
                    f"rsubd is busy: {self.clients} clients connected, the limit is {self.max_clients}; try again"))
                return
            self.clients += 1
            try:
                await self._converse(reader, writer)
            finally:
                self.clients -= 1
        except (TimeoutError, ConnectionError):
            pass  # a client that stopped reading, or went away: nothing more to tell it
        except asyncio.CancelledError:
            pass  # the daemon is shutting down; the client sees the connection close
        except Exception:
            log.exception("connection.crashed")
        finally:
            await self._close(writer)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        while True:
            try:
                line = await self._read_frame(reader, buffer)
            except _FrameTooLarge:
                log.warning("frame.too_large", max_frame=self.max_frame)
                await self._send(writer, error_reply(
                    None, ErrorCode.BAD_REQUEST,
                    f"frame over the {self.max_frame} byte cap; closing the connection"))
                return
            except TimeoutError:
                log.info("connection.idle", idle_timeout=self.idle_timeout, pending_bytes=len(buffer))
                await self._send(writer, error_reply(
                    None, ErrorCode.TIMEOUT,
                    f"no complete request within {self.idle_timeout:g} s; closing the connection"))
                return
            if line is None:
                return
            answer = await self._answer(line)
            if isinstance(answer, bytes):
                await self._send_frame(writer, answer)
            elif not await self._stream(reader, writer, buffer, *answer):
                return

    async def _read_frame(self, reader: asyncio.StreamReader, buffer: bytearray) -> bytes | None:
        """The next newline-terminated frame, or None at end of input (also mid-frame).

        The whole frame must arrive within the idle timeout, so a client that dribbles
        bytes is dropped like one that says nothing. At most max_frame + READ_CHUNK
        bytes are held for one connection.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.idle_timeout
        scanned = 0
        while True:
            end = buffer.find(b"\n", scanned)
            if end >= 0:
                if end + 1 > self.max_frame:
                    raise _FrameTooLarge
                frame = bytes(buffer[:end + 1])
                del buffer[:end + 1]
                return frame
            if len(buffer) >= self.max_frame:  # its newline would take it over the cap
                raise _FrameTooLarge
            scanned = len(buffer)
            chunk = await asyncio.wait_for(reader.read(READ_CHUNK), max(0.0, deadline - loop.time()))
            if not chunk:
                if buffer:
                    log.info("connection.lost_mid_frame", pending_bytes=len(buffer))
                return None
            buffer += chunk

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, buffer: bytearray,
                      request: Request, frames: AsyncIterator[dict[str, Any]]) -> bool:
        """Send a stream's results as they come; the next is made only once the socket took the last.

        The client may end a stream by sending its next request (the stream's last frame then says
        "superseded", and the request is answered after it; one sent with the stream's request ends
        it after its first frame) or by going away. Returns whether to read on.
        """
        incoming: asyncio.Task[bytes] = asyncio.ensure_future(reader.read(READ_CHUNK))
        step: asyncio.Future[dict[str, Any]] | None = None
        consumed = False
        it = frames.__aiter__()
        sent = 0
        try:
            while True:
                if sent and b"\n" in buffer:
                    # The next request came with this one (pipelined): the stream's first frame, then it.
                    await self._send(writer, protocol.ok(request.id, {"type": "end", "done": False,
                                                                      "reason": "superseded"}))
                    return True
                step = asyncio.ensure_future(it.__anext__())
                await asyncio.wait({step, incoming}, return_when=asyncio.FIRST_COMPLETED)
                if incoming.done():
                    data = incoming.result()
                    consumed = True
                    if not data:
                        return False  # the client went away
                    buffer += data
                    await self._send(writer, protocol.ok(request.id, {"type": "end", "done": False,
                                                                      "reason": "superseded"}))
                    return True
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return True
                step = None
                end = item.get("type") == "end"
                message = protocol.ok(request.id, item)
                if not end:
                    message["more"] = True
                await self._send_frame(writer, protocol.encode(message))
                sent += 1
                if end:
                    return True
        except (TimeoutError, ConnectionError, asyncio.CancelledError):
            raise  # the reader stopped reading, or rsubd is stopping: _serve closes
        except RequestError as e:
            await self._send(writer, error_reply(request.id, e.code, e.message))
            return True
        except Exception:
            log.exception("stream.failed", request_id=request.id, kind=request.kind)
            await self._send(writer, self._internal(request))
            return True
        finally:
            for task in (step, incoming):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            if not consumed and incoming.done() and not incoming.cancelled() and incoming.exception() is None:
                buffer += incoming.result()  # a request that came as the stream ended: answered next
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _answer(self, line: bytes) -> bytes | tuple[Request, AsyncIterator[dict[str, Any]]]:
        try:
            request = protocol.decode_request(line)
        except ProtocolError as e:
            return protocol.encode(error_reply(None, e.code, e.message))
        except Exception:  # the decoder's fault, not the client's
            log.exception("request.undecodable", frame_bytes=len(line))
            return protocol.encode(error_reply(None, ErrorCode.INTERNAL,
                                               f"internal error in rsubd decoding this request; see its log "
                                               f"({logs.where()})"))
        try:
            result = await self._handler(request)
            if not isinstance(result, dict):
                return request, result
            reply = protocol.ok(request.id, result)
        except RequestError as e:
            reply = error_reply(request.id, e.code, e.message)
        except Exception:
            log.exception("request.failed", request_id=request.id, kind=request.kind)
            reply = self._internal(request)
        try:
            return protocol.encode(reply)
        except ProtocolError as e:  # e.g. a status of very many jobs
            log.warning("reply.too_large", request_id=request.id, kind=request.kind)
            return protocol.encode(error_reply(
                request.id, e.code, f"the reply to {request.kind} is too large ({e.message}); ask for less"))
        except (TypeError, ValueError):
            log.exception("reply.unencodable", request_id=request.id, kind=request.kind)
            return protocol.encode(self._internal(request))

    @staticmethod
    def _internal(request: Request) -> dict[str, Any]:
        return error_reply(request.id, ErrorCode.INTERNAL,
                           f"internal error in rsubd (request {request.id}); see its log ({logs.where()})")

    async def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        await self._send_frame(writer, protocol.encode(message))

    async def _send_frame(self, writer: asyncio.StreamWriter, frame: bytes) -> None:
        writer.write(frame)
        await asyncio.wait_for(writer.drain(), self.send_timeout)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
        except (TimeoutError, OSError):
            writer.transport.abort()  # unsent data to a client that does not read: drop it
