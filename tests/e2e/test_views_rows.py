"""`rsub q` and `rsub history` read their table as lists (`rows`), from a page rsubd keeps until the ledger changes."""

from __future__ import annotations

from pathlib import Path

from rsub.wire.protocol import BRIEF_FIELDS, TABLE_COLUMNS, Connection
from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job


def _socket(rsubd: Rsubd) -> str:
    return str(Path(rsubd.env["XDG_RUNTIME_DIR"]) / "rsub" / "rsubd.sock")


def _letters(rsubd: Rsubd) -> dict[str, str]:
    """What `rsub q` shows: each job's ST letter."""
    return {line.split("\t")[0]: line.split("\t")[4] for line in rsubd.rsub("q").stdout.splitlines()[1:]}


def test_rows_hold_the_brief_jobs_and_a_write_shows_at_once(rsubd: Rsubd, workdir: Path) -> None:
    write_job(workdir, "job.sh", "sleep 60\n")
    (workdir / "j.sub").write_text("executable = job.sh\nqueue 3\n")
    assert rsubd.rsub("submit", "j.sub", cwd=workdir).returncode == 0
    with Connection(_socket(rsubd)) as conn:
        brief = conn.call("status", active=True, brief=True)["result"]
        table = conn.call("status", active=True, rows=True)["result"]
        again = conn.call("status", active=True, rows=True)["result"]  # the kept page
    assert "jobs" not in table and table["columns"] == list(TABLE_COLUMNS) and len(table["rows"]) == 3
    assert again["rows"] == table["rows"] and (again["total"], again["truncated"]) == (3, False)
    for job, row in zip(brief["jobs"], table["rows"], strict=True):
        got = dict(zip(TABLE_COLUMNS, row, strict=True))
        want = {**{k: job[k] for k in BRIEF_FIELDS if k != "jobsub"}, **job["jobsub"]}
        assert {k: v for k, v in got.items() if k != "more"} == {k: want[k] for k in TABLE_COLUMNS if k != "more"}
    # Spooled, then seen idle or running by a poll, then held: each write of the ledger gives the next q a new page.
    wait_until(lambda: len(seen := _letters(rsubd)) == 3 and "S" not in seen.values(), 30, "the jobs spooled")
    held = sorted(_letters(rsubd))[0]
    assert rsubd.rsub("hold", held).returncode == 0
    wait_until(lambda: _letters(rsubd)[held] == "H", 30, f"{held} held in rsub q")
    (workdir / "k.sub").write_text("executable = job.sh\nqueue 2\n")
    assert rsubd.rsub("submit", "k.sub", cwd=workdir).returncode == 0
    new = [i for i in _letters(rsubd) if i.split(".")[0] != held.split(".")[0]]  # at once: no poll in between
    assert len(new) == 2
    history = rsubd.rsub("history")
    assert history.returncode == 0 and history.stdout.splitlines()[0].startswith("JOBID\tOWNER")
