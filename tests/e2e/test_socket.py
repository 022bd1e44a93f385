"""Bad input on the socket gets a clear error and the daemon carries on."""

from __future__ import annotations

import json
import socket

import pytest

from tests.support.daemon import Rsubd

pytestmark = pytest.mark.e2e


def exchange(rsubd: Rsubd, payload: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(rsubd.root / "run" / "rsub" / "rsubd.sock"))
        s.sendall(payload)
        data = s.makefile("rb").readline()
    reply: dict[str, object] = json.loads(data)
    return reply


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"not json\n", "malformed JSON"),
        (b"[1, 2]\n", "JSON object"),
        (b'{"v": 99, "id": "a", "kind": "ping"}\n', "protocol version"),
        (b'{"v": 1, "id": "a", "kind": "explode"}\n', "unknown request kind"),
        (b'{"v": 1, "id": "a", "kind": "status", "ids": "12"}\n', "'ids'"),
        (b'{"v": 1, "id": "a", "kind": "wait"}\n', "needs field 'ids'"),
        (b'\xff\xfe\n', "malformed JSON"),
    ],
)
def test_bad_requests_get_errors_and_daemon_survives(rsubd: Rsubd, payload: bytes, needle: str) -> None:
    reply = exchange(rsubd, payload)
    assert reply["ok"] is False
    assert needle in str(reply["error"])
    assert rsubd.rsub("ping").returncode == 0


def test_client_that_disconnects_mid_frame(rsubd: Rsubd) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(rsubd.root / "run" / "rsub" / "rsubd.sock"))
        s.sendall(b'{"v": 1, "id": "a", "ki')
    assert rsubd.rsub("ping").returncode == 0
