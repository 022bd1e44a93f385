"""rsubd's log: where it goes by itself (a file, the journal, a terminal), --log-file and log_file, the per-poll
event's level, rotation, and `rsub daemon log` reading and following it."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import BIN, Rsubd
from tests.support.deadlines import wait_until

pytestmark = pytest.mark.e2e

FAST = """
[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.2
early_poll_every = 0.1
"""


def events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a log file (every line must be one)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def submit_sleep(daemon: Rsubd, work: Path, seconds: float) -> str:
    work.mkdir(exist_ok=True)
    (work / "job.sub").write_text(f"executable = /bin/sleep\narguments = {seconds:g}\nqueue\n")
    result = daemon.rsub("submit", "--json", "job.sub", cwd=work)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["cluster"])


def test_the_log_is_a_private_file_in_the_state_dir_when_stderr_is_not_a_terminal(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp, log_to_stderr=False)
    daemon.start()
    try:
        log = daemon.log_file
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
        assert events(log)[0]["event"] == "rsubd.started"
        where = daemon.json("daemon", "status")["log"]
        assert where == {"to": "file", "path": str(log), "level": "info", "journal_command": None}
        text = daemon.rsub("daemon", "status")
        assert f"log: {log}, level info" in text.stdout
    finally:
        daemon.stop()
    assert daemon.log.read_text() == ""  # nothing on stderr: it all went to the file
    assert [e["event"] for e in events(daemon.log_file)][-2:] == ["rsubd.stopping", "rsubd.stopped"]
    # rsubd is gone: rsub finds its log in the default place, and says so.
    shown = daemon.rsub("daemon", "log", "-n", "2")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 and lines[0].split()[2:4] == ["info", "rsubd.stopping"]
    assert lines[1].split()[2:] == ["info", "rsubd.stopped"]
    assert f"rsubd is not running; its log is {daemon.log_file}" in shown.stderr


def test_log_file_in_the_config_and_on_the_command_line(short_tmp: Path) -> None:
    configured = short_tmp / "logs" / "from-config.log"  # its directory is made, 0700
    daemon = Rsubd(short_tmp, f'log_file = "{configured}"\n', log_to_stderr=False)
    daemon.start()
    try:
        assert daemon.json("daemon", "status")["log"]["path"] == str(configured)
        assert daemon.rsub("daemon", "log", "-n", "1").stdout.split()[2:4] == ["info", "rsubd.started"]
    finally:
        daemon.stop()
    assert stat.S_IMODE(configured.stat().st_mode) == 0o600
    assert stat.S_IMODE(configured.parent.stat().st_mode) == 0o700
    assert not daemon.log_file.exists()
    # Not running: rsub reads log_file from the same config.
    assert daemon.rsub("daemon", "log", "-n", "1").stdout.split()[2:] == ["info", "rsubd.stopped"]

    flag = short_tmp / "from-flag.log"
    daemon.args = ["--log-file", str(flag)]  # the command line wins over the config
    size = configured.stat().st_size
    daemon.start()
    try:
        assert daemon.json("daemon", "status")["log"]["path"] == str(flag)
    finally:
        daemon.stop()
    assert [e["event"] for e in events(flag)] == ["rsubd.started", "rsubd.stopping", "rsubd.stopped"]
    assert configured.stat().st_size == size


def test_poll_events_are_debug_unless_the_poll_changed_something(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp, FAST, log_to_stderr=False)
    daemon.start()
    try:
        cluster = submit_sleep(daemon, short_tmp / "work", 4)
        assert daemon.rsub("wait", "--timeout", "60", cluster).returncode == 0
        # Until its mark is sent the job is tracked, and each poll queries: wait for the job to leave.
        wait_until(lambda: daemon.json("daemon", "status")["schedds"]["local"]["edit_calls"] >= 1, 30, "the mark")
        polls = daemon.json("daemon", "status")["schedds"]["local"]["polls"]
    finally:
        daemon.stop()
    logged = [e for e in events(daemon.log_file) if e["event"] == "poll"]
    assert polls >= 15  # about 4 s of a running job at 0.2 s: polls that found nothing new
    # Logged: the first poll, and those that changed a job (spooling -> idle -> running -> completed)
    # or called the schedd for more than the query (the retrieve, the mark).
    assert 2 <= len(logged) <= 8, [(e["changed"], e["poll_retrieve_calls"], e["poll_edit_calls"]) for e in logged]
    assert {e["level"] for e in logged} == {"info"}
    for e in logged[1:]:
        assert e["changed"] or e["poll_retrieve_calls"] or e["poll_edit_calls"] or e["poll_history_calls"], e
    assert sum(e["poll_retrieve_calls"] for e in logged) == 1 and sum(e["poll_edit_calls"] for e in logged) == 1

    # --log-level debug shows every poll: as many poll events as the polls rsubd counted.
    daemon.args = ["--log-level", "debug"]
    daemon.log_file.unlink()
    daemon.start()
    try:
        cluster = submit_sleep(daemon, short_tmp / "work", 2)
        assert daemon.rsub("wait", "--timeout", "60", cluster).returncode == 0
        wait_until(lambda: daemon.json("daemon", "status")["schedds"]["local"]["edit_calls"] >= 1, 30, "the mark")
        assert daemon.json("daemon", "status")["log"]["level"] == "debug"
    finally:
        daemon.stop()
    logged = [e for e in events(daemon.log_file) if e["event"] == "poll"]
    assert len(logged) == logged[-1]["polls"] >= 8
    assert "debug" in {e["level"] for e in logged}


def test_daemon_log_prints_the_last_lines_and_follows(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp, FAST, log_to_stderr=False)
    daemon.start()
    follower = None
    try:
        one = daemon.rsub("daemon", "log", "-n", "1")
        assert one.returncode == 0 and len(one.stdout.splitlines()) == 1
        assert one.stdout.split()[2:4] == ["info", "rsubd.started"]
        assert "socket=" in one.stdout and "schedds=[\"local\"]" in one.stdout
        raw = daemon.rsub("daemon", "log", "--json")
        assert [json.loads(line)["event"] for line in raw.stdout.splitlines()] == ["rsubd.started"]

        out, err = short_tmp / "follow.out", short_tmp / "follow.err"
        with open(out, "wb") as sink, open(err, "wb") as errors:
            follower = subprocess.Popen([str(BIN / "rsub"), "daemon", "log", "-f", "-n", "0"], env=daemon.env,
                                        stdout=sink, stderr=errors)
        time.sleep(0.5)  # the follower has read to the end of the log: -n 0 prints nothing of what was there
        assert out.read_text() == ""
        cluster = submit_sleep(daemon, short_tmp / "work", 0)
        wait_until(lambda: "cluster.submitted" in out.read_text(), 15, "the follower to print the submit")
        assert daemon.rsub("wait", "--timeout", "60", cluster).returncode == 0
        wait_until(lambda: "jobs.retrieved" in out.read_text(), 15, "the follower to print the retrieve")
        assert follower.poll() is None  # still following
    finally:
        if follower is not None:
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=10) == 130
            assert err.read_text() == ""
        daemon.stop()
        daemon.kill_leftover_jobs()
    lines = out.read_text().splitlines()
    assert [line.split()[3] for line in lines][:1] == ["cluster.submitted"]
    assert all(line.split()[2] in ("info", "warning") for line in lines), lines


def test_the_log_rotates_by_size_and_follow_goes_on_in_the_new_file(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp, FAST + "\n", log_to_stderr=False)
    cfg = short_tmp / "config" / "rsub" / "config.toml"
    cfg.write_text("log_level = \"debug\"\nlog_max_bytes = 4096\nlog_backups = 2\n" + cfg.read_text())
    daemon.start()
    out = short_tmp / "follow.out"
    with open(out, "wb") as sink:
        follower = subprocess.Popen([str(BIN / "rsub"), "daemon", "log", "-f", "-n", "0", "--json"], env=daemon.env,
                                    stdout=sink)
    try:
        time.sleep(0.5)
        submit_sleep(daemon, short_tmp / "work", 5)  # about 25 debug poll lines of 400 bytes: several rotations
        backups = [daemon.log_file.with_name(f"rsubd.log.{n}") for n in (1, 2, 3)]
        wait_until(lambda: sum(e["event"] == "poll" for e in events(backups[1])) if backups[1].exists() else 0,
                   30, "two rotations")
        time.sleep(2)  # and more
        daemon.stop()
        wait_until(lambda: "rsubd.stopped" in out.read_text(), 10, "the follower to see rsubd stop")
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        daemon.stop()
        daemon.kill_leftover_jobs()
    files = [daemon.log_file, *backups[:2]]
    assert not backups[2].exists()  # log_backups = 2
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert f.stat().st_size <= 4096 + 1024  # rotated before the line that would pass the limit (one line over)
    followed = [json.loads(line) for line in out.read_text().splitlines()]
    polls = [e["polls"] for e in followed if e["event"] == "poll"]
    # Across every rotation the follower lost no line: the poll counter runs on without a gap ...
    assert len(polls) >= 15 and polls == list(range(polls[0], polls[0] + len(polls)))
    # ... and it saw more than the files still hold (the oldest were rotated away).
    kept = sum(len(f.read_text().splitlines()) for f in files)
    assert len(followed) > kept
    # -n reaches back into the rotated files when the current one is short.
    wanted = min(kept, len(daemon.log_file.read_text().splitlines()) + 5)
    shown = daemon.rsub("daemon", "log", "-n", str(wanted), "--json").stdout.splitlines()
    assert len(shown) == wanted and json.loads(shown[-1])["event"] == "rsubd.stopped"


def test_on_the_journal_rsubd_keeps_to_stderr_and_rsub_says_so(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp, log_to_stderr=False)
    daemon.log.touch()
    st = daemon.log.stat()  # the launcher's stderr file stands in for the journal's stream
    daemon.start(extra_env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    try:
        assert daemon.json("daemon", "status")["log"]["to"] == "journal"
        shown = daemon.rsub("daemon", "log", "-f")
        assert shown.returncode == 1
        assert "rsubd logs to the systemd journal, not to a file; read it with: journalctl --user -u" in shown.stderr
        assert shown.stderr.rstrip().endswith("-f -n 50")
    finally:
        daemon.stop()
    assert [e["event"] for e in events(daemon.log)] == ["rsubd.started", "rsubd.stopping", "rsubd.stopped"]
    assert not daemon.log_file.exists()

    # A JOURNAL_STREAM left over from a parent (another stream) is not the journal: the log goes to the file.
    (short_tmp / "other").touch()
    other = (short_tmp / "other").stat()
    daemon.start(extra_env={"JOURNAL_STREAM": f"{other.st_dev}:{other.st_ino}"})
    daemon.stop()
    assert events(daemon.log_file)[0]["event"] == "rsubd.started"


def read_terminal(master: int, until: bytes, timeout: float = 15) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while until not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
    return seen


@pytest.mark.parametrize("no_color", [True, False])
def test_on_a_terminal_the_log_is_readable_text(short_tmp: Path, no_color: bool) -> None:
    daemon = Rsubd(short_tmp, log_to_stderr=False)
    env = {**daemon.env, "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(BIN / "rsubd")], env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        seen = read_terminal(master, b"rsubd.started")
        wait_until(daemon.ping, 15, "rsubd to answer")
        shown = daemon.rsub("daemon", "log")
        assert shown.returncode == 1 and "rsubd logs to its standard error" in shown.stderr
        daemon.rsub("daemon", "stop")
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = seen.decode(errors="replace")
    assert "rsubd.started" in text and '"event"' not in text  # console lines, not JSON
    assert ("\x1b[" in text) is not no_color
    assert not daemon.log_file.exists()
