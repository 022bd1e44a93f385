"""The embedded scheduler finds its starters by command line, whatever rsubd wrote down or did not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rsubd.backends.local import runner
from tests.support.deadlines import wait_until


def _starter(jobdir: Path) -> subprocess.Popen[bytes]:
    """A real starter running `sleep 30` for this job directory, not recorded anywhere else."""
    sandbox = jobdir / "sandbox"
    sandbox.mkdir(parents=True)
    (jobdir / "job.json").write_text(json.dumps({"sandbox": str(sandbox), "executable": "/bin/sleep",
                                                 "arguments": ["30"], "environment": {"PATH": "/bin:/usr/bin"},
                                                 "stdin": None, "before": {}}))
    starter = subprocess.Popen([sys.executable, "-m", runner.STARTER, str(jobdir)], start_new_session=True)
    # Looked for at once, a starter was sometimes missed (its command line read back empty): wait until it runs
    # its job (it writes starter.json then). rsubd looks for starters only after a restart, long after any start.
    wait_until(lambda: (jobdir / "starter.json").exists(), 10, "the starter to run its job")
    return starter


def test_a_starter_is_found_by_its_job_directory_and_killed_with_its_job(tmp_path: Path) -> None:
    one, two = tmp_path / "spool" / "1" / "0", tmp_path / "spool" / "1" / "1"
    first = _starter(one)
    try:
        assert runner.ever_launched(one) and not runner.ever_launched(two)
        found = runner.live_starters()
        assert found.get(runner.where(one)) == [first.pid]
        assert runner.where(two) not in found
        runner.kill_starters(found[runner.where(one)])
        assert first.wait(timeout=5) == -9
        assert runner.where(one) not in runner.live_starters()
        assert not (one / "result.json").exists()  # killed: no word from it, ever
    finally:
        if first.poll() is None:
            first.kill()


def test_kill_without_the_process_object_finds_the_starter_and_clears_the_sandbox(tmp_path: Path) -> None:
    jobdir = tmp_path / "spool" / "3" / "0"
    starter = _starter(jobdir)
    try:
        runner.kill(None, jobdir, jobdir / "sandbox")  # as after a restart: nothing but the directory to go on
        assert starter.wait(timeout=5) == -9
        assert not (jobdir / "sandbox").exists()
    finally:
        if starter.poll() is None:
            starter.kill()


def test_a_starter_is_found_whichever_way_its_directory_was_reached(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    real.mkdir()
    starter = _starter(tmp_path / "link" / "spool" / "4" / "0")  # started through a symlink
    try:
        assert runner.live_starters().get(runner.where(real / "spool" / "4" / "0")) == [starter.pid]
    finally:
        starter.kill()
        starter.wait()
