"""The socket server in the test's own event loop: limits, timeouts and strangers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rsub.wire import protocol
from rsub.wire.protocol import Request
from rsub.wire.vocabulary import ErrorCode, RequestError
from rsubd.transport import server
from rsubd.transport.server import SocketServer

Scenario = Callable[[SocketServer], Awaitable[None]]


async def handler(request: Request) -> dict[str, Any]:
    match request.kind:
        case "ping":
            return {"pong": True}
        case "status":
            raise RuntimeError("a bug in a handler")
        case "wait":
            raise RequestError(ErrorCode.NOT_FOUND, "no such job")
        case "poke":
            return {"blob": "x" * protocol.MAX_FRAME}
        case "daemon_status":
            return {"not json": object()}
        case "act":
            return {"blob": "x" * 1_000_000}
        case _:
            return {}


@pytest.fixture
def sock_path() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="rsub-u-", dir="/tmp"))
    yield directory / "s.sock"
    shutil.rmtree(directory, ignore_errors=True)


def run(path: Path, scenario: Scenario, **kwargs: Any) -> None:
    async def main() -> None:
        srv = SocketServer(path, handler, **kwargs)
        await srv.start()
        try:
            await scenario(srv)
        finally:
            await srv.close()

    asyncio.run(asyncio.wait_for(main(), 30))


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: Path) -> Client:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=2 * protocol.MAX_FRAME)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, timeout: float = 10) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        assert line.endswith(b"\n"), line[:200]
        message: dict[str, Any] = json.loads(line)
        return message

    async def call(self, kind: str, **fields: Any) -> dict[str, Any]:
        await self.send(protocol.encode(protocol.make_request(kind, **fields)))
        return await self.reply()

    async def closed(self, timeout: float = 10) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), timeout) == b""
        except ConnectionError:
            return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


def test_socket_is_private_and_answers(sock_path: Path) -> None:
    async def scenario(srv: SocketServer) -> None:
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
        c = await Client.open(sock_path)
        reply = await c.call("ping")
        assert reply["ok"] is True and reply["result"] == {"pong": True}
        assert (await c.call("wait", ids=["1"]))["error"]["code"] == ErrorCode.NOT_FOUND
        internal = await c.call("status")
        assert internal["error"]["code"] == ErrorCode.INTERNAL and internal["id"] in internal["error"]["message"]
        assert (await c.call("ping"))["ok"] is True  # the same connection carries on
        await c.close()

    run(sock_path, scenario)
    assert not sock_path.exists()


def test_pipelined_requests_are_answered_in_order(sock_path: Path) -> None:
    async def scenario(srv: SocketServer) -> None:
        c = await Client.open(sock_path)
        requests = [protocol.make_request("ping") for _ in range(50)]
        await c.send(b"".join(protocol.encode(r) for r in requests) + b"junk\n")
        for r in requests:
            assert (await c.reply())["id"] == r["id"]
        assert "malformed JSON" in (await c.reply())["error"]["message"]
        await c.close()

    run(sock_path, scenario)


def test_silent_client_is_dropped_and_others_are_served_meanwhile(sock_path: Path) -> None:
    async def scenario(srv: SocketServer) -> None:
        silent = await Client.open(sock_path)
        dribbler = await Client.open(sock_path)
        await dribbler.send(b'{"v": 1, "id"')  # half a frame, then nothing
        loop = asyncio.get_running_loop()
        started = loop.time()
        other = await Client.open(sock_path)
        assert (await other.call("ping"))["ok"] is True
        assert loop.time() - started < 0.4
        for c in (silent, dribbler):
            reply = await c.reply(timeout=5)
            assert reply["error"]["code"] == ErrorCode.TIMEOUT
            assert "within 0.5 s" in reply["error"]["message"]
            assert await c.closed()
            await c.close()
        assert loop.time() - started >= 0.45
        await other.close()
        again = await Client.open(sock_path)
        assert (await again.call("ping"))["ok"] is True
        await again.close()

    run(sock_path, scenario, idle_timeout=0.5)


def test_frame_over_the_cap_gets_an_error_then_is_dropped(sock_path: Path) -> None:
    async def scenario(srv: SocketServer) -> None:
        for payload in (b"x" * 1024 + b"\n", b"y" * 5000, b"z" * 3000 + b"\n" + b"{}\n"):
            c = await Client.open(sock_path)
            await c.send(payload)
            reply = await c.reply()
            assert reply["ok"] is False and reply["error"]["code"] == ErrorCode.BAD_REQUEST
            assert "over the 1024 byte cap" in reply["error"]["message"]
            assert await c.closed()
            await c.close()
        c = await Client.open(sock_path)
        assert (await c.call("ping"))["ok"] is True
        await c.close()

    run(sock_path, scenario, max_frame=1024)


def test_frame_of_exactly_the_cap_is_served(sock_path: Path) -> None:
    async def scenario(srv: SocketServer) -> None:
        request = protocol.make_request("ping")
        request["id"] = "i" * 64
        frame = json.dumps(request).encode()
        frame = frame[:-1] + b" " * (1023 - len(frame)) + b"}\n"  # JSON allows padding
        assert len(frame) == 1024
        c = await Client.open(sock_path)
        await c.send(frame)
        assert (await c.reply())["ok"] is True
        await c.close()

    run(sock_path, scenario, max_frame=1024)


def test_client_gone_mid_frame_or_mid_request(sock_path: Path) -> None:
    async def scenario(srv: SocketServer) -> None:
        for payload in (b'{"v": 1, "id": "a", "ki', protocol.encode(protocol.make_request("ping"))):
            c = await Client.open(sock_path)
            await c.send(payload)
            await c.close()  # before reading any reply
        c = await Client.open(sock_path)
        assert (await c.call("ping"))["ok"] is True
        await c.close()
        await wait_for_clients(srv, 0)

    run(sock_path, scenario)


async def wait_for_clients(srv: SocketServer, n: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while srv.clients != n:
        assert loop.time() < deadline, f"{srv.clients} clients, expected {n}"
        await asyncio.sleep(0.01)


def test_clients_past_the_limit_get_busy_and_the_rest_are_served(sock_path: Path) -> None:
    async def scenario(srv: SocketServer) -> None:
        held = [await Client.open(sock_path) for _ in range(3)]
        for c in held:
            assert (await c.call("ping"))["ok"] is True
        extra = await Client.open(sock_path)
        reply = await extra.reply()
        assert reply["ok"] is False and "busy" in reply["error"]["message"]
        assert await extra.closed()
        await extra.close()
        await held.pop().close()
        await wait_for_clients(srv, 2)
        last = await Client.open(sock_path)
        assert (await last.call("ping"))["ok"] is True
        for c in [*held, last]:
            await c.close()

    run(sock_path, scenario, max_clients=3)


def test_other_uid_is_refused(sock_path: Path) -> None:
    async def scenario(srv: SocketServer) -> None:
        srv._uid = os.getuid() + 1  # as if the socket's owner were someone else
        c = await Client.open(sock_path)
        reply = await c.reply()
        assert reply["ok"] is False and f"uid {os.getuid()} may not talk" in reply["error"]["message"]
        assert await c.closed()
        await c.close()
        assert srv.clients == 0

    run(sock_path, scenario)


def test_unknown_peer_is_refused(sock_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "peer_uid", lambda sock: None)

    async def scenario(srv: SocketServer) -> None:
        c = await Client.open(sock_path)
        assert "uid None may not talk" in (await c.reply())["error"]["message"]
        await c.close()

    run(sock_path, scenario)


def test_peer_uid_is_ours() -> None:
    import socket

    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert server.peer_uid(a) == os.getuid()


def test_replies_too_large_or_not_json_become_errors(sock_path: Path) -> None:
    async def scenario(srv: SocketServer) -> None:
        c = await Client.open(sock_path)
        big = await c.call("poke")
        assert big["error"]["code"] == ErrorCode.BAD_REQUEST and "too large" in big["error"]["message"]
        assert (await c.call("daemon_status"))["error"]["code"] == ErrorCode.INTERNAL
        assert (await c.call("ping"))["ok"] is True
        await c.close()

    run(sock_path, scenario)


def test_client_that_does_not_read_is_dropped(sock_path: Path) -> None:
    async def scenario(srv: SocketServer) -> None:
        c = await Client.open(sock_path)
        c.writer.transport.pause_reading()  # type: ignore[attr-defined]  # let the kernel buffers fill
        request = protocol.encode(protocol.make_request("act", action="hold", ids=[]))
        c.writer.write(request * 20)  # 20 MB of replies that nobody reads
        await wait_for_clients(srv, 1)
        other = await Client.open(sock_path)
        assert (await other.call("ping"))["ok"] is True
        await other.close()
        await wait_for_clients(srv, 0)  # dropped once a reply waited send_timeout
        await c.close()

    run(sock_path, scenario, send_timeout=0.3)


def test_close_drops_connected_clients(sock_path: Path) -> None:
    clients: list[Client] = []

    async def scenario(srv: SocketServer) -> None:
        clients.append(await Client.open(sock_path))
        assert (await clients[0].call("ping"))["ok"] is True
        await srv.close()
        assert await clients[0].closed()
        assert not sock_path.exists()
        await clients[0].close()

    run(sock_path, scenario)


@pytest.mark.parametrize(("value", "expected"), [(None, server.IDLE_TIMEOUT), ("2.5", 2.5), ("0", server.IDLE_TIMEOUT),
                                                 ("nan", server.IDLE_TIMEOUT), ("soon", server.IDLE_TIMEOUT)])
def test_idle_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                           expected: float) -> None:
    if value is None:
        monkeypatch.delenv(server.IDLE_TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(server.IDLE_TIMEOUT_ENV, value)
    assert server.default_idle_timeout() == expected


def test_max_clients_stays_under_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("resource.getrlimit", lambda _which: (256, 4096))
    assert server.default_max_clients() == 128
    monkeypatch.setattr("resource.getrlimit", lambda _which: (65536, 65536))
    assert server.default_max_clients() == server.MAX_CLIENTS


def test_error_messages_quoting_a_huge_request_are_cut(sock_path: Path) -> None:
    async def scenario(srv: SocketServer) -> None:
        c = await Client.open(sock_path)
        # Each é is 2 bytes in, 6 out ("\\u00e9"): quoted whole, the reply would pass the cap.
        await c.send(b'{"v": 1, "id": "a", "kind": "' + "é".encode() * (protocol.MAX_FRAME // 2 - 100) + b'"}\n')
        reply = await c.reply()
        message = reply["error"]["message"]
        assert message.startswith("unknown request kind 'ééé") and "more characters)" in message
        assert len(message) < server.MAX_MESSAGE + 100
        assert (await c.call("ping"))["ok"] is True
        await c.close()

    run(sock_path, scenario)


def test_a_decoder_bug_is_answered_as_internal(sock_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(line: bytes) -> Request:
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(protocol, "decode_request", broken)

    async def scenario(srv: SocketServer) -> None:
        c = await Client.open(sock_path)
        for _ in range(2):  # and the connection carries on
            reply = await c.call("ping")
            assert reply["id"] is None and reply["error"]["code"] == ErrorCode.INTERNAL
        await c.close()

    run(sock_path, scenario)


def test_every_request_kind_has_a_handler() -> None:
    # The dispatch's `match` is checked exhaustive over RequestKind; this keeps RequestKind the protocol's kinds.
    from typing import get_args

    from rsubd.handlers import RequestKind

    assert sorted(get_args(RequestKind)) == sorted(protocol.REQUESTS)
