"""Where rsubd's log goes and how it rotates (rsubd.platform.logs), the poll event's level, and how
`rsub daemon log` reads and shows it (rsub.commands.logview)."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from rsub.commands import logview
from rsub.wire.protocol import Request
from rsubd.platform import logs
from rsubd.transport.server import SocketServer


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    logs.configure("info")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_where_the_log_goes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open(tmp_path / "stderr", "w") as stream:
        st = os.fstat(stream.fileno())
        journal = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert logs.choose(None, state, stream, {}) == logs.Destination("file", state / "rsubd.log")
        assert logs.choose(None, state, stream, journal).to == "journal"
        assert logs.choose(None, state, stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}).to == "file"
        assert logs.choose(None, state, stream, {"JOURNAL_STREAM": "garbage"}).to == "file"
        assert logs.choose("-", state, stream, {}) == logs.Destination("stderr")
        assert logs.choose("-", state, stream, journal).to == "journal"  # `-` is stderr, and stderr is the journal
        assert logs.choose("~/x.log", state, stream, journal) == logs.Destination("file", Path.home() / "x.log")
    assert logs.choose(None, state, Tty(), {}) == logs.Destination("stderr")
    assert logs.choose(None, state, io.StringIO(), {}).to == "file"  # no file descriptor, no terminal


def test_the_journal_unit_comes_from_the_cgroup(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/user.slice/user-1000.slice/user@1000.service/app.slice/rsubd-dev.service\n")
    assert logs._unit(cgroup) == ("rsubd-dev.service", True)
    cgroup.write_text("0::/system.slice/rsubd.service\n")
    assert logs._unit(cgroup) == ("rsubd.service", False)
    journal = logs.Destination("journal", unit="rsubd.service", user=False)
    assert journal.journal_command == "journalctl -u rsubd.service"
    cgroup.write_text("0::/\n")
    assert logs._unit(cgroup) == ("rsubd.service", True)
    assert logs._unit(tmp_path / "missing") == ("rsubd.service", True)


def test_a_terminal_gets_text_without_colour_when_no_color_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    for no_color in ("", "1"):
        monkeypatch.setenv("NO_COLOR", no_color)
        stream = Tty()
        logs.configure("info", stream)
        structlog.get_logger("t").info("hello.there", n=1)
        out = stream.getvalue()
        assert "hello.there" in out and not out.startswith("{")
        assert ("\x1b[" in out) is (no_color == "")
        assert ("n=1" in out) is (no_color == "1")  # with colour, the key and the value are coloured apart


def test_a_log_file_is_private_rotated_and_json(tmp_path: Path) -> None:
    path = tmp_path / "new" / "rsubd.log"
    logs.configure("debug", destination=logs.Destination("file", path), max_bytes=2000, backups=2)
    log = structlog.get_logger("t")
    for n in range(100):
        log.debug("tick", n=n, padding="x" * 50)
    log.info("token.read", token="eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl")
    files = [path, path.with_name("rsubd.log.1"), path.with_name("rsubd.log.2")]
    assert not path.with_name("rsubd.log.3").exists()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert f.stat().st_size <= 2000
    last = [json.loads(line) for line in path.read_text().splitlines()]
    assert last[-1] == {"token": "[redacted]", "event": "token.read", "level": "info",
                        "timestamp": last[-1]["timestamp"]}
    assert logs.status() == {"to": "file", "path": str(path), "level": "debug", "journal_command": None}
    assert logs.where() == str(path)


def test_a_loose_log_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "rsubd.log"
    path.write_text("")
    path.chmod(0o644)
    logs.configure("info", destination=logs.Destination("file", path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_internal_error_names_the_log(tmp_path: Path) -> None:
    logs.configure("info", destination=logs.Destination("file", tmp_path / "rsubd.log"))
    reply = SocketServer._internal(Request(id="r1", kind="ping", fields={}))
    assert reply["error"]["message"] == f"internal error in rsubd (request r1); see its log ({tmp_path / 'rsubd.log'})"
    logs.configure("info", destination=logs.Destination("journal", unit="rsubd.service"))
    assert "see its log (the systemd journal: journalctl --user -u rsubd.service)" in \
        SocketServer._internal(Request(id="r2", kind="ping", fields={}))["error"]["message"]


# -- rsub daemon log -----------------------------------------------------------------------------

def test_lines_are_shown_compactly() -> None:
    line = json.dumps({"schedd": "local", "changed": 2, "error": None, "why": "a b", "ids": [1, 2], "ok": True,
                       "event": "poll", "level": "info", "timestamp": "2026-12-01T09:00:00.5Z"}).encode()
    shown = logview.render(line)
    when = shown[:19]
    assert shown[20:] == 'info    poll schedd=local changed=2 why="a b" ids=[1,2] ok=true'
    assert when[:10] in ("2026-11-30", "2026-12-01", "2026-12-02") and when[13:] == ":00:00"
    assert "\x1b[32m" in logview.render(line, colour=True)
    trace = json.dumps({"event": "poll.crashed", "level": "error", "timestamp": "x",
                        "exception": "Traceback\n  boom"}).encode()
    assert logview.render(trace).splitlines()[1:] == ["    Traceback", "      boom"]
    assert logview.render(b"--- not json") == "--- not json"
    assert logview.render(b"[1, 2]") == "[1, 2]"


def test_tail_takes_whole_lines_and_reaches_into_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "rsubd.log"
    path.with_name("rsubd.log.2").write_bytes(b"a\nb\n")
    path.with_name("rsubd.log.1").write_bytes(b"c\nd\n")
    path.write_bytes(b"e\nf\npartial")
    lines, offset = logview.tail(path, 3)
    assert lines == [b"d", b"e", b"f"] and offset == 4  # the line being written is left for -f
    assert logview.tail(path, 10)[0] == [b"a", b"b", b"c", b"d", b"e", b"f"]
    assert logview.tail(path, 0) == ([], 4)
    big = tmp_path / "big.log"
    big.write_bytes(b"".join(b"%06d\n" % n for n in range(50_000)))  # more than one block back
    lines, offset = logview.last_lines(big, 20_000)
    assert lines[0] == b"030000" and lines[-1] == b"049999" and offset == big.stat().st_size
    assert logview.tail(tmp_path / "none.log", 5) == ([], 0)


def test_follow_goes_on_across_a_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rsubd.log"
    path.write_bytes(b"old\n")
    seen: list[bytes] = []

    def append(data: bytes) -> None:
        with path.open("ab") as f:
            f.write(data)

    steps = iter([
        lambda: append(b"one\ntw"),  # half a line: held until its end comes
        lambda: append(b"o\n"),
        lambda: (append(b"last of the old\n"), path.rename(path.with_name("rsubd.log.1"))),
        lambda: None,  # between the rename and the new file
        lambda: path.write_bytes(b"first of the new\n"),
        lambda: None,
    ])

    def sleep(_seconds: float) -> None:
        try:
            next(steps)()
        except StopIteration:
            raise KeyboardInterrupt from None

    monkeypatch.setattr(logview.time, "sleep", sleep)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    with pytest.raises(KeyboardInterrupt):
        logview.follow(path, 4, seen.append)
    assert seen == [b"one", b"two", b"last of the old", b"first of the new"]
