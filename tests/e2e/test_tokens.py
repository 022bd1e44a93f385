"""rsubd keeps tokens fresh, says when a person must act, and never shows a token's value."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import tokenkit
from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e
KIT = str(Path(tokenkit.__file__))


def token_config(root: Path, profile: str, *, schedd_token: bool = True) -> str:
    token_line = 'token = "dune"' if schedd_token else ""
    return f"""
log_level = "debug"

[tokens.dune]
kind = "scitoken"
file = "{root}/bt"
group = "dune"
{profile}

[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.5
{token_line}
"""


def command(mode: str, lifetime: float = 3600) -> str:
    return f'refresh_command = ["{sys.executable}", "{KIT}", "{mode}", "{lifetime}"]'


def start(root: Path, profile: str) -> Rsubd:
    daemon = Rsubd(root, token_config(root, profile))
    daemon.env["FAKE_REFRESH_LOG"] = str(root / "refreshes.log")
    daemon.env["FAKE_REFRESH_TOKENS"] = str(root / "tokens.log")
    daemon.start()
    return daemon


def token_status(daemon: Rsubd) -> dict[str, object]:
    result = daemon.rsub("token", "status", "--json")
    status: dict[str, object] = json.loads(result.stdout)["tokens"][0]
    # Every look checks the exit code too: 8 ("a person must act") exactly when there is an ACTION NEEDED.
    assert result.returncode == (8 if status["action_needed"] else 0), (result.returncode, status)
    return status


def submit_trivial_job(daemon: Rsubd, workdir: Path) -> subprocess.CompletedProcess[str]:
    write_job(workdir, "job.sh", "true\n")
    (workdir / "job.sub").write_text("executable = job.sh\nqueue\n")
    return daemon.rsub("submit", "job.sub", cwd=workdir)


def assert_no_token_leaked(daemon: Rsubd, *outputs: str) -> None:
    written = (daemon.root / "tokens.log").read_text().split() if (daemon.root / "tokens.log").exists() else []
    haystack = daemon.log.read_text() + "".join(outputs)
    for token in written:
        assert token not in haystack
        assert token.split(".")[1] not in haystack


def test_a_30_second_token_is_refreshed_again_and_again_while_jobs_flow(short_tmp: Path) -> None:
    root = short_tmp
    daemon = start(root, f"{command('ok', 30)}\nrefresh_margin = 24\nrefresh_floor = 2")
    work = root / "work"
    work.mkdir()
    write_job(work, "job.sh", 'echo "job $1"\n')
    (work / "job.sub").write_text("executable = job.sh\narguments = $(Cluster)\noutput = out_$(Cluster).txt\n"
                                  "queue\n")
    outputs: list[str] = []
    clusters = []
    try:
        # Long enough that the first token (30 s) expires: every later call needs a refreshed one.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            result = daemon.rsub("submit", "--json", "job.sub", cwd=work)
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout)
            clusters.append(json.loads(result.stdout)["cluster"])
            time.sleep(4)
        waited = daemon.rsub("wait", "--timeout", "60", *map(str, clusters))
        assert waited.returncode == 0, waited.stderr
        for cluster in clusters:
            assert (work / f"out_{cluster}.txt").read_text() == f"job {cluster}\n"
        status = daemon.json("daemon", "status")
        outputs.append(json.dumps(status) + json.dumps(token_status(daemon)))
        local = status["schedds"]["local"]
        assert local["errors"] == 0, local["last_error"]
        assert local["token"]["state"] in ("ok", "expiring")
        refreshes = (root / "refreshes.log").read_text().splitlines()
        assert len(refreshes) >= 6, refreshes  # the first fetch at start, then every ~6 s
        assert token_status(daemon)["generation"] >= 6
    finally:
        daemon.stop()
    assert_no_token_leaked(daemon, *outputs)


def test_a_failing_refresh_refuses_submits_and_says_what_to_run(short_tmp: Path, workdir: Path) -> None:
    daemon = start(short_tmp, f"{command('fail')}\nrefresh_floor = 1")
    try:
        wait_until(lambda: token_status(daemon)["failures"], 10, "the first refresh to fail")
        status = token_status(daemon)
        assert status["state"] == "missing"
        assert "exited with status 1" in str(status["last_error"])
        refused = submit_trivial_job(daemon, workdir)
        assert refused.returncode == 8, refused.stderr
        assert "nothing was submitted" in refused.stderr and "rsub token refresh dune" in refused.stderr
        assert daemon.json("status")["jobs"] == []
        # Three failures in a row ask for a person, in both status views.
        wait_until(lambda: token_status(daemon)["failures"] >= 3, 30, "three failures")
        assert "failed 3 times" in str(token_status(daemon)["action_needed"])
        assert "ACTION NEEDED" in daemon.rsub("daemon", "status").stdout
        # A manual refresh that runs fails with exit 8 (one the floor declines is test_a_rate_limited_...).
        manual = daemon.rsub("token", "refresh", "dune")
        assert manual.returncode == (10 if "rate limited" in manual.stdout else 8), manual.stdout
        assert "not refreshed" in manual.stdout and "ACTION NEEDED" in manual.stderr
    finally:
        daemon.stop()


def test_a_rate_limited_refresh_says_try_again_later_with_exit_10(short_tmp: Path) -> None:
    daemon = start(short_tmp, f"{command('ok')}\nrefresh_floor = 3600")
    try:
        wait_until(lambda: token_status(daemon)["state"] == "ok", 10, "the first refresh")
        assert daemon.rsub("token", "status").returncode == 0  # nothing to do: exit 0
        manual = daemon.rsub("token", "refresh", "dune")
        # Nothing for a person to do (the token is fine): not 8, but "not now".
        assert manual.returncode == 10, (manual.stdout, manual.stderr)
        assert "dune: not refreshed: rate limited" in manual.stdout and "try again in" in manual.stdout
        assert "ACTION NEEDED" not in manual.stderr
        as_json = daemon.rsub("token", "refresh", "dune", "--json")
        assert as_json.returncode == 10
        assert json.loads(as_json.stdout)["results"]["dune"]["rate_limited"] is True
    finally:
        daemon.stop()


def test_a_login_wait_is_shown_and_the_daemon_stays_responsive(short_tmp: Path) -> None:
    daemon = start(short_tmp, f"{command('login')}\nrefresh_timeout = 60")
    try:
        status = wait_until(lambda: (s := token_status(daemon))["login_url"] and s, 10, "the login URL")
        assert status["login_url"] == tokenkit.LOGIN_URL
        assert status["state"] == "needs_login"
        assert tokenkit.LOGIN_URL in str(status["action_needed"])
        started = time.monotonic()
        assert daemon.rsub("ping").returncode == 0
        assert time.monotonic() - started < 5
        shown = daemon.rsub("token", "status")
        assert "ACTION NEEDED: log in: open https://vault.example.org" in shown.stdout
        assert shown.returncode == 8
    finally:
        daemon.stop()


def test_a_refreshed_token_with_an_expired_one_left_behind_is_refused(short_tmp: Path, workdir: Path) -> None:
    (short_tmp / "bt").write_text(tokenkit.scitoken(-5) + "\n")
    (short_tmp / "bt").chmod(0o600)
    daemon = start(short_tmp, "")  # no refresh command and no vault: only a person can help
    try:
        status = token_status(daemon)
        assert status["state"] == "expired"
        assert "htgettoken -a <vault>" in str(status["action_needed"])
        refused = submit_trivial_job(daemon, workdir)
        assert refused.returncode == 8 and "expired" in refused.stderr
        # The user fixes it by hand; a refresh reads the new file and the submit goes through.
        (short_tmp / "bt").write_text(tokenkit.scitoken(3600) + "\n")
        assert daemon.rsub("token", "refresh", "dune").returncode == 0
        ok = daemon.rsub("submit", "job.sub", cwd=workdir)
        assert ok.returncode == 0, ok.stderr
    finally:
        daemon.stop()


IDTOKEN_CONFIG = """
[tokens.fnal]
kind = "idtoken"
file = "{root}/tokens.d/fnal"

[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.5
token = "fnal"
"""


def test_token_request_prints_the_commands_when_the_tool_is_missing(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp, IDTOKEN_CONFIG.format(root=short_tmp))
    daemon.env["PATH"] = str(Path(sys.executable).parent)  # no condor_token_request anywhere
    daemon.start()
    try:
        status = token_status(daemon)
        assert status["state"] == "missing" and "rsub token request fnal" in str(status["action_needed"])
        shown = daemon.rsub("token", "request")
        assert shown.returncode == 0, shown.stderr
        assert "condor_token_request -identity" in shown.stdout and "-authz READ -authz WRITE" in shown.stdout
        assert f"to {short_tmp}/tokens.d/fnal here" in shown.stdout
    finally:
        daemon.stop()


def test_token_request_runs_the_tool_and_rsubd_takes_the_token(short_tmp: Path, workdir: Path) -> None:
    bin_dir = short_tmp / "bin"
    bin_dir.mkdir()
    # A stand-in for condor_token_request: writes a token named by -token into SEC_TOKEN_DIRECTORY.
    fake = bin_dir / "condor_token_request"
    fake.write_text(f"""#!{sys.executable}
import os, sys
sys.path.insert(0, {str(Path(KIT).parent)!r})
import tokenkit
args = sys.argv[1:]
assert args[:2] == ["-identity", os.environ["USER_AT_FS"]], args
directory = os.environ["_condor_SEC_TOKEN_DIRECTORY"]
os.makedirs(directory, exist_ok=True)
with open(os.path.join(directory, args[args.index("-token") + 1]), "w") as f:
    f.write(tokenkit.idtoken(3600) + "\\n")
print("Token request enqueued; approved", file=sys.stderr)
""")
    fake.chmod(0o755)
    daemon = Rsubd(short_tmp, IDTOKEN_CONFIG.format(root=short_tmp))
    daemon.env["PATH"] = f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"
    daemon.env["USER_AT_FS"] = f"{getpass.getuser()}@fs"
    daemon.start()
    try:
        assert submit_trivial_job(daemon, workdir).returncode == 8
        got = daemon.rsub("token", "request", "fnal")
        assert got.returncode == 0, got.stderr + got.stdout
        token_file = short_tmp / "tokens.d" / "fnal"
        assert token_file.stat().st_mode & 0o777 == 0o600
        status = token_status(daemon)
        assert status["state"] == "ok" and status["subject"] == "alice@fs"
        assert submit_trivial_job(daemon, workdir).returncode == 0
    finally:
        daemon.stop()
