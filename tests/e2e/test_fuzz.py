"""Protocol fuzz: over 10,000 generated requests and raw byte strings against one real rsubd.

Every line sent gets exactly one valid protocol reply (never `internal`), a client
that goes away is just dropped, and at the end rsubd still answers `ping` and
`rsub status`. Requests that would change anything are kept harmless: no valid
`daemon_stop`, and every `submit` names a cwd that does not exist, so it is
refused before its description is even parsed. The ledger stays empty, so `act`
and `wait` have no job to touch or wait for.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from rsub.wire import protocol
from rsub.wire.protocol import ErrorCode, ProtocolError
from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until

pytestmark = pytest.mark.e2e

CODES = {v for k, v in vars(ErrorCode).items() if k.isupper()}
# Numbers well past what SQLite (64 bits) or HTCondor (31 bits) hold: they must be refused, not crash.
BIG = 10**30
INT_EDGES = [0, -1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, BIG, -(2**63) - 1, -BIG]
NO_DIR = "/nonexistent/rsub-fuzz"
FUZZ = settings(deadline=None, database=None, phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.large_base_example])


class Fuzzer:
    """One rsubd, one reused connection, and a count of what was sent."""

    def __init__(self, daemon: Rsubd) -> None:
        self.daemon = daemon
        self.path = str(daemon.root / "run" / "rsub" / "rsubd.sock")
        self.sock: socket.socket | None = None
        self.file: Any = None
        self.lines = 0
        self.syncs = 0
        self.connect()

    def connect(self) -> None:
        self.close()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(self.path)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.sock is not None:
            self.sock.close()
        self.sock = self.file = None

    def exchange(self, payload: bytes) -> list[dict[str, Any]]:
        """Send `payload` (newline-terminated here if it is not) then a ping; the replies before the ping's."""
        if not payload.endswith(b"\n"):
            payload += b"\n"
        self.syncs += 1
        sync = f"sync-{self.syncs}"
        assert self.sock is not None
        try:
            self.sock.sendall(payload + protocol.encode({"v": 1, "id": sync, "kind": "ping"}))
            replies = []
            while True:
                reply = read_reply(self.file)
                if reply["id"] == sync:
                    assert reply["ok"] is True and reply["result"]["pong"] is True
                    break
                if reply.get("more"):
                    continue  # a stream's frame (watch): the ping that follows ends it, with one last frame
                replies.append(reply)
            assert len(replies) == payload.count(b"\n"), "one reply per line"
        except BaseException:
            self.connect()  # the next example, or the shrinker's, starts in step
            raise
        self.lines += len(replies)
        return replies


def read_reply(file: Any) -> dict[str, Any]:
    line = file.readline(protocol.MAX_FRAME + 1)
    assert line.endswith(b"\n"), f"connection closed or frame cut: {line[:200]!r}"
    reply: dict[str, Any] = json.loads(line)
    check_reply(reply)
    return reply


def check_reply(reply: Any) -> None:
    assert isinstance(reply, dict) and reply.get("v") == protocol.VERSION, reply
    assert reply["id"] is None or isinstance(reply["id"], str), reply
    if reply["ok"] is True:
        # A stream's frames (watch) say "more" until the last.
        assert set(reply) - {"more"} == {"v", "id", "ok", "result"} and isinstance(reply["result"], dict), reply
    else:
        assert reply["ok"] is False and set(reply) == {"v", "id", "ok", "error"}, reply
        err = reply["error"]
        assert set(err) == {"code", "message"} and err["code"] in CODES, reply
        assert isinstance(err["message"], str) and err["message"], reply
        assert err["code"] != ErrorCode.INTERNAL, reply


@pytest.fixture(scope="module")
def fuzzer() -> Iterator[Fuzzer]:
    root = Path(tempfile.mkdtemp(prefix="rsub-fz-", dir="/tmp"))
    daemon = Rsubd(root)
    daemon.start()
    f = Fuzzer(daemon)
    yield f
    f.close()
    daemon.stop()
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def still_serving(f: Fuzzer) -> None:
    assert f.daemon.proc is not None and f.daemon.proc.poll() is None, "rsubd died"
    with protocol.Connection(f.path, timeout=10) as conn:
        assert conn.call("ping")["ok"] is True
        status = conn.call("daemon_status")
        assert status["ok"] is True and status["result"]["pid"] == f.daemon.proc.pid
    result = f.daemon.rsub("status", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["jobs"] == []  # nothing the fuzz sent was submitted
    log = f.daemon.log.read_text(errors="replace")
    for bad in ("Traceback", "request.failed", "connection.crashed", "reply.unencodable"):
        assert bad not in log, f"{bad} in rsubd's log:\n{log[-5000:]}"


# -- generators --------------------------------------------------------------

ints = st.one_of(st.integers(-1000, 1000), st.integers(-BIG, BIG), st.sampled_from(INT_EDGES))
floats = st.floats(allow_nan=True, allow_infinity=True)
texts = st.one_of(st.text(max_size=30), st.sampled_from(
    ["", " ", "local", "@local", "hold", "release", "remove", "queue", NO_DIR, "\x00", "\n", "\ud800", "💥"]))
job_ids = st.one_of(
    st.builds(lambda c: str(c), st.integers(0, BIG) | st.sampled_from(INT_EDGES)),
    st.builds(lambda c, p, s: f"{c}.{p}{s}", st.integers(0, BIG), st.integers(0, BIG),
              st.sampled_from(["", "@local", "@nope", "@", "@@"])),
    st.text(alphabet="0123456789.@-+ xl²٣", max_size=40),
)
json_values = st.recursive(
    st.none() | st.booleans() | ints | floats | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=6,
)
KINDS = st.sampled_from([*protocol.REQUESTS, "", "Ping", "explode"])
TYPED: dict[type, st.SearchStrategy[Any]] = {
    str: texts, type(None): st.none(), bool: st.booleans(), int: ints, float: floats,
    list: st.lists(st.one_of(job_ids, job_ids, json_values), max_size=4),
}


@st.composite
def request_objects(draw: st.DrawFn) -> Any:
    """Mostly well-formed requests of every kind with random values; sometimes anything at all."""
    # One draw decides the shape (each drawn choice costs Hypothesis time); `odds(k)` is true 1 in 2**k.
    bits = draw(st.integers(0, 2**32 - 1))

    def odds(k: int) -> bool:
        nonlocal bits
        hit = bits & ((1 << k) - 1) == 0
        bits >>= k
        return hit

    if odds(4):
        return draw(json_values)
    kind = draw(KINDS)
    obj: dict[str, Any] = {}
    if not odds(4):
        obj["v"] = draw(st.sampled_from([1.0, True, "1", 2, 0, None])) if odds(3) else protocol.VERSION
    if not odds(4):
        obj["id"] = draw(json_values if odds(3) else st.text(min_size=1, max_size=64))
    if not odds(5):
        obj["kind"] = kind
    for name, types in protocol.REQUESTS.get(kind, {}).items():
        if odds(1):
            obj[name] = draw(json_values if odds(2) else st.one_of(*(TYPED.get(t, json_values) for t in types)))
    if odds(3):
        obj.update(draw(st.dictionaries(texts, json_values, min_size=1, max_size=3)))
    return obj


def harmless(line: bytes) -> bytes | None:
    """`line`, or a version of it that cannot stop rsubd or submit anything; None to leave it out."""
    try:
        request = protocol.decode_request(line)
    except ProtocolError:
        return line
    if request.kind == "daemon_stop":
        return None
    if request.kind == "submit":
        obj = json.loads(line)
        obj["cwd"] = NO_DIR
        return json.dumps(obj).encode() + b"\n"
    return line


# Values of every JSON type, to put in place of a field's own.
OTHER_TYPES = [None, True, False, 0, -1, 2**40, 1.5, -0.0, 1e300, "", "1", "local", [], ["1"], [1], {}, {"ids": []}]
EDGES: dict[type, list[Any]] = {int: INT_EDGES,
                                float: [-0.0, 5e-324, 1e308, -1e308]}


def variants(obj: Any, salt: int) -> list[Any]:
    """The request, then with each field left out, then of another type, then each number at its edges.

    Each drawn value costs Hypothesis far more time than sending a frame, so every
    drawn request is sent in all these forms.
    """
    if not isinstance(obj, dict):
        return [obj]
    keys = list(obj)
    return [obj, *({k: v for k, v in obj.items() if k != key} for key in keys),
            *({**obj, key: OTHER_TYPES[(salt + i) % len(OTHER_TYPES)]} for i, key in enumerate(keys)),
            *({**obj, key: edge} for key in keys for edge in EDGES.get(type(obj[key]), ()))]


@st.composite
def request_frames(draw: st.DrawFn) -> list[bytes]:
    obj = draw(request_objects())
    salt = draw(st.integers(0, len(OTHER_TYPES) - 1))
    ascii_only = draw(st.integers(0, 3)) > 0  # mostly JSON as json.dumps writes it
    frames = []
    for variant in variants(obj, salt):
        if ascii_only:
            data = json.dumps(variant).encode()
        else:  # raw UTF-8, lone surrogates and all: those make it invalid
            data = json.dumps(variant, ensure_ascii=False).encode("utf-8", "surrogatepass")
        frame = harmless(data + b"\n")
        if frame is not None:
            frames.append(frame)
    return frames




def mutate(data: bytes, cuts: list[tuple[int, bytes]]) -> bytes:
    for position, insert in cuts:
        i = position % (len(data) + 1)
        data = data[:i] + insert + data[i + 1:]
    return data


SAMPLE_BY_NAME: dict[str, Any] = {"description": "executable = x\nqueue\n", "cwd": NO_DIR, "schedd": "local",
                                  "ids": ["1", "2.0@local"], "action": "hold", "timeout": 0.5}
SAMPLE_BY_TYPE: dict[type, Any] = {str: "fuzz", type(None): None, list: [], bool: True, int: 0, float: 0.5}
# Well-formed frames of every kind (but daemon_stop) for the raw fuzz to cut, splice and corrupt; drawn
# from a list because drawing whole requests again would cost more than the rest of the raw fuzz.
SAMPLE_LINES = [json.dumps({"v": 1, "id": f"s{kind}", "kind": kind, **{
    name: SAMPLE_BY_NAME.get(name, SAMPLE_BY_TYPE.get(types[0])) for name, types in spec.items()}}).encode()
    for kind, spec in protocol.REQUESTS.items() if kind != "daemon_stop"]
SAMPLE_LINES += [json.dumps({"v": 1, "id": "bare", "kind": kind}).encode() for kind in protocol.REQUESTS
                 if kind != "daemon_stop"]
valid_lines = st.sampled_from(SAMPLE_LINES)
raw_payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(mutate, valid_lines, st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=3)), max_size=4)),
    st.builds(lambda unit, n: unit * n, st.binary(min_size=1, max_size=8).map(lambda b: b.replace(b"\n", b" ")),
              st.integers(1, 100_000)),
    st.lists(valid_lines, min_size=2, max_size=6).map(b"\n".join),
    st.builds(lambda depth, c: c * depth, st.integers(500, 200_000), st.sampled_from([b"[", b'{"a":', b"-", b"\\"])),
).map(lambda data: b"\n".join(line[:-1] for line in map(harmless, (part + b"\n" for part in data.split(b"\n")))
                              if line is not None))


# -- the fuzz --------------------------------------------------------------------


def test_fuzz_requests(fuzzer: Fuzzer) -> None:
    """Generated requests: each is answered, by its handler when valid, else with the decoder's error."""
    lines, examples = fuzzer.lines, fuzzer.syncs

    @settings(FUZZ, max_examples=2000)
    @given(request_frames())
    def one(frames: list[bytes]) -> None:
        replies = fuzzer.exchange(b"".join(frames))
        for frame, reply in zip(frames, replies, strict=True):
            try:
                request = protocol.decode_request(frame)
            except ProtocolError as e:
                assert reply["ok"] is False and reply["id"] is None and reply["error"]["code"] == e.code, reply
                continue
            assert reply["id"] == request.id, (frame, reply)
            if request.kind in ("ping", "daemon_status") or (request.kind == "poke"
                                                              and request.fields.get("schedd") in (None, "local")):
                assert reply["ok"] is True, (frame, reply)
            elif request.kind == "poke":  # a schedd rsubd does not know
                assert reply["error"]["code"] == ErrorCode.NOT_FOUND, (frame, reply)

    one()
    assert fuzzer.syncs - examples >= 1900  # each a request and its variants: over 10,000 frames
    assert fuzzer.lines - lines >= 10_000
    still_serving(fuzzer)


def test_fuzz_raw_bytes(fuzzer: Fuzzer) -> None:
    """Raw byte strings: non-UTF-8, NULs, deep nesting, huge lines, several lines at once, no newline."""
    lines, examples = fuzzer.lines, fuzzer.syncs

    @settings(FUZZ, max_examples=7000)
    @given(raw_payloads)
    @example(b"[" * (protocol.MAX_FRAME - 1))
    @example(b'{"v": 1, "id": "a", "kind": "status", "limit": ' + b"9" * 5000 + b"}")
    @example(b'{"v": 1, "id": "a", "kind": "wait", "ids": [], "timeout": 1e999}')
    @example(b"\n" * 1000)
    @example(b'{"v": "' + b"x" * (protocol.MAX_FRAME - 100) + b'"}')
    @example(b'{"v": 1, "id": "a", "kind": "' + "\u00e9".encode() * (protocol.MAX_FRAME // 2 - 100) + b'"}')
    @example(b"\xff" * 70_000)
    def one(payload: bytes) -> None:
        fuzzer.exchange(payload)

    one()
    assert fuzzer.syncs - examples >= 6900
    assert fuzzer.lines - lines >= 7000
    still_serving(fuzzer)


def test_fuzz_abandoned_connections(fuzzer: Fuzzer) -> None:
    """Clients that send something (or nothing) and go away without reading are just dropped."""
    sent = 0

    @settings(FUZZ, max_examples=1000)
    @given(st.one_of(raw_payloads, request_frames().map(b"".join),
                     request_frames().map(lambda frames: b"".join(frames)[:-9])),
           st.booleans())
    def one(payload: bytes, half_close: bool) -> None:
        nonlocal sent
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(fuzzer.path)
            try:
                s.sendall(payload)
                if half_close:
                    s.shutdown(socket.SHUT_WR)
                    s.recv(1)  # the first byte of a reply, or end of input
            except ConnectionError:
                pass
        sent += 1

    one()
    assert sent >= 950
    still_serving(fuzzer)
    # Every dropped client is closed on the daemon's side too: no descriptor left behind.
    assert fuzzer.daemon.proc is not None
    fds = f"/proc/{fuzzer.daemon.proc.pid}/fd"
    wait_until(lambda: len(os.listdir(fds)) < 50, 10, "rsubd to close the dropped connections")


# -- what the fuzz found once; fixed, and kept so -----------------------------------------


@pytest.mark.parametrize("line", [
    {"kind": "status", "offset": 2**63},
    {"kind": "status", "ids": [str(2**63)]},
    {"kind": "status", "ids": [f"1.{2**63}"]},
    {"kind": "status", "ids": ["²"]},
    {"kind": "wait", "ids": [str(BIG)], "timeout": 0},
    {"kind": "act", "action": "hold", "ids": [str(BIG)]},
    {"kind": []},
    {"kind": ["ping"]},
    {"kind": {}},
], ids=["offset", "cluster", "proc", "superscript", "wait", "act", "kind-list", "kind-list-ping", "kind-object"])
def test_out_of_range_numbers_and_odd_kinds_are_answered(fuzzer: Fuzzer, line: dict[str, Any]) -> None:
    """Once answered `internal`: ids and offsets past 64 bits reached SQLite, and a list kind the decoder."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(fuzzer.path)
        s.sendall(json.dumps({"v": 1, "id": "a", **line}).encode() + b"\n")
        reply = read_reply(s.makefile("rb"))  # a valid reply, and not `internal`
    if line["kind"] != "status" or "ids" in line:
        assert reply["ok"] is False and reply["error"]["code"] == ErrorCode.BAD_REQUEST, reply
