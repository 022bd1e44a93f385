"""Unit tests for rsub.wire.protocol: request validation, framing, reply shapes and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rsub.wire import protocol, vocabulary
from rsub.wire.protocol import ProtocolError, Request, decode_request
from rsub.wire.vocabulary import ErrorCode


def frame(**obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def request(kind: str = "ping", **fields: Any) -> bytes:
    return frame(v=protocol.VERSION, id="r1", kind=kind, **fields)


def refused(line: bytes, code: str = ErrorCode.BAD_REQUEST) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_request(line)
    assert info.value.code == code
    assert str(info.value) == info.value.message
    return info.value.message


# -- well-formed requests --------------------------------------------------


def test_ping_decodes() -> None:
    assert decode_request(request()) == Request(kind="ping", id="r1", fields={})


def test_submit_with_all_fields() -> None:
    fields = {"description": "queue", "cwd": "/x", "submit_file": None, "schedd": "local", "request_id": "q"}
    req = decode_request(request("submit", **fields))
    assert req.kind == "submit"
    assert req.fields == fields


def test_make_request_round_trips_through_encode_and_decode() -> None:
    msg = protocol.make_request("status", ids=["1", "2.0"], active=True, limit=5, offset=0)
    data = protocol.encode(msg)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    req = decode_request(data)
    assert req.id == msg["id"]
    assert req.fields == {"ids": ["1", "2.0"], "active": True, "limit": 5, "offset": 0}


def test_make_request_ids_differ() -> None:
    assert protocol.make_request("ping")["id"] != protocol.make_request("ping")["id"]


def test_wait_timeout_accepts_int_and_float() -> None:
    assert decode_request(request("wait", ids=["1"], timeout=3)).fields["timeout"] == 3
    assert decode_request(request("wait", ids=["1"], timeout=2.5)).fields["timeout"] == 2.5


def test_every_kind_decodes_with_its_required_fields() -> None:
    samples: dict[type, Any] = {str: "x", list: ["1"], bool: False, int: 1, float: 1.0}
    for kind, spec in protocol.REQUESTS.items():
        fields = {name: samples[spec[name][0]] for name in protocol.REQUIRED.get(kind, ())}
        assert decode_request(request(kind, **fields)).kind == kind


# -- refusals --------------------------------------------------------------


@pytest.mark.parametrize("line", [b"{", b"", b"not json", b'{"v": 1,}', b"\xff\xfe\x00"])
def test_malformed_json(line: bytes) -> None:
    assert refused(line).startswith("malformed JSON")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_constants_are_malformed(constant: str) -> None:
    line = b'{"v": 1, "id": "a", "kind": "wait", "ids": ["1"], "timeout": ' + constant.encode() + b"}"
    assert refused(line).startswith("malformed JSON")


def test_nesting_too_deep_is_malformed() -> None:
    assert refused(b"[" * 100_000).startswith("malformed JSON")


@pytest.mark.parametrize("line", [b"[]", b"1", b'"ping"', b"null"])
def test_non_object(line: bytes) -> None:
    assert refused(line) == "a request must be a JSON object"


@pytest.mark.parametrize("version", [2, 0, "1", None, True, 1.0])
def test_wrong_version(version: Any) -> None:
    message = refused(frame(v=version, id="a", kind="ping"), ErrorCode.VERSION)
    assert "upgrade" in message


def test_missing_version() -> None:
    refused(frame(id="a", kind="ping"), ErrorCode.VERSION)


@pytest.mark.parametrize("rid", [None, "", 7, ["a"], "x" * 65])
def test_bad_id(rid: Any) -> None:
    obj: dict[str, Any] = {"v": 1, "kind": "ping"}
    if rid is not None:
        obj["id"] = rid
    assert "'id' must be a non-empty string of at most 64 characters" in refused(frame(**obj))


def test_id_of_64_characters_is_accepted() -> None:
    assert decode_request(frame(v=1, id="x" * 64, kind="ping")).id == "x" * 64


@pytest.mark.parametrize("kind", ["shutdown", None, 3, "PING"])
def test_unknown_kind(kind: Any) -> None:
    obj: dict[str, Any] = {"v": 1, "id": "a"}
    if kind is not None:
        obj["kind"] = kind
    message = refused(frame(**obj))
    assert "unknown request kind" in message
    assert "ping" in message and "submit" in message


def test_unknown_field() -> None:
    message = refused(request("ping", verbose=True))
    assert message == "unknown field 'verbose' for ping"


@pytest.mark.parametrize(
    ("kind", "fields", "name"),
    [
        ("status", {"limit": True}, "limit"),  # bool is an int in Python, not in the protocol
        ("status", {"offset": 1.5}, "offset"),
        ("status", {"active": 1}, "active"),
        ("status", {"ids": "1"}, "ids"),
        ("wait", {"ids": ["1"], "timeout": True}, "timeout"),
        ("wait", {"ids": ["1"], "timeout": "5"}, "timeout"),
        ("submit", {"description": 1, "cwd": "/", "request_id": "q"}, "description"),
        ("submit", {"description": "d", "cwd": None, "request_id": "q"}, "cwd"),
        ("act", {"action": "hold", "ids": ["1"], "reason": 5}, "reason"),
        ("poke", {"schedd": False}, "schedd"),
    ],
)
def test_wrong_types(kind: str, fields: dict[str, Any], name: str) -> None:
    message = refused(request(kind, **fields))
    assert message.startswith(f"field {name!r} of {kind} must be ")


def test_wrong_type_message_names_null_where_allowed() -> None:
    assert refused(request("poke", schedd=1)) == "field 'schedd' of poke must be str or null"


@pytest.mark.parametrize(
    ("kind", "fields", "missing"),
    [
        ("submit", {"cwd": "/", "request_id": "q"}, "description"),
        ("submit", {"description": "d", "request_id": "q"}, "cwd"),
        ("submit", {"description": "d", "cwd": "/"}, "request_id"),
        ("wait", {}, "ids"),
        ("act", {"ids": ["1"]}, "action"),
        ("act", {"action": "hold"}, "ids"),
    ],
)
def test_missing_required(kind: str, fields: dict[str, Any], missing: str) -> None:
    assert refused(request(kind, **fields)) == f"{kind} needs field {missing!r}"


def test_version_is_checked_before_the_rest() -> None:
    refused(frame(v=99, kind="nonsense"), ErrorCode.VERSION)


# -- encode ----------------------------------------------------------------


def test_encode_is_one_compact_line() -> None:
    assert protocol.encode({"a": [1, 2], "b": "x"}) == b'{"a":[1,2],"b":"x"}\n'


def test_encode_caps_the_frame() -> None:
    overhead = len(protocol.encode({"s": ""}))
    at_cap = {"s": "x" * (protocol.MAX_FRAME - overhead)}
    assert len(protocol.encode(at_cap)) == protocol.MAX_FRAME
    with pytest.raises(ProtocolError) as info:
        protocol.encode({"s": "x" * (protocol.MAX_FRAME - overhead + 1)})
    assert info.value.code == ErrorCode.BAD_REQUEST
    assert str(protocol.MAX_FRAME) in info.value.message


# -- replies ---------------------------------------------------------------


def test_ok_shape() -> None:
    reply = protocol.ok("r1", {"n": 1})
    assert reply == {"v": protocol.VERSION, "id": "r1", "ok": True, "result": {"n": 1}}
    assert json.loads(protocol.encode(reply)) == reply


def test_error_shape() -> None:
    reply = protocol.error(None, ErrorCode.NOT_FOUND, "no job 7")
    assert reply == {
        "v": protocol.VERSION, "id": None, "ok": False, "error": {"code": "not_found", "message": "no job 7"},
    }
    assert json.loads(protocol.encode(reply)) == reply


# -- error codes and exit codes --------------------------------------------

ALL_CODES = [v for k, v in vars(ErrorCode).items() if k.isupper()]
# Codes a user acts on differently, each with its own exit code.
SPECIFIC = [ErrorCode.BAD_REQUEST, ErrorCode.NOT_FOUND, ErrorCode.BAD_SUBMIT, ErrorCode.SCHEDD, ErrorCode.TIMEOUT,
            ErrorCode.TOKEN]


def test_every_error_code_has_an_exit_code() -> None:
    assert len(ALL_CODES) == 8
    assert set(vocabulary.EXIT_BY_CODE) == set(ALL_CODES)
    assert all(vocabulary.EXIT_BY_CODE[c] != vocabulary.EXIT_OK for c in ALL_CODES)


def test_specific_error_codes_have_distinct_exit_codes() -> None:
    exits = [vocabulary.EXIT_BY_CODE[c] for c in SPECIFIC]
    assert len(set(exits)) == len(exits)
    assert vocabulary.EXIT_ERROR not in exits
    assert vocabulary.EXIT_NO_DAEMON not in exits


def test_generic_errors_exit_1() -> None:
    assert vocabulary.EXIT_BY_CODE[ErrorCode.INTERNAL] == vocabulary.EXIT_ERROR == 1
    assert vocabulary.EXIT_BY_CODE[ErrorCode.VERSION] == vocabulary.EXIT_ERROR


def test_exit_code_constants_are_distinct() -> None:
    names = [n for n in vars(vocabulary) if n.startswith("EXIT_") and n != "EXIT_BY_CODE"]
    values = [getattr(vocabulary, n) for n in names]
    assert len(set(values)) == len(values) == 14
    assert all(0 <= v < 126 for v in values)  # above 125 means something else to a shell


def test_a_timeout_field_reaches_the_daemon_and_is_not_taken_as_the_socket_timeout(tmp_path: Path) -> None:
    import socket as socketlib
    import threading

    path = str(tmp_path / "s")
    server = socketlib.socket(socketlib.AF_UNIX)
    server.bind(path)
    server.listen(1)
    seen: list[dict[str, object]] = []

    def answer() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as f:
            seen.append(json.loads(f.readline()))
            conn.sendall(protocol.encode(protocol.ok("x", {})))

    thread = threading.Thread(target=answer)
    thread.start()
    with protocol.Connection(path, timeout=5) as conn:
        conn.call("wait", ids=["1"], timeout=42.5)
    thread.join(5)
    server.close()
    assert seen[0]["timeout"] == 42.5
