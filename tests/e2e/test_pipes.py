"""`rsub ... | head -1` and friends: a reader that goes away ends rsub quietly, as coreutils end (issue 14, 2.2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import BIN, Rsubd

pytestmark = pytest.mark.e2e


def _into_closed_pipe(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str]:
    """Run rsub with its stdout a pipe whose reader exits at once (`| true`): its exit code and its stderr."""
    shell = subprocess.run(["bash", "-c", '"$@" 2>err.txt | true; echo "${PIPESTATUS[0]}"', "pipe", str(BIN / "rsub"),
                            *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    return int(shell.stdout.strip()), Path(cwd or ".", "err.txt").read_text()


def test_a_reader_that_goes_away_ends_rsub_quietly(short_tmp: Path) -> None:
    code, err = _into_closed_pipe(["completion", "bash"], cwd=short_tmp)
    assert (code, err) == (141, "")  # 128 + SIGPIPE, what a shell sees of `cat big | true`; no traceback


def test_status_and_submit_into_a_closed_pipe_say_nothing(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp)
    daemon.start()
    try:
        (short_tmp / "job.sub").write_text("executable = /bin/true\nqueue 200\n")
        assert daemon.rsub("submit", "job.sub", cwd=short_tmp).returncode == 0
        for args in (["status"], ["q"], ["submit", "job.sub"]):
            code, err = _into_closed_pipe(args, env=daemon.env, cwd=short_tmp)
            assert "Traceback" not in err and "BrokenPipe" not in err, (args, err)
            assert code in (0, 141), (args, code, err)  # 0 when all of it fitted in the pipe before it closed
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()
