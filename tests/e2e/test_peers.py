"""Who may talk to rsubd, and clients that misbehave: strangers, silence, cut frames, crowds, huge frames."""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rsub.wire import protocol
from rsub.wire.protocol import ErrorCode
from rsubd.transport import server
from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until

pytestmark = pytest.mark.e2e


def sock_path(daemon: Rsubd) -> str:
    return str(daemon.root / "run" / "rsub" / "rsubd.sock")


def connect(daemon: Rsubd, timeout: float = 10) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path(daemon))
    return s


def read_line(s: socket.socket) -> bytes:
    """One line, or what came before the connection closed (b"" if nothing)."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def ping(s: socket.socket) -> dict[str, Any]:
    s.sendall(protocol.encode(protocol.make_request("ping")))
    reply: dict[str, Any] = json.loads(read_line(s))
    return reply


def log_events(daemon: Rsubd) -> list[dict[str, Any]]:
    events = []
    for line in daemon.log.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events


def assert_serving(daemon: Rsubd) -> None:
    assert daemon.proc is not None and daemon.proc.poll() is None, "rsubd died"
    assert daemon.rsub("ping").returncode == 0
    status = daemon.rsub("status")
    assert status.returncode == 0, status.stderr
    log = daemon.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]


# -- who may talk to rsubd -------------------------------------------------------


def test_socket_and_its_directory_are_private(rsubd: Rsubd) -> None:
    path = Path(sock_path(rsubd))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.stat().st_uid == path.parent.stat().st_uid == os.getuid()


def as_user(uid: int, gid: int, path: str) -> dict[str, Any]:
    """In a forked child running as uid/gid: connect to `path`, send a ping, return what came back."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # The child only makes system calls and leaves with os._exit, never touching another thread's locks.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        result: dict[str, Any] = {"error": "unfinished"}
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            try:
                s.connect(path)
            except OSError as e:
                result = {"uid": os.getuid(), "connect_errno": e.errno}
            else:
                try:
                    s.sendall(protocol.encode(protocol.make_request("ping")))
                except OSError:
                    pass  # refused before the ping got there
                first = read_line(s)
                rest = read_line(s)
                result = {"uid": os.getuid(), "first": first.decode(errors="replace"), "rest": rest.decode()}
        except BaseException as e:  # noqa: BLE001 - whatever it is goes back to the test
            result = {"error": repr(e)}
        finally:
            try:
                os.write(write_end, json.dumps(result).encode())
            finally:
                os._exit(0)  # never back into pytest
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    outcome: dict[str, Any] = json.loads(data)
    return outcome


def nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another uid (nobody)")
@pytest.mark.skipif(nobody() is None, reason="no user 'nobody' to run a client as")
def test_another_uid_is_refused_even_with_the_modes_loosened(rsubd: Rsubd) -> None:
    user = nobody()
    assert user is not None and user.pw_uid != os.getuid()
    path = sock_path(rsubd)

    # With rsubd's own modes the stranger cannot even reach the socket.
    assert as_user(user.pw_uid, user.pw_gid, path).get("connect_errno") in (13, 1)  # EACCES, EPERM

    # Loosened by hand (or by a careless umask): the peer credential check still refuses.
    for directory in (rsubd.root, rsubd.root / "run", rsubd.root / "run" / "rsub"):
        directory.chmod(0o777)
    Path(path).chmod(0o666)
    outcome = as_user(user.pw_uid, user.pw_gid, path)
    assert outcome.get("uid") == user.pw_uid, outcome
    reply = json.loads(outcome["first"])
    assert reply["ok"] is False and reply["error"]["code"] == ErrorCode.BAD_REQUEST
    assert f"uid {user.pw_uid} may not talk to this rsubd" in reply["error"]["message"]
    assert outcome["rest"] == "", "the connection is closed after the refusal; the ping is never answered"
    refused = [e for e in log_events(rsubd) if e.get("event") == "connection.refused"]
    assert [e["peer_uid"] for e in refused] == [user.pw_uid]

    # The owner is still served, on the same loosened socket.
    with connect(rsubd) as s:
        assert ping(s)["ok"] is True
    assert_serving(rsubd)


# -- clients that misbehave ------------------------------------------------------


@pytest.fixture
def impatient(short_tmp: Path) -> Iterator[Rsubd]:
    """An rsubd that drops a client after two seconds without a whole request."""
    daemon = Rsubd(short_tmp)
    daemon.env[server.IDLE_TIMEOUT_ENV] = "2"
    daemon.start()
    yield daemon
    daemon.stop()


def test_silent_client_is_dropped_while_others_are_served(impatient: Rsubd) -> None:
    silent = connect(impatient)
    dribbler = connect(impatient)
    dribbler.sendall(b'{"v": 1, "id": "slow", ')
    started = time.monotonic()
    for _ in range(20):  # the silent ones hold nobody up
        with connect(impatient) as s:
            assert ping(s)["ok"] is True
    assert time.monotonic() - started < 1.5
    for s in (silent, dribbler):
        with s:
            reply = json.loads(read_line(s))
            assert reply["error"]["code"] == ErrorCode.TIMEOUT and "within 2 s" in reply["error"]["message"]
            assert read_line(s) == b"", "dropped after the error"
    assert 1.9 < time.monotonic() - started < 10
    assert_serving(impatient)


def test_client_gone_mid_frame_or_mid_request(rsubd: Rsubd) -> None:
    with connect(rsubd) as s:
        s.sendall(b'{"v": 1, "id": "a", "kind": "status", "ids": ["' + b"1" * 1_000_000)
    with connect(rsubd) as s:
        s.sendall(protocol.encode(protocol.make_request("wait", ids=[], timeout=5)))  # then gone, unread
    with connect(rsubd) as s:
        s.sendall(protocol.encode(protocol.make_request("status")) * 200)
        s.shutdown(socket.SHUT_WR)
        replies = [json.loads(line) for line in s.makefile("rb")]
    assert len(replies) == 200 and all(r["ok"] for r in replies)
    wait_until(lambda: any(e.get("event") == "connection.lost_mid_frame" for e in log_events(rsubd)), 10,
               "rsubd to notice the cut frame")
    assert_serving(rsubd)


def test_hundreds_of_clients_at_once(rsubd: Rsubd) -> None:
    """300 clients connected at the same time: each is answered (or, past the limit, told rsubd is busy)."""
    n = 300
    connected = threading.Barrier(n, timeout=30)
    replies: list[dict[str, Any] | BaseException] = [RuntimeError("not run")] * n

    def client(i: int) -> None:
        try:
            with connect(rsubd, timeout=30) as s:
                connected.wait()  # all n are open before any of them asks
                replies[i] = ping(s)
        except BaseException as e:  # noqa: BLE001 - reported below, with the others
            replies[i] = e

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    failures = [r for r in replies if not isinstance(r, dict)]
    assert not failures, failures[:5]
    answered = [r for r in replies if isinstance(r, dict) and r["ok"]]
    busy = [r for r in replies if isinstance(r, dict) and not r["ok"]]
    assert all("busy" in r["error"]["message"] for r in busy), busy[:3]
    assert len(answered) == min(n, server.default_max_clients())
    assert_serving(rsubd)


def test_clients_past_the_limit_are_told_rsubd_is_busy(rsubd: Rsubd) -> None:
    limit = server.default_max_clients()  # rsubd inherits this process's descriptor limit
    extra = 10
    sockets = [connect(rsubd) for _ in range(limit + extra)]
    try:
        for s in sockets:
            try:
                s.sendall(protocol.encode(protocol.make_request("ping")))
            except OSError:
                pass  # a busy one may be closed already
        replies = [json.loads(read_line(s)) for s in sockets]
    finally:
        for s in sockets:
            s.close()
    busy = [r for r in replies if not r["ok"]]
    assert len(busy) == extra
    assert all("rsubd is busy" in r["error"]["message"] for r in busy)
    assert all(r["ok"] and r["result"]["pong"] for r in replies[:limit])
    assert_serving(rsubd)


def test_frame_over_the_cap_gets_an_error_then_is_dropped(rsubd: Rsubd) -> None:
    for payload in (b"x" * protocol.MAX_FRAME, b'{"v": 1, "id": "a", "kind": "' + b"k" * protocol.MAX_FRAME):
        with connect(rsubd, timeout=30) as s:
            try:
                s.sendall(payload + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the last bytes went out
            reply = json.loads(read_line(s))
            assert reply["ok"] is False and reply["error"]["code"] == ErrorCode.BAD_REQUEST
            assert f"over the {protocol.MAX_FRAME} byte cap" in reply["error"]["message"]
            assert read_line(s) == b""
    # A frame just under the cap is read whole and answered on its merits.
    request = protocol.make_request("submit", description="", cwd="/nonexistent/rsub", request_id="r")
    request["description"] = "#" * (protocol.MAX_FRAME - len(protocol.encode(request)))
    frame = protocol.encode(request)
    assert len(frame) == protocol.MAX_FRAME
    with connect(rsubd, timeout=30) as s:
        s.sendall(frame)
        reply = json.loads(read_line(s))
        assert reply["id"] == request["id"] and reply["error"]["code"] == ErrorCode.BAD_SUBMIT
    assert_serving(rsubd)
