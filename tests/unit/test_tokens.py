"""Token claims, profiles and the refresh manager, with real JWTs and real fake refresh commands."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from rsubd import config
from rsubd.platform import logs
from rsubd.tokens import claims as tokens
from rsubd.tokens import files
from rsubd.tokens.claims import Claims, TokenError, TokenProfile
from rsubd.tokens.manager import TokenManager
from tests import tokenkit

KIT = str(Path(tokenkit.__file__))


def fake(mode: str, lifetime: float = 3600) -> tuple[str, ...]:
    return (sys.executable, KIT, mode, str(lifetime))


def sci_profile(tmp_path: Path, mode: str | None = "ok", lifetime: float = 3600, **kw: object) -> TokenProfile:
    opts: dict[str, object] = {"refresh_floor": 0.0, "refresh_timeout": 5.0, "group": "dune"}
    opts.update(kw)
    return TokenProfile(name="dune", kind="scitoken", file=tmp_path / "bt",
                        refresh_command=fake(mode, lifetime) if mode else None, **opts)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def manager(tmp_path: Path, *profiles: TokenProfile, clock: Clock | None = None) -> TokenManager:
    return TokenManager({p.name: p for p in profiles}, private_dir=tmp_path / "private",
                        clock=clock or time.time)


def write_token(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text + "\n")
    path.chmod(mode)


# -- claims ---------------------------------------------------------------------


def test_claims_of_a_scitoken() -> None:
    now = time.time()
    c = tokens.decode(tokenkit.scitoken(3600, now=now, groups=("/dune", "/dune/production")))
    assert c.subject == "alice"
    assert c.issuer == "https://cilogon.org/dune"
    assert c.exp == int(now + 3600)
    assert c.lifetime == 3600
    assert "compute.create" in c.scopes
    assert c.groups == ("/dune", "/dune/production")


def test_an_idtoken_without_exp_never_expires() -> None:
    c = tokens.decode(tokenkit.idtoken(None))
    assert c.exp is None and c.time_left(time.time()) is None
    tokens.check("idtoken", c, time.time() + 10**9)  # no exception


@pytest.mark.parametrize("text", ["", "abc", "a.b", "a.b.c.d", "!!.??.x", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.x"])
def test_what_is_not_a_jwt_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(TokenError) as e:
        tokens.decode(text)
    assert "JWT" in str(e.value)
    if len(text) > 3:
        assert text not in str(e.value)


def test_check_refuses_expired_and_missing_groups() -> None:
    now = time.time()
    with pytest.raises(TokenError, match="expired"):
        tokens.check("scitoken", tokens.decode(tokenkit.scitoken(-1, now=now)), now)
    dune = tokens.decode(tokenkit.scitoken(60, now=now, groups=("/dune",)))
    tokens.check("scitoken", dune, now, group="dune")
    with pytest.raises(TokenError, match="/dune/production"):
        tokens.check("scitoken", dune, now, group="dune", role="production")
    with pytest.raises(TokenError, match="no 'exp'"):
        tokens.check("scitoken", Claims({"sub": "x"}), now)


def test_default_margin_is_a_quarter_of_the_lifetime() -> None:
    p = TokenProfile(name="p", kind="scitoken", file=Path("/x"))
    assert p.margin(Claims({"iat": 0, "exp": 4 * 3600 * 24})) == 3600 * 24
    assert p.margin(Claims({"iat": 0, "exp": 3600})) == 900
    assert p.margin(Claims({"iat": 0, "exp": 120})) == 30  # never more than the token lasts
    assert p.margin(Claims({"exp": 120})) == 1800  # no iat: the lifetime is unknown
    assert TokenProfile(name="p", kind="scitoken", file=Path("/x"), refresh_margin=20).margin(Claims({})) == 20


def test_htgettoken_is_the_default_command_with_the_profiles_options(tmp_path: Path) -> None:
    p = TokenProfile(name="d", kind="scitoken", file=tmp_path / "bt", vault="htvaultprod.fnal.gov",
                     group="dune", role="production")
    assert p.command(tmp_path / "new", 900) == ("htgettoken", "-a", "htvaultprod.fnal.gov", "-i", "dune",
                                                "-r", "production", "--minsecs", "900", "-o", str(tmp_path / "new"))
    assert p.manual_command() == f"htgettoken -a htvaultprod.fnal.gov -i dune -r production -o {tmp_path / 'bt'}"
    assert TokenProfile(name="d", kind="scitoken", file=tmp_path / "bt").command(tmp_path, 1) is None


def test_default_bearer_file_follows_htcondors_order() -> None:
    assert tokens.default_bearer_file({"BEARER_TOKEN_FILE": "/a", "XDG_RUNTIME_DIR": "/r"}) == Path("/a")
    assert tokens.default_bearer_file({"XDG_RUNTIME_DIR": "/r"}) == Path(f"/r/bt_u{os.getuid()}")
    assert tokens.default_bearer_file({}) == Path(f"/tmp/bt_u{os.getuid()}")


def test_a_directory_of_idtokens_yields_the_first_in_name_order_and_warns_of_loose_modes(tmp_path: Path) -> None:
    d = tmp_path / "tokens.d"
    d.mkdir()
    write_token(d / "b-short", tokenkit.idtoken(60))
    write_token(d / "c-long", tokenkit.idtoken(7200))
    write_token(d / "a-loose", tokenkit.idtoken(10**6), mode=0o644)
    found = files.read_profile(TokenProfile(name="i", kind="idtoken", directory=d), time.time())
    # HTCondor's findTokens: the first file in name order that it reads, whatever the expiry.
    assert found.path == d / "b-short"
    assert any("a-loose" in w and "chmod 600" in w for w in found.warnings)


def test_an_expired_token_sorting_first_is_what_htcondor_presents(tmp_path: Path) -> None:
    d = tmp_path / "tokens.d"
    d.mkdir()
    clock = Clock()
    profile = TokenProfile(name="fnal", kind="idtoken", directory=d, refresh_command=fake("print", 3600),
                           refresh_floor=0)
    assert profile.target.name == "00-rsub-fnal"
    write_token(d / "aaa.token", tokenkit.idtoken(-60, now=clock.now))  # expired, and before "rsub_fnal"
    write_token(d / "rsub_fnal", tokenkit.idtoken(7200, now=clock.now))  # where rsub wrote its token before
    write_token(d / "zzz", tokenkit.make_jwt({"iss": "other.example.org", "sub": "x", "exp": clock.now + 10}))
    m = manager(tmp_path, profile, clock=clock)
    # rsub's own file is renamed to sort first, so the good token is the one presented.
    assert sorted(p.name for p in d.iterdir()) == ["00-rsub-fnal", "aaa.token", "zzz"]
    st = m.status()[0]
    assert st["state"] == "ok" and st["file"] == str(d / "00-rsub-fnal") and st["warnings"] == []
    # A file a person names to sort before rsub's own shadows it: status says so, and what to remove.
    write_token(d / "0.token", tokenkit.idtoken(-60, now=clock.now))
    m.scan()
    st = m.status()[0]
    assert st["state"] == "expired" and st["file"] == str(d / "0.token")
    assert any("0.token sorts before 00-rsub-fnal" in w and f"remove {d / '0.token'}" in w
               for w in st["warnings"])
    assert m.blocker("fnal") is not None
    assert m.credential("fnal").token_file == d / "0.token"  # what the embedded schedd checks, too


def test_a_directory_without_rsubs_file_presents_its_first_token(tmp_path: Path) -> None:
    d = tmp_path / "tokens.d"
    d.mkdir()
    write_token(d / "a", tokenkit.idtoken(-60))
    write_token(d / "b", tokenkit.idtoken(7200))
    found = files.read_profile(TokenProfile(name="i", kind="idtoken", directory=d), time.time())
    assert found.path == d / "a" and found.warnings == ()


def test_write_private_is_0600_and_atomic(tmp_path: Path) -> None:
    target = tmp_path / "t"
    files.write_private(target, "secret\n")
    assert target.read_text() == "secret\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


# -- config -------------------------------------------------------------------------


def test_token_profiles_in_the_config(tmp_path: Path) -> None:
    cfg = config.from_dict({
        "tokens": {"dune": {"kind": "scitoken", "file": str(tmp_path / "bt"), "vault": "v", "group": "dune",
                            "refresh_margin": 600},
                   "fnal": {"kind": "idtoken", "directory": str(tmp_path)}},
        "schedd": [{"name": "a", "token": "dune"}],
    })
    assert cfg.tokens["dune"].refresh_margin == 600
    assert cfg.tokens["dune"].refresh_floor == 10.0
    assert cfg.tokens["fnal"].directory == tmp_path
    assert cfg.schedds[0].token == "dune"


@pytest.mark.parametrize(("tokens_table", "schedd", "message"), [
    ({"x": {"kind": "jwt"}}, {}, "kind must be one of"),
    ({"x": {"kind": "scitoken", "refresh_command": "htgettoken -a v"}}, {}, "no shell is used"),
    ({"x": {"kind": "scitoken", "directory": "/tmp"}}, {}, "directory is for idtoken"),
    ({"x": {"kind": "idtoken", "file": "/a", "directory": "/b"}}, {}, "not both"),
    ({"x": {"kind": "scitoken", "refresh_floor": -1}}, {}, "refresh_floor"),
    ({"x": {"kind": "scitoken", "colour": "red"}}, {}, "unknown key"),
    ({}, {"token": "nope"}, "no [tokens.nope]"),
])
def test_bad_token_config_is_refused_with_the_key_named(tokens_table: dict[str, object],
                                                        schedd: dict[str, object], message: str) -> None:
    with pytest.raises(config.ConfigError, match=message.replace("[", r"\[")):
        config.from_dict({"tokens": tokens_table, "schedd": [{"name": "a", **schedd}]})


# -- the manager ---------------------------------------------------------------------------


def test_a_missing_token_is_fetched_and_written_0600(tmp_path: Path) -> None:
    m = manager(tmp_path, sci_profile(tmp_path))
    assert m.scan() == ["dune"]
    assert m.refresh("dune") == {"refreshed": True, "reason": None}
    bt = tmp_path / "bt"
    assert bt.stat().st_mode & 0o777 == 0o600
    assert tokens.decode(bt.read_text()).groups == ("/dune",)
    status = m.status()[0]
    assert status["state"] == "ok" and status["subject"] == "alice" and status["action_needed"] is None
    assert not list(tmp_path.glob("*.rsub-new"))
    assert m.scan() == []  # fresh for an hour: nothing due


def test_refresh_is_scheduled_from_exp_and_the_margin(tmp_path: Path) -> None:
    clock = Clock()
    write_token(tmp_path / "bt", tokenkit.scitoken(3600, now=clock.now))
    m = manager(tmp_path, sci_profile(tmp_path, refresh_margin=600), clock=clock)
    assert not m.due("dune", clock.now)
    clock.now += 2999
    assert not m.due("dune", clock.now)
    clock.now += 2
    assert m.due("dune", clock.now)
    assert m.state_label("dune", clock.now) == "expiring"


def test_the_floor_limits_manual_refreshes(tmp_path: Path) -> None:
    m = manager(tmp_path, sci_profile(tmp_path, refresh_floor=30.0))
    assert m.refresh("dune", manual=True)["refreshed"] is True
    again = m.refresh("dune", manual=True)
    assert again["refreshed"] is False and "rate limited" in again["reason"]
    assert not m.due("dune", time.time())


@pytest.mark.parametrize(("mode", "message"), [
    ("fail", "exited with status 1: htgettoken: vault said no"),
    ("garbage", "unusable token (not a JWT"),
    ("expired", "unusable token (the token expired"),
    ("nogroup", "lacks wlcg.groups /dune"),
    ("silent", "wrote no token"),
])
def test_a_failed_refresh_keeps_the_old_token(tmp_path: Path, mode: str, message: str) -> None:
    old = tokenkit.scitoken(100)
    write_token(tmp_path / "bt", old)
    m = manager(tmp_path, sci_profile(tmp_path, mode=mode))
    outcome = m.refresh("dune")
    assert outcome["refreshed"] is False
    assert message in outcome["reason"]
    assert (tmp_path / "bt").read_text().strip() == old
    st = m.status()[0]
    assert st["failures"] == 1 and message in st["last_error"]
    assert not list(tmp_path.glob("*.rsub-new"))


def test_a_token_printed_on_stdout_is_taken(tmp_path: Path) -> None:
    p = TokenProfile(name="fnal", kind="idtoken", file=tmp_path / "idt", refresh_command=fake("print", 600),
                     refresh_floor=0)
    m = manager(tmp_path, p)
    assert m.refresh("fnal")["refreshed"] is True
    assert tokens.decode((tmp_path / "idt").read_text()).subject == "alice@fs"
    # HTCondor reads IDTOKENs from a directory: the file gets a private one.
    cred = m.credential("fnal")
    private = Path(cred.env["_condor_SEC_TOKEN_DIRECTORY"])
    assert (private / "token").read_text() == (tmp_path / "idt").read_text()
    assert private.stat().st_mode & 0o077 == 0


def test_a_command_that_hangs_is_stopped_at_its_limit(tmp_path: Path) -> None:
    m = manager(tmp_path, sci_profile(tmp_path, mode="hang", refresh_timeout=1.0))
    started = time.monotonic()
    outcome = m.refresh("dune")
    assert time.monotonic() - started < 5
    assert "did not finish within 1 s" in outcome["reason"]


def test_a_browser_login_is_shown_while_it_waits_and_not_retried_hot(tmp_path: Path) -> None:
    m = manager(tmp_path, sci_profile(tmp_path, mode="login", refresh_timeout=3.0))
    done = threading.Event()
    threading.Thread(target=lambda: (m.refresh("dune"), done.set()), daemon=True).start()
    deadline = time.monotonic() + 3
    while m.states["dune"].login_url is None and time.monotonic() < deadline:
        time.sleep(0.05)
    during = m.status()[0]
    assert during["login_url"] == tokenkit.LOGIN_URL
    assert during["state"] == "needs_login"
    assert tokenkit.LOGIN_URL in during["action_needed"]
    assert done.wait(10)
    after = m.status()[0]
    assert after["state"] == "needs_login" and "browser login" in after["last_error"]
    assert not m.due("dune", time.time() + 600)  # a login is not asked for again within 15 minutes
    assert m.due("dune", time.time() + 901)
    assert "open https://vault.example.org" in (m.blocker("dune") or "")


def test_failures_back_off_and_then_ask_for_a_person(tmp_path: Path) -> None:
    clock = Clock()
    m = manager(tmp_path, sci_profile(tmp_path, mode="fail", refresh_floor=10.0), clock=clock)
    gaps = []
    for _ in range(4):
        assert m.due("dune", clock.now)
        m.refresh("dune")
        start = clock.now
        while not m.due("dune", clock.now):
            clock.now += 1
        gaps.append(clock.now - start)
    assert gaps == [10, 20, 40, 80]
    st = m.status()[0]
    assert st["failures"] == 4
    assert "failed 4 times" in st["action_needed"] and "rsub token refresh dune" in st["action_needed"]


def test_a_success_clears_the_failures(tmp_path: Path) -> None:
    m = manager(tmp_path, sci_profile(tmp_path, mode="fail"))
    m.refresh("dune")
    m.states["dune"].profile = sci_profile(tmp_path, mode="ok")
    assert m.refresh("dune")["refreshed"] is True
    assert m.status()[0]["failures"] == 0 and m.status()[0]["last_error"] is None


def test_blocker_says_what_to_run(tmp_path: Path) -> None:
    clock = Clock()
    write_token(tmp_path / "bt", tokenkit.scitoken(60, now=clock.now))
    m = manager(tmp_path, sci_profile(tmp_path, mode=None, vault="htvault.example.org"), clock=clock)
    assert m.blocker("dune") is None
    clock.now += 61
    reason = m.blocker("dune")
    assert reason is not None and "expired" in reason and "htgettoken -a htvault.example.org" in reason


def test_a_refused_token_needs_action_until_it_changes(tmp_path: Path) -> None:
    write_token(tmp_path / "bt", tokenkit.scitoken(3600))
    m = manager(tmp_path, sci_profile(tmp_path, mode=None))
    m.note_refused("dune", "authentication_failed: no")
    assert m.state_label("dune", time.time()) == "refused"
    assert "refused" in (m.blocker("dune") or "")
    generation = m.credential("dune").generation
    write_token(tmp_path / "bt", tokenkit.scitoken(7200))
    m.scan()
    assert m.blocker("dune") is None
    assert m.credential("dune").generation == generation + 1


def test_choose_by_group_and_role(tmp_path: Path) -> None:
    a = TokenProfile(name="dune", kind="scitoken", file=tmp_path / "a", group="dune")
    b = TokenProfile(name="dunepro", kind="scitoken", file=tmp_path / "b", group="dune", role="production")
    m = manager(tmp_path, a, b)
    assert m.choose(token=None, group="dune", role=None, default=None) == ("dune", False)
    assert m.choose(token=None, group="dune", role="production", default=None) == ("dunepro", False)
    assert m.choose(token=None, group=None, role=None, default="dune") == ("dune", False)
    assert m.choose(token="dunepro", group="nova", role=None, default=None) == ("dunepro", False)


def test_a_group_without_a_profile_uses_the_schedds_token(tmp_path: Path) -> None:
    a = TokenProfile(name="dune", kind="scitoken", file=tmp_path / "a", group="dune")
    m = manager(tmp_path, a)
    # jobsub users give -G by reflex: a group no profile has only names the job's group.
    assert m.choose(token=None, group="nova", role=None, default=None) == (None, True)
    assert m.choose(token=None, group="nova", role=None, default="dune") == ("dune", True)
    assert manager(tmp_path).choose(token=None, group="dune", role=None, default=None) == (None, True)


def test_a_role_needs_a_group_and_a_matching_profile(tmp_path: Path) -> None:
    a = TokenProfile(name="dune", kind="scitoken", file=tmp_path / "a", group="dune")
    m = manager(tmp_path, a)
    with pytest.raises(KeyError) as e:
        m.choose(token=None, group="nova", role="production", default=None)
    assert e.value.args[0].startswith("no token profile for group 'nova' and role 'production'; configured: "
                                      "dune (dune/-). A role picks a token")
    with pytest.raises(KeyError) as e:
        m.choose(token=None, group=None, role="production", default="dune")
    assert e.value.args[0].startswith("--role production: give the group too, as -G GROUP --role production")
    assert "None" not in e.value.args[0]


def test_no_token_value_reaches_status_or_the_log(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure("debug", stream)
    try:
        m = manager(tmp_path, sci_profile(tmp_path, mode="ok"))
        m.refresh("dune")
        p = TokenProfile(name="fnal", kind="idtoken", file=tmp_path / "idt", refresh_command=fake("print", 600),
                         refresh_floor=0)
        m2 = manager(tmp_path, p)
        m2.refresh("fnal")
        values = [(tmp_path / "bt").read_text().strip(), (tmp_path / "idt").read_text().strip()]
        out = stream.getvalue() + json.dumps(m.status()) + json.dumps(m2.status())
    finally:
        logs.configure("info")
    assert "token.refresh_output" in out  # the printed token was logged, redacted
    for value in values:
        assert value not in out
        assert value.split(".")[1] not in out  # not even the payload
    assert "[redacted]" in out


def test_scrub_redacts_opaque_secrets_it_was_told_about() -> None:
    logs.add_secret("hvs.CAESIJ7-opaque-vault-token")
    assert logs.scrub("got hvs.CAESIJ7-opaque-vault-token ok") == "got [redacted] ok"
    assert logs.scrub("short ok") == "short ok"


# -- the refresh cadence, on an injected clock ------------------------------------------


def cadence(tmp_path: Path, lifetime: float, span: float, step: float) -> tuple[list[float], list[str], list[dict]]:
    """Run the scan/refresh loop as rsubd's timer does, for `span` seconds of a fake clock; a fake
    refresh command mints a token of `lifetime` seconds. Returns the refresh times, the states seen
    and the log events."""
    from structlog.testing import capture_logs

    from rsubd.tokens.refresher import RunResult

    clock = Clock()
    start = clock.now

    def run(argv: tuple[str, ...], env: object, timeout: float, on_line: object, cancel: object) -> RunResult:
        assert isinstance(env, dict)
        Path(env["BEARER_TOKEN_FILE"]).write_text(tokenkit.scitoken(lifetime, now=clock.now) + "\n")
        return RunResult(0)

    m = TokenManager({"dune": sci_profile(tmp_path, refresh_floor=10.0)}, private_dir=tmp_path / "p",
                     clock=clock, run=run)
    times: list[float] = []
    states: list[str] = []
    with capture_logs() as events:
        while clock.now - start < span:
            for name in m.scan():
                assert m.refresh(name)["refreshed"] is True
                times.append(clock.now - start)
            states.append(m.state_label("dune", clock.now))
            clock.now += step
    return times, states, events


def test_a_120_second_token_is_refreshed_every_90_seconds(tmp_path: Path) -> None:
    times, states, events = cadence(tmp_path, 120, 600, 1.0)
    # Fetched at start, then each time three quarters of its lifetime are used: not every refresh_floor.
    assert times == [0, 90, 180, 270, 360, 450, 540]
    assert states.count("ok") / len(states) > 0.99  # "expiring" only for the moment of each refresh
    assert not [e for e in events if e["log_level"] == "warning"]  # routine refreshes are info, not warnings
    assert sum(e["event"] == "token.refreshed" for e in events) == 7


def test_a_12_hour_token_is_refreshed_every_9_hours(tmp_path: Path) -> None:
    times, states, events = cadence(tmp_path, 12 * 3600, 40 * 3600, 60.0)
    assert times == [0, 9 * 3600, 18 * 3600, 27 * 3600, 36 * 3600]
    assert set(states) == {"ok"}
    assert not [e for e in events if e["log_level"] == "warning"]
