"""--need-scope and --need-storage-modify on the embedded scheduler: a token of the submit's own, for it and its job."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsubd.tokens.claims import decode
from tests import tokenkit
from tests.support.daemon import BIN, Rsubd, short_root
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e
KIT = str(Path(tokenkit.__file__))

# The schedd has no token of its own (polls and marks go through unchecked); -G dune submits present
# the profile's token, which may query but not submit (SCOPED_BASE has compute.read only). A submit
# that asks for compute.create gets a token that may: so a submit that works went out with its own.
CONFIG = """
log_level = "debug"

[tokens.dune]
kind = "scitoken"
file = "{root}/bt"
group = "dune"
refresh_command = ["{python}", "{kit}", "scoped", "3600"]
refresh_floor = 0

[tokens.ignores]
kind = "scitoken"
file = "{root}/bt2"
refresh_command = ["{python}", "{kit}", "ok", "3600"]

[tokens.fnal]
kind = "idtoken"
file = "{root}/idtoken"

[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.5
"""


@pytest.fixture(scope="module")
def daemon() -> Iterator[Rsubd]:
    root = short_root("rsub-scope-")
    (root / "idtoken").write_text(tokenkit.idtoken(3600) + "\n")
    (root / "idtoken").chmod(0o600)
    d = Rsubd(root, CONFIG.format(root=root, python=sys.executable, kit=KIT))
    d.env["FAKE_REFRESH_TOKENS"] = str(root / "tokens.log")
    d.start()
    wait_until(lambda: all(t["state"] == "ok" for t in d.json("token", "status")["tokens"]), 15, "the tokens")
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


def leftovers(daemon: Rsubd) -> list[Path]:
    """What per-submit tokens rsubd still holds."""
    scoped = daemon.state_dir / "tokens" / "scoped"
    return list(scoped.iterdir()) if scoped.exists() else []


def script(work: Path) -> Path:
    # The job shows what it was given: its token file's name and the token (the test decodes it).
    return write_job(work, "run.sh", 'echo "$BEARER_TOKEN_FILE"\ncat "$BEARER_TOKEN_FILE"\n')


def test_the_submit_and_its_job_get_a_token_with_the_scopes(daemon: Rsubd, workdir: Path) -> None:
    before = (daemon.root / "bt").read_text()
    result = daemon.rsub("submit", "--json", "-G", "dune", "--need-scope", "compute.create",
                         "--need-storage-modify", "/pnfs/dune/scratch/users/alice/out",
                         f"file://{script(workdir)}", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "asking for /dune/scratch/users/alice/out" in result.stderr  # the mount point, corrected
    submitted = json.loads(result.stdout)
    want = ["compute.read", "storage.read:/dune", "compute.create", "storage.modify:/dune/scratch/users/alice/out"]
    assert submitted["scopes"] == want
    waited = daemon.rsub("wait", "--timeout", "60", str(submitted["cluster"]))
    assert waited.returncode == 0, waited.stdout + waited.stderr
    out = (Path(submitted["output_dir"]) / f"{submitted['cluster']}.0.out").read_text().split()
    assert out[0].endswith("/rsub_bearer_token")  # in the job's own scratch directory
    # The job's token has exactly the job scope: the broad storage.modify of the profile's token is gone.
    assert list(decode(out[1]).scopes) == want
    # The profile's own token is untouched, and the submit's copy is gone from rsubd's state.
    assert (daemon.root / "bt").read_text() == before
    assert leftovers(daemon) == []
    assert not list(Path(submitted["output_dir"]).glob("rsub_bearer_token*"))  # it does not come back either
    log = daemon.log.read_text()
    assert "token.scoped_fetched" in log and out[1] not in log and out[1].split(".")[1] not in log
    # Its token was for that submit alone: rsub resubmit cannot run it again, and says what will.
    again = daemon.rsub("resubmit", f"{submitted['cluster']}.0")
    assert again.returncode == 5 and "its token was for that submit alone" in again.stderr, again.stderr


def test_a_token_narrowed_below_write_is_refused_by_the_schedd(daemon: Rsubd, workdir: Path) -> None:
    # The profile's own token may not submit: what went through above went with the submit's own.
    own = daemon.rsub("submit", "-G", "dune", f"file://{script(workdir)}", cwd=workdir)
    assert own.returncode == 8 and "submit needs WRITE" in own.stderr, own.stderr
    status = daemon.rsub("token", "status", "--json")
    assert status.returncode == 8 and json.loads(status.stdout)["tokens"][0]["state"] == "refused"
    assert daemon.rsub("token", "refresh", "dune").returncode == 0  # a new token clears the refusal
    plain = daemon.rsub("submit", "--token", "dune", "--need-scope", "storage.read:/dune/x",
                        f"file://{script(workdir)}", cwd=workdir)
    assert plain.returncode == 8, plain.stderr
    assert "refused the token fetched for this submit's scopes" in plain.stderr
    assert "submit needs WRITE" in plain.stderr
    assert daemon.json("token", "status")["tokens"][0]["state"] == "ok"  # the profile's own is not in question


@pytest.mark.parametrize(("args", "code", "message"), [
    (["-G", "dune", "--need-storage-modify", "/nova/out"], 5, "is not within what the profile's token allows "
                                                              "(storage.modify:/dune/scratch/users/alice)"),
    (["--token", "fnal", "--need-scope", "storage.read:/x"], 5, "token profile 'fnal' holds an IDTOKEN"),
    (["--need-scope", "storage.read:/x"], 5, "this submit uses none"),
    (["--token", "ignores", "--need-scope", "storage.read:/x"], 8, "must honour $RSUB_TOKEN_SCOPES"),
])
def test_what_cannot_have_its_scopes_is_refused_and_nothing_is_sent(daemon: Rsubd, workdir: Path, args: list[str],
                                                                    code: int, message: str) -> None:
    jobs = len(daemon.json("status")["jobs"])
    result = daemon.rsub("submit", *args, f"file://{script(workdir)}", cwd=workdir)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "nothing was submitted" in result.stderr
    assert len(daemon.json("status")["jobs"]) == jobs
    assert leftovers(daemon) == []


def test_a_scoped_submit_cut_before_its_spool_is_reported_not_resubmitted_without_its_token(
        short_tmp: Path, workdir: Path) -> None:
    from rsubd.platform.crash import ENV

    d = Rsubd(short_tmp, CONFIG.format(root=short_tmp, python=sys.executable, kit=KIT))
    (short_tmp / "idtoken").write_text(tokenkit.idtoken(3600) + "\n")
    (short_tmp / "idtoken").chmod(0o600)
    d.start(extra_env={ENV: "submit.after_record"})
    wait_until(lambda: d.rsub("token", "status").returncode == 0, 15, "the tokens")
    client = subprocess.Popen([str(BIN / "rsub"), "submit", "-G", "dune", "--need-scope", "compute.create",
                               f"file://{script(workdir)}"], cwd=workdir, env=d.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert d.proc is not None
    d.proc.wait(timeout=30)  # killed itself between the schedd's submit and the spool
    assert leftovers(d)  # the submit's token was still on disk
    d.start(note="restarted")
    try:
        _, err = client.communicate(timeout=90)
        assert client.returncode == 7, err
        assert "it had a token of its own (--need-scope), which rsubd does not keep" in err
        assert leftovers(d) == []  # swept at start
        jobs = d.json("status")["jobs"]
        assert jobs and {j["state"] for j in jobs} == {"failed"}
    finally:
        d.stop()
