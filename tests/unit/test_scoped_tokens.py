"""A token of one submit's own (--need-scope): the job scope jobsub_lite's way, the fetch, and the schedd's check."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from rsub.wire.vocabulary import JOB_TOKEN, ErrorCode, RequestError
from rsubd.backends.local.auth import TokenCheckedSchedd, authorizations
from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import ErrorKind, ScheddError, SubmitRequest
from rsubd.tokens import scoped
from rsubd.tokens.claims import TokenProfile, decode
from rsubd.tokens.manager import Credential, TokenManager
from tests import tokenkit

KIT = str(Path(tokenkit.__file__))


def profile(tmp_path: Path, mode: str | None = "scoped", **kw: object) -> TokenProfile:
    command = (sys.executable, KIT, mode, "3600") if mode else None
    return TokenProfile(name="dune", kind="scitoken", file=tmp_path / "bt", refresh_command=command,
                        refresh_floor=0.0, refresh_timeout=10.0, group="dune", **kw)  # type: ignore[arg-type]


def manager(tmp_path: Path, p: TokenProfile) -> TokenManager:
    (tmp_path / "bt").write_text(tokenkit.scitoken(3600, scope=tokenkit.SCOPED_BASE) + "\n")
    (tmp_path / "bt").chmod(0o600)
    return TokenManager({p.name: p}, private_dir=tmp_path / "private")


def test_the_job_scope_drops_storage_modify_and_adds_what_is_asked_within_it() -> None:
    have = ("compute.read", "storage.read:/dune", "storage.modify:/dune/scratch/users/alice")
    assert scoped.job_scopes(have, ["storage.modify:/dune/scratch/users/alice/out/../run1", "compute.create"]) == (
        "compute.read", "storage.read:/dune", "storage.modify:/dune/scratch/users/alice/run1", "compute.create")
    assert scoped.job_scopes(have, []) == ("compute.read", "storage.read:/dune")  # no modify unless asked
    with pytest.raises(RequestError) as e:
        scoped.job_scopes(have, ["storage.modify:/dune/scratch/users/bob"])
    assert e.value.code == ErrorCode.BAD_SUBMIT
    assert "allows (storage.modify:/dune/scratch/users/alice)" in e.value.message


def test_a_refresh_command_is_asked_for_the_scopes_and_the_profiles_token_stays(tmp_path: Path) -> None:
    m = manager(tmp_path, profile(tmp_path))
    before = (tmp_path / "bt").read_text()
    token, cred = m.scoped("dune", ["compute.create", "storage.modify:/dune/scratch/users/alice/out"], key="r1")
    assert token.path == tmp_path / "private" / "scoped" / "r1" / JOB_TOKEN
    assert token.path.stat().st_mode & 0o777 == 0o600 and token.path.parent.stat().st_mode & 0o077 == 0
    got = decode(token.path.read_text())
    assert got.scopes == ("compute.read", "storage.read:/dune", "compute.create",
                          "storage.modify:/dune/scratch/users/alice/out")
    assert cred.token_file == token.path and cred.env["_condor_SCITOKENS_FILE"] == str(token.path)
    assert (tmp_path / "bt").read_text() == before
    scoped.discard(token)
    assert not token.path.parent.exists()


def test_a_command_that_ignores_the_scopes_is_refused_with_exit_8(tmp_path: Path) -> None:
    m = manager(tmp_path, profile(tmp_path, mode="ok"))
    with pytest.raises(RequestError) as e:
        m.scoped("dune", ["storage.create:/dune/x"], key="r2")
    assert e.value.code == ErrorCode.TOKEN
    assert "lacks the scopes storage.create:/dune/x" in e.value.message and "$RSUB_TOKEN_SCOPES" in e.value.message
    assert not (tmp_path / "private" / "scoped" / "r2").exists()


@pytest.mark.parametrize(("p", "message"), [
    (TokenProfile(name="fnal", kind="idtoken", file=Path("/nonexistent")), "holds an IDTOKEN"),
    (TokenProfile(name="dune", kind="scitoken", file=Path("/nonexistent")), "has no refresh source"),
])
def test_a_profile_that_cannot_give_scopes_is_refused_with_exit_5(p: TokenProfile, message: str) -> None:
    assert message in (scoped.refusal(p.name, p) or "")
    with pytest.raises(RequestError) as e:
        scoped.fetch(p.name, p, None, ["x"], key="k", private_dir=Path("/nonexistent"), run=None,  # type: ignore
                     cancel=threading.Event(), now=0)
    assert e.value.code == ErrorCode.BAD_SUBMIT and message in e.value.message


def test_htgettoken_is_asked_with_its_scopes_option(tmp_path: Path) -> None:
    p = profile(tmp_path, mode=None, vault="htvault.example.org")
    seen: list[tuple[str, ...]] = []

    def run(argv, env, timeout, on_line, cancel):  # type: ignore[no-untyped-def]
        from rsubd.tokens.refresher import RunResult

        seen.append(argv)
        Path(env["BEARER_TOKEN_FILE"]).write_text(tokenkit.scitoken(600, scope=env[scoped.SCOPES_ENV]) + "\n")
        return RunResult(0)

    m = manager(tmp_path, p)
    m.run = run
    token, _ = m.scoped("dune", ["storage.create:/dune/a"], key="r3")
    new = str(token.path) + ".rsub-new"
    assert seen == [("htgettoken", "-a", "htvault.example.org", "-i", "dune", "--scopes",
                     "compute.read storage.read:/dune storage.create:/dune/a", "-o", new)]


def test_the_embedded_schedd_limits_a_token_to_its_authorizations(tmp_path: Path) -> None:
    assert authorizations(("storage.read:/dune",)) is None  # names no HTCondor authorization: no limit
    assert authorizations(("compute.read", "storage.read:/dune")) == {"READ"}
    assert authorizations(("compute.create",)) == {"READ", "WRITE"}
    local = LocalSchedd("local", tmp_path / "q", execute="fake", autostart=False)
    token = tmp_path / "t"

    def credential() -> Credential:
        return Credential(profile="dune", generation=1, env={}, token_file=token)

    schedd = TokenCheckedSchedd(local, credential, owns_inner=False)
    (tmp_path / "job.sh").write_text("true\n")
    request = SubmitRequest(text="executable = job.sh\nqueue\n", cwd=str(tmp_path))
    token.write_text(tokenkit.scitoken(600, scope="compute.read storage.modify:/dune") + "\n")
    assert schedd.query("true", ["ClusterId"]) == []  # READ is enough to query
    with pytest.raises(ScheddError) as e:
        schedd.submit(request)
    assert e.value.kind is ErrorKind.AUTHENTICATION and "submit needs WRITE" in e.value.message
    assert local.query("true", ["ClusterId"]) == []  # nothing reached the queue
    local.close()
