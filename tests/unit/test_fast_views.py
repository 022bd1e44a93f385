"""The short cuts `rsub q` and `rsub history` take for speed give what the long ways gave."""

from __future__ import annotations

import datetime
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from rsub import views
from rsub.wire import protocol
from rsubd.ledger.store import Ledger
from rsubd.services.views import BRIEF_COLUMNS, run_seconds

# (state, wall_time, run_start): each way services.usage.wall_seconds goes, and the ways it gives None.
USAGE = [("running", 30.0, 1000.0), ("running", 0.0, None), ("running", None, None), ("idle", 0.0, None),
         ("idle", 12.0, None), ("held", None, None), ("completed", 0.0, None), ("retrieved", 55.5, None),
         ("removed", 0.0, None), ("failed", None, None)]


def test_a_brief_page_gives_every_job_the_run_time_of_the_full_page(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    try:
        row = ledger.add_submit_intent(request_id="r", schedd="a", tag="t", description="d",
                                       submitted_description="executable = x\nqueue\n", submit_dir="/tmp",
                                       submit_file=None)
        ledger.record_submitted(row, 1, [(p, "/tmp") for p in range(len(USAGE))])
        # Every job ran once (its events say so), then went where USAGE says, with its usage columns.
        ledger.apply_changes("a", [(1, p, {"state": "running"}) for p in range(len(USAGE))])
        time.sleep(0.01)
        ledger.apply_changes("a", [(1, p, {"state": s}) for p, (s, _, _) in enumerate(USAGE) if s != "running"])
        with ledger.transaction() as conn:
            for p, (_, wall, start) in enumerate(USAGE):
                conn.execute("UPDATE jobs SET wall_time = ?, run_start = ? WHERE cluster = 1 AND proc = ?",
                             (wall, start, p))
        now = time.time()
        full = ledger.job_page(schedd="a")
        brief = ledger.job_page(schedd="a", columns=BRIEF_COLUMNS)
        assert [(r["proc"], r["state"]) for r in brief] == [(r["proc"], r["state"]) for r in full]
        assert [run_seconds(r, now) for r in brief] == [run_seconds(r, now) for r in full]
        assert sum(run_seconds(r, now) is not None for r in full) >= 8  # the events gave some of them
        assert set(brief[0]) == {*BRIEF_COLUMNS, "run_started_at", "run_left_at", "finished_at"}
        history = ledger.job_page(states=["retrieved", "removed", "failed"], newest_first=True, columns=BRIEF_COLUMNS)
        assert [r["proc"] for r in history] == [r["proc"] for r in ledger.job_page(
            states=["retrieved", "removed", "failed"], newest_first=True)]
    finally:
        ledger.close()


@pytest.mark.parametrize("row", [
    ["1.0@local", "a b", "c"], ["", "x"], ["x", ""], ["a  b"], [" a"], ["a "], ["held:\tsee\nlog"],
    ["no\xa0break", "em\u2003space"], ["\x1b[31mred\x1b[0m"], ["é", "漢字"], [], [""], ["a\x85b"],
])
def test_one_line_is_what_splitting_every_cell_gives(row: list[str]) -> None:
    assert views.one_line(row) == [" ".join(c.split()) for c in row]


@pytest.mark.parametrize("tz", ["UTC", "America/Chicago", "Asia/Kolkata"])
def test_submitted_text_reads_rsubds_times_as_datetime_does(tz: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        for ts in (0, 951782400, 1709164800, 1764547200.5, 1798761599, 4102444800):
            text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
            moment = datetime.datetime.fromisoformat(text)
            assert views.utc_seconds(text) == int(moment.timestamp())
            views._SUBMITTED.clear()
            assert views.submitted_text(text) == moment.astimezone().strftime("%m/%d %H:%M")
        assert views.utc_seconds("2026-12-01 09:00:00+00:00") is None  # not rsubd's: datetime reads it
        assert views.utc_seconds("2026-+1-01T09:00:00Z") is None
        views._SUBMITTED.clear()
        assert views.submitted_text("2026-12-01T09:00:00+00:00") == datetime.datetime(
            2026, 12, 1, 9, tzinfo=datetime.UTC).astimezone().strftime("%m/%d %H:%M")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
        views._SUBMITTED.clear()


def test_the_connection_reads_frames_split_and_joined_however_they_come(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    big = {"jobs": ["x" * 100] * 5000}  # 500 kB: many reads
    frames = [protocol.encode({"ok": True, "n": 1, "more": True}) + protocol.encode({"ok": True, "n": 2, "more": True}),
              protocol.encode({"ok": True, "result": big, "more": True}), protocol.encode({"ok": True, "n": 3})]

    def answer() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as f:
            f.readline()
            data = b"".join(frames)
            for i in range(0, len(data), 7001):  # cut anywhere, newlines included
                conn.sendall(data[i:i + 7001])

    thread = threading.Thread(target=answer)
    thread.start()
    with protocol.Connection(path, timeout=5) as conn:
        got = list(conn.stream("watch"))
    thread.join(5)
    server.close()
    assert [r.get("n") for r in got] == [1, 2, None, 3]
    assert got[2]["result"] == json.loads(json.dumps(big))


def test_the_connection_says_when_rsubd_hangs_up_mid_frame(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as f:
            f.readline()
            conn.sendall(b'{"ok": tr')

    thread = threading.Thread(target=answer)
    thread.start()
    refused = pytest.raises(protocol.DaemonUnavailable, match="not a protocol")
    with protocol.Connection(path, timeout=5) as conn, refused:
        conn.call("ping")
    thread.join(5)
    server.close()
