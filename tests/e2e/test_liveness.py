"""Unattended means unattended: a burst of early polls never stops polling, and status tells the truth."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import BIN, Rsubd
from tests.support.deadlines import wait_until

pytestmark = pytest.mark.e2e

BURST_CONFIG = """
[[schedd]]
name = "local"
backend = "local"
poll_interval = 1
"""


def test_a_burst_of_submits_and_one_wait_on_all_of_them_brings_every_output_home(short_tmp: Path) -> None:
    """The reproduction of the issue: 30 clusters of 2 back to back, then one `rsub wait` on all 30.

    Before the fix, a poke landing while a poll's coroutine was returning made APScheduler skip
    the poll ("maximum number of running instances reached"), consuming the only date job: rsubd
    never polled again, with jobs stuck in spooling and idle and status saying all was well.
    """
    daemon = Rsubd(short_tmp, BURST_CONFIG)
    daemon.start()
    try:
        clusters = []
        for i in range(30):
            d = short_tmp / f"c{i}"
            d.mkdir()
            (d / "job.sub").write_text(f"executable = /bin/echo\narguments = burst {i} $(Process)\n"
                                       "output = out.$(Process)\nerror = err.$(Process)\nqueue 2\n")
            result = daemon.rsub("submit", "--json", "job.sub", cwd=d)
            assert result.returncode == 0, result.stderr
            clusters.append(json.loads(result.stdout)["cluster"])
        waited = daemon.rsub("wait", "--timeout", "60", *map(str, clusters), timeout=90)
        assert waited.returncode == 0, (waited.stdout[-2000:], waited.stderr, daemon.log.read_text()[-3000:])
        for i in range(len(clusters)):
            for proc in (0, 1):
                assert (short_tmp / f"c{i}" / f"out.{proc}").read_text() == f"burst {i} {proc}\n"
        status = daemon.json("daemon", "status")["schedds"]["local"]
        assert status["stalls"] == 0 and status["schedule_alive"] is True
        assert "maximum number of running instances" not in daemon.log.read_text()
        # And it goes on polling: the schedule is alive after the burst.
        for _ in range(2):
            last = status["last_poll_started_at"]
            status = wait_until(lambda last=last: (x := daemon.json("daemon", "status")["schedds"]["local"])
                                ["last_poll_started_at"] != last and x, 20, "another poll after the burst")
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()


def test_daemon_status_shows_what_is_really_scheduled(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp, """
[[schedd]]
name = "local"
backend = "local"
poll_interval = 30
poll_jitter = 0
""")
    daemon.start()
    try:
        s = wait_until(lambda: (x := daemon.json("daemon", "status")["schedds"]["local"])["last_poll_ended_at"]
                       and x, 15, "the first poll")
        assert s["polling"] is False and s["stalls"] == 0 and s["schedule_alive"] is True
        assert 25 <= s["next_poll_in"] <= 30 and s["poll_bound"] == pytest.approx(35.0)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s["next_poll_at"])
        assert s["seconds_since_poll_ended"] < 6
        text = daemon.rsub("daemon", "status")
        assert text.returncode == 0 and "next poll in" in text.stdout and "stalls 0" in text.stdout, text.stdout
        # A poke moves the real schedule: the next poll is now, then 30 s again.
        time.sleep(1.0)
        poked_at = time.monotonic()
        poked = json.loads(daemon.rsub("poke", "--json").stdout)["schedds"]["local"]
        assert poked["decision"] in ("granted", "queued"), poked
        after = wait_until(lambda: (x := daemon.json("daemon", "status")["schedds"]["local"])
                           ["seconds_since_poll_started"] < time.monotonic() - poked_at and x, 10, "the early poll")
        assert 25 <= after["next_poll_in"] <= 30
    finally:
        daemon.stop()


def test_rsub_wait_outlives_an_rsubd_restart(short_tmp: Path) -> None:
    """`rsub submit ... && rsub wait ...` must not break because rsubd restarted (systemd, a crash)."""
    daemon = Rsubd(short_tmp, BURST_CONFIG)
    daemon.start()
    go = short_tmp / "go"
    try:
        (short_tmp / "job.sh").write_text(f"#!/bin/sh\nwhile [ ! -e {go} ]; do sleep 0.05; done\necho done\n")
        (short_tmp / "job.sh").chmod(0o755)
        (short_tmp / "job.sub").write_text("executable = job.sh\noutput = out.txt\nerror = err.txt\nqueue\n")
        submitted = daemon.rsub("submit", "--json", "job.sub", cwd=short_tmp)
        assert submitted.returncode == 0, submitted.stderr
        cluster = str(json.loads(submitted.stdout)["cluster"])
        waiting = subprocess.Popen([str(BIN / "rsub"), "wait", "--timeout", "90", cluster], env=daemon.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: daemon.states(cluster) != {} and True, 10, "the job in the ledger")
        time.sleep(1.0)  # the wait is under way
        daemon.kill()
        time.sleep(1.0)
        daemon.start()
        go.touch()
        out, err = waiting.communicate(timeout=100)
        assert waiting.returncode == 0, (out, err)
        assert "waiting up to 120 s for it to come back" in err
        assert f"{cluster}.0@local: retrieved" in out
        assert (short_tmp / "out.txt").read_text() == "done\n"
    finally:
        go.touch()
        daemon.stop()
        daemon.kill_leftover_jobs()


def test_rsub_wait_with_no_rsubd_says_so_at_once(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp, BURST_CONFIG)  # never started
    started = time.monotonic()
    result = daemon.rsub("wait", "12")
    assert result.returncode == 3 and time.monotonic() - started < 10
