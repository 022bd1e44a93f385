"""What a user sees when something is wrong: one line, a distinct exit code, nothing lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import BIN, Rsubd
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e


def test_no_daemon_exit_3(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp)  # never started
    result = daemon.rsub("status")
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "rsubd is not running" in result.stderr


def test_unknown_job_exit_4(rsubd: Rsubd) -> None:
    result = rsubd.rsub("status", "999.0")
    assert result.returncode == 4
    assert "no job 999.0" in result.stderr and result.stderr.count("\n") == 1


def test_bad_id_is_a_usage_error(rsubd: Rsubd) -> None:
    result = rsubd.rsub("status", "x.y")
    assert result.returncode == 2
    assert "not a job id" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("executable = missing.sh\nqueue\n", "does not exist"),
        ("executable = job.sh\ntransfer_input_files = nope.txt\nqueue\n", "nope.txt does not exist"),
        ("executable = job.sh\nthis is not a command\nqueue\n", "line 2"),
        ("executable = job.sh\n", "queue"),
        ("executable = job.sh\ninitialdir = /nonexistent/dir\nqueue\n", "initialdir"),
        ("executable = job.sh\noutput = /proc/nope/x.out\nqueue\n",
         "output /proc/nope/x.out could not be retrieved: cannot write /proc/nope: (errno 2)"),
        ("executable = job.sh\nerror = job.sh/x.err\nqueue\n", "(errno 20) Not a directory"),
        ("executable = job.sh\ntransfer_output_files = r.txt\ntransfer_output_remaps = \"r.txt = /proc/x/r\"\nqueue\n",
         "/proc/x/r could not be retrieved"),
    ],
)
def test_bad_submit_exit_5_and_nothing_submitted(rsubd: Rsubd, workdir: Path, text: str, expected: str) -> None:
    write_job(workdir, "job.sh", "true\n")
    (workdir / "bad.sub").write_text(text)
    result = rsubd.rsub("submit", "bad.sub", cwd=workdir)
    assert result.returncode == 5, result.stderr
    assert expected in result.stderr
    assert result.stderr.count("\n") == 1
    assert rsubd.json("status")["jobs"] == []


def test_unreadable_submit_file_exit_5(rsubd: Rsubd, workdir: Path) -> None:
    result = rsubd.rsub("submit", "no-such-file.sub", cwd=workdir)
    assert result.returncode == 5
    assert "cannot read submit file" in result.stderr


def test_bad_config_is_refused_naming_the_key(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp, config='[[schedd]]\nname = "x"\nbackend = "slurm"\n')
    proc = subprocess.run([str(BIN / "rsubd")], env=daemon.env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "backend" in proc.stderr and "'local'" in proc.stderr


def test_second_daemon_is_refused(rsubd: Rsubd) -> None:
    proc = subprocess.run([str(BIN / "rsubd")], env=rsubd.env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "already running" in proc.stderr
    assert rsubd.rsub("ping").returncode == 0  # the first one is unharmed


def test_socket_and_state_are_private(rsubd: Rsubd) -> None:
    socket = rsubd.root / "run" / "rsub" / "rsubd.sock"
    assert socket.stat().st_mode & 0o777 == 0o600
    assert socket.parent.stat().st_mode & 0o777 == 0o700
    assert rsubd.state_dir.stat().st_mode & 0o777 == 0o700
    assert (rsubd.state_dir / "ledger.db").stat().st_mode & 0o777 == 0o600


def test_daemon_status_json(rsubd: Rsubd) -> None:
    status = rsubd.json("daemon", "status")
    local = status["schedds"]["local"]
    for key in ("polls", "queries", "history_calls", "retrieve_calls", "edit_calls", "errors"):
        assert isinstance(local[key], int)
    assert local["poll_interval"] == 2.0
    assert status["version"] == 1
