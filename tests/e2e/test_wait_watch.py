"""`rsub wait` and `rsub watch` on the watch stream, as a user sees them (issue 14, section 1)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.daemon import BIN, Rsubd
from tests.support.jobs import submit_shell
from tests.support.terminal import Terminal

pytestmark = pytest.mark.e2e


def test_wait_prints_each_change_as_it_happens_and_its_exit_code_says_how_it_ended(
        rsubd: Rsubd, workdir: Path) -> None:
    cluster = submit_shell(rsubd, workdir, "sleep 1; exit $(Process)", "queue 3")
    result = rsubd.rsub("wait", str(cluster), cwd=workdir)
    assert result.returncode == 13, result.stderr  # some job exited non-zero
    lines = result.stdout.splitlines()
    for proc in range(3):
        mine = [line for line in lines if line.startswith(f"{cluster}.{proc}@local: ")]
        assert mine[0] == f"{cluster}.{proc}@local: spooling" or mine[0].endswith(("idle", "running")), mine
        assert mine[-1].startswith(f"{cluster}.{proc}@local: retrieved (exit {proc}; output in {workdir}")
    assert "3 job(s): 3 retrieved (1 exit 0, 2 exit != 0), 0 removed, 0 failed" in lines
    assert f"  exit != 0: {cluster}.1 exit 1, {cluster}.2 exit 2" in lines
    assert "2 job(s) exited non-zero" in result.stderr
    again = rsubd.rsub("wait", "--json", f"{cluster}.0")
    assert again.returncode == 0, again.stderr  # the one that exited 0
    assert [json.loads(x)["state"] for x in again.stdout.splitlines()] == ["retrieved"]


def test_wait_exit_codes_for_removed_and_timeout(rsubd: Rsubd, workdir: Path) -> None:
    cluster = submit_shell(rsubd, workdir, "sleep 60", "queue 1")
    timed = rsubd.rsub("wait", "--timeout", "2s", str(cluster))
    assert timed.returncode == 6 and "timed out after 2 s; 1 job(s) still active" in timed.stderr
    assert rsubd.rsub("wait", "--timeout", "soon", str(cluster)).returncode == 2
    assert rsubd.rsub("rm", str(cluster)).returncode == 0
    removed = rsubd.rsub("wait", "--timeout", "1m", str(cluster))
    assert removed.returncode == 12, removed.stderr
    assert f"{cluster}.0@local: removed" in removed.stdout


def test_wait_on_a_terminal_keeps_a_progress_line_per_cluster(rsubd: Rsubd, workdir: Path) -> None:
    cluster = submit_shell(rsubd, workdir, "sleep 0.$(Process); test $(Process) -lt 28", "queue 30")
    term = Terminal([str(BIN / "rsub"), "wait", str(cluster)], rsubd.env, cwd=workdir)
    try:
        code = term.wait(120)
        screen = term.screen()
        progress = [line for line in screen if line.startswith(f"{cluster}@local  [")]
        assert progress == [f"{cluster}@local  [##########]  30/30 done  0 run  0 idle  2 exit!=0"], term.text()
        # Only the jobs worth a line get one (exit != 0), above the progress line; then the summary.
        assert sorted(line for line in screen if "@local: " in line) == [
            f"{cluster}.{p}@local: retrieved (exit 1; output in {workdir})" for p in (28, 29)], term.text()
        assert "30 job(s): 30 retrieved (28 exit 0, 2 exit != 0), 0 removed, 0 failed" in screen
        assert code == 13
        # The line was redrawn in place: the raw output holds cursor moves, and more than one state of the bar.
        assert b"\x1b[1F" in term.raw and len(set(re.findall(rb"(\d+)/30 done", term.raw))) > 1
    finally:
        term.close()


def test_watch_shows_the_active_clusters_live_and_q_quits(rsubd: Rsubd, workdir: Path) -> None:
    term = Terminal([str(BIN / "rsub"), "watch"], rsubd.env, cwd=workdir, lines=24)
    try:
        term.until(lambda s: any("(no active clusters)" in line for line in s), 30, "the empty view")
        cluster = submit_shell(rsubd, workdir, "sleep 0.5", "queue 12")
        screen = term.until(lambda s: any(line.startswith(f"{cluster}@local  [##########]  12/12 done") for line in s),
                            90, "the cluster done")
        assert screen[0].startswith("rsub watch: every active cluster") and "(q quits)" in screen[0]
        assert any(line.startswith("  local: last poll ") for line in screen)
        assert "recent events:" in screen
        assert any(re.match(rf"\d\d:\d\d:\d\d  {cluster}\.\d+@local  completed -> retrieved \(exit 0\)", line)
                   for line in screen), term.text()
        term.send(b"q")
        assert term.wait(10) == 0
    finally:
        term.close()


def test_watch_plain_prints_lines_without_escape_codes_and_exit_ends_it(rsubd: Rsubd, workdir: Path) -> None:
    cluster = submit_shell(rsubd, workdir, "exit 0", "queue 4")
    result = rsubd.rsub("watch", "--exit", str(cluster), timeout=90)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert f"{cluster}@local  [##########]  4/4 done  0 run  0 idle" in result.stdout.splitlines()
    assert [line for line in result.stdout.splitlines() if line.startswith(f"{cluster}.3@local: ")][-1] == (
        f"{cluster}.3@local: retrieved (exit 0)")
