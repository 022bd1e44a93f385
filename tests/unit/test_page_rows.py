"""`rsub q`'s page kept between ledger writes, and its rows as lists: the same jobs and the same table as before."""

from __future__ import annotations

import io
import sqlite3
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from rsub import views
from rsub.wire.protocol import BRIEF_FIELDS, TABLE_COLUMNS
from rsubd.ledger.store import Ledger
from rsubd.services.pagecache import PageCache
from rsubd.services.views import BRIEF_COLUMNS, brief_view, jobsub_view, table_row


def _ledger(tmp_path: Path, procs: int = 4) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.db")
    row = ledger.add_submit_intent(request_id="r", schedd="a", tag="t", description="d",
                                   submitted_description="executable = x\nqueue\n", submit_dir="/tmp", submit_file=None)
    ledger.record_submitted(row, 7, [(p, "/tmp") for p in range(procs)])
    return ledger


def test_the_ledger_generation_moves_with_every_write_and_only_then(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    try:
        first = ledger.generation()
        ledger.job_page(schedd="a", columns=BRIEF_COLUMNS)
        assert ledger.generation() == first  # a read changes nothing
        ledger.apply_changes("a", [(7, 0, {"state": "running"})])
        second = ledger.generation()
        assert second != first
        other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)  # a commit by another connection
        other.execute("UPDATE jobs SET exit_code = 1 WHERE proc = 1")
        other.close()
        assert ledger.generation() != second
    finally:
        ledger.close()


def test_a_kept_page_is_given_back_only_at_its_generation() -> None:
    cache = PageCache(size=2, max_rows=3)
    rows: list[dict[str, Any]] = [{"proc": 0}]
    assert cache.get((1, 0), "q") is None
    cache.put((1, 0), "q", rows, 1)
    assert cache.get((1, 0), "q") == (rows, 1) and cache.get((1, 0), "other") is None
    assert cache.get((2, 0), "q") is None  # the ledger moved: every page is gone
    cache.put((1, 0), "q", rows, 1)  # read before the move: not kept
    assert cache.get((2, 0), "q") is None
    cache.put((2, 0), "big", [{"proc": p} for p in range(4)], 4)  # over max_rows
    assert cache.get((2, 0), "big") is None
    for key in ("a", "b", "c"):
        cache.put((2, 0), key, rows, 1)
    assert cache.get((2, 0), "a") is None and cache.get((2, 0), "c") == (rows, 1)  # at most `size`, oldest out
    assert (cache.hits, cache.misses) == (2, 6)
    three = [{"proc": p} for p in range(3)]
    cache.put((2, 0), "d", three, 3)  # 3 rows: with "c"'s 1, over max_rows; "c" goes
    assert cache.get((2, 0), "c") is None and cache.get((2, 0), "d") == (three, 3)
    cache.put((2, 0), "d", rows, 1)  # the same key again: replaced, its rows counted once
    cache.put((2, 0), "e", [{"proc": 0}, {"proc": 1}], 2)
    assert cache.get((2, 0), "d") == (rows, 1) and cache.get((2, 0), "e") is not None


def test_a_table_row_holds_the_brief_view_values(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    try:
        ledger.apply_changes("a", [(7, 0, {"state": "running"}), (7, 1, {"state": "held"})])
        time.sleep(0.01)
        ledger.apply_changes("a", [(7, 0, {"state": "completed", "exit_code": 3})])
        page = ledger.job_page(schedd="a", columns=BRIEF_COLUMNS)
        ledger.lineage_of(page)
        page[2]["replaces"] = "5.2"  # what lineage_of gives a job rsub resubmit ran again
        facts = {"command": "x", "priority": 4, "size": "2 GB", "group": None}
        now = time.time()
        for r in page:
            got = dict(zip(TABLE_COLUMNS, table_row(r, facts, "me", now), strict=True))
            brief = {**brief_view(r), **jobsub_view(r, facts, "me", now)}
            assert {k: got[k] for k in TABLE_COLUMNS if k != "more"} == {k: brief[k] for k in TABLE_COLUMNS
                                                                          if k != "more"}
            assert got["more"] == ({"replaces": "5.2"} if r["proc"] == 2 else None)
        assert dict(zip(TABLE_COLUMNS, table_row(page[1], {}, "me", now), strict=True))["priority"] == 0
    finally:
        ledger.close()


def _brief(proc: int, state: str, **kw: Any) -> dict[str, Any]:
    job = {"id": f"12.{proc}@local", "cluster": 12, "proc": proc, "schedd": "local", "state": state,
           "submitted_at": "2026-12-01T09:00:00Z", "exit_code": kw.pop("exit_code", None),
           "exit_signal": kw.pop("exit_signal", None),
           "jobsub": {"owner": "alice", "status": "R", "run_time": 61.5, "command": "a.sh", "priority": 0,
                      "size": None, "group": None}}
    return {**job, **kw}


JOBS = [_brief(0, "running"), _brief(1, "retrieved", exit_code=3), _brief(2, "retrieved", exit_signal=9),
        _brief(3, "retrieved", exit_code=0, replaces="5.3"), _brief(4, "held", jobsub={}),
        *(_brief(5 + p, "idle") for p in range(10))]


@pytest.mark.parametrize("tty", [False, True])
def test_the_table_from_rows_is_the_table_from_brief_dicts(tty: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "on_terminal", lambda: tty)
    monkeypatch.setenv("NO_COLOR", "1")
    assert all(set(j) <= {*BRIEF_FIELDS, "replaces"} for j in JOBS)
    expected = views.render_table([views.jobsub_row(j) for j in JOBS], views.JOBSUB_HEADER, tty=tty)
    if tty:
        expected += [*views.summary_lines(JOBS), "resubmitted: 5.3 -> 12.3"]
    out = io.StringIO()
    with redirect_stdout(out):
        views.show_table(list(TABLE_COLUMNS), views.table_rows(JOBS))
    assert out.getvalue().splitlines() == expected
    lines = out.getvalue().splitlines()
    assert lines[2].split()[-1] == "3" and lines[3].split()[-2:] == ["sig", "9"] and lines[5].split()[-1] == "-"


def test_rows_find_their_columns_by_name() -> None:
    """A later rsubd may send more columns, in another order: the table reads each by its name."""
    columns = ["extra", *reversed(TABLE_COLUMNS)]
    rows = [["x", *reversed(r)] for r in views.table_rows(JOBS)]
    plain, shuffled = io.StringIO(), io.StringIO()
    with redirect_stdout(plain):
        views.show_table(TABLE_COLUMNS, views.table_rows(JOBS))
    with redirect_stdout(shuffled):
        views.show_table(columns, rows)
    assert plain.getvalue() == shuffled.getvalue()
    assert views.table_jobs(columns, rows)[3]["replaces"] == "5.3"


def test_an_rsubd_from_before_rows_is_asked_again_with_brief(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from rsub import cli
    from rsub.commands import status
    from rsub.connection import Failure

    asked: list[dict[str, Any]] = []

    def old_rsubd(args: Any, kind: str, **fields: Any) -> dict[str, Any]:
        asked.append(fields)
        if "rows" in fields:  # what decode_request of an older rsubd says of a field it does not know
            raise Failure(2, f"unknown field 'rows' for {kind}")
        return {"jobs": JOBS, "total": len(JOBS), "truncated": False, "schedds": {}}

    monkeypatch.setattr(status, "call", old_rsubd)
    monkeypatch.setattr(views, "on_terminal", lambda: False)
    assert cli.main(["q"]) == 0
    assert [("rows" in f, f.get("brief"), f.get("active")) for f in asked] == [(True, True, True), (False, True, True)]
    assert capsys.readouterr().out.splitlines() == views.render_table(
        [views.jobsub_row(j) for j in JOBS], views.JOBSUB_HEADER, tty=False)
    monkeypatch.setattr(status, "call", lambda *a, **k: (_ for _ in ()).throw(Failure(2, "unknown field 'x'")))
    assert cli.main(["history"]) == 2  # any other refusal stands


def test_the_submits_without_jobs_are_read_through_their_index(tmp_path: Path) -> None:
    """Every view lists them after its jobs: an index of the few, not a scan of a year's clusters (migration 10)."""
    ledger = _ledger(tmp_path)
    try:
        failed = ledger.add_submit_intent(request_id="f", schedd="a", tag="t", description="e",
                                          submitted_description="", submit_dir="/w", submit_file="f.sub")
        with ledger.transaction() as conn:
            conn.execute("UPDATE clusters SET state = 'failed', error = 'refused' WHERE id = ?", (failed,))
        statements: list[str] = []
        ledger._conn.set_trace_callback(statements.append)
        found = ledger.submits_without_jobs(since=0)
        ledger._conn.set_trace_callback(None)
        assert [r["id"] for r in found] == [failed]  # the one that made no cluster, not the one that did
        (sql,) = [s for s in statements if "FROM clusters" in s]
        plan = " ".join(str(r[-1]) for r in ledger._conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert plan.startswith("SCAN clusters USING INDEX clusters_unmade")  # the index's few rows, not the table
    finally:
        ledger.close()
