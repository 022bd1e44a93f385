"""Keeping each token profile fresh: refresh scheduled from the token's own `exp`.

`TokenManager.scan()` and `TokenManager.refresh()` are plain functions with an
injectable clock and command runner; rsubd's timer only triggers them. A refresh
command runs with no terminal and a time limit; what it writes is checked before
it replaces the old token. Failures back off exponentially, and a refresh that
needs a person (a browser login, a command that keeps failing, an expired or
refused token) says so in `status()` instead of retrying hot.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from rsub.wire.vocabulary import iso
from rsubd.platform import logs
from rsubd.tokens import scoped
from rsubd.tokens.choice import choose
from rsubd.tokens.claims import OLD_FILE_PREFIX, TokenError, TokenProfile, check, validate_new
from rsubd.tokens.files import Found, read_profile, stamp, write_private
from rsubd.tokens.refresher import LOGIN_PROMPT, URL, Runner, command_env, produced, run_command

log = structlog.get_logger("rsubd.tokens.claims")
FAILURES_BEFORE_ACTION = 3
MAX_BACKOFF = 1800.0
LOGIN_RETRY = 900.0  # a refresh that waited for a browser login is not started again sooner than this


@dataclass(frozen=True)
class Credential:
    """What a schedd backend needs to present a profile's token, and its generation."""

    profile: str
    generation: int
    env: Mapping[str, str]
    token_file: Path | None


@dataclass
class ProfileState:
    profile: TokenProfile
    found: Found | None = None
    generation: int = 0
    last_refresh_at: float | None = None
    last_attempt_at: float | None = None
    last_error: str | None = None
    failures: int = 0
    login_url: str | None = None
    needs_login: bool = False
    refused: str | None = None
    refreshing: bool = False
    warned: set[str] = field(default_factory=set)


class TokenManager:
    def __init__(self, profiles: Mapping[str, TokenProfile], *, private_dir: Path,
                 clock: Callable[[], float] = time.time, run: Runner = run_command) -> None:
        self.clock = clock
        self.run = run
        self.private_dir = private_dir
        self.states = {name: ProfileState(p) for name, p in profiles.items()}
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        scoped.sweep(private_dir)
        for name, st in self.states.items():
            _rename_old_file(st.profile)
            self.reload(name)

    # -- reading -----------------------------------------------------------------

    def reload(self, name: str) -> bool:
        """Re-read a profile's token; True when it changed (and the generation moved on)."""
        st = self.states[name]
        found = read_profile(st.profile, self.clock())
        for value in found.values:
            logs.add_secret(value)
        if st.found is not None and found.fingerprint == st.found.fingerprint:
            return False
        st.found = found
        st.generation += 1
        st.refused = None
        if st.profile.kind == "idtoken" and st.profile.file is not None and found.claims is not None:
            # HTCondor reads IDTOKENs from a directory; a single file gets a private one of its own.
            write_private(self.private_dir / name / "token", "\n".join(found.values) + "\n")
        for warning in found.warnings:
            if warning not in st.warned:
                st.warned.add(warning)
                log.warning("token.warning", profile=name, warning=warning)
        log.info("token.loaded", profile=name, generation=st.generation, path=str(found.path or ""),
                 expires_at=iso(found.claims.exp) if found.claims else None, problem=found.error)
        return True

    def scan(self) -> list[str]:
        """Re-read every profile; return those due for a refresh now."""
        due = []
        now = self.clock()
        for name, st in self.states.items():
            self.reload(name)
            self._warn_expiry(name, st, now)
            if self.due(name, now):
                due.append(name)
        return due

    def due(self, name: str, now: float) -> bool:
        st = self.states[name]
        p = st.profile
        if st.refreshing or p.command(p.target, 0) is None:
            return False
        if st.last_attempt_at is not None and now < st.last_attempt_at + self._retry_gap(st):
            return False
        claims = st.found.claims if st.found else None
        if claims is None or st.refused:
            return True
        if claims.exp is None:
            return False
        return claims.exp - now <= p.margin(claims)

    def _retry_gap(self, st: ProfileState) -> float:
        floor = st.profile.refresh_floor
        if not st.failures:
            return floor
        gap = min(max(floor, 1.0) * 2.0 ** (st.failures - 1), MAX_BACKOFF)  # never a hot loop, even at floor 0
        return max(gap, LOGIN_RETRY) if st.needs_login else max(gap, floor)

    def _warn_expiry(self, name: str, st: ProfileState, now: float) -> None:
        claims = st.found.claims if st.found else None
        if claims is None or claims.exp is None:
            return
        left = claims.exp - now
        key = f"exp:{claims.exp}"
        if 0 < left <= st.profile.margin(claims) and key not in st.warned:
            st.warned.add(key)
            action = self.action(name, now)
            # A token due for its routine refresh is news only when rsub cannot refresh it by itself.
            (log.warning if action else log.info)("token.expiring", profile=name, expires_at=iso(claims.exp),
                                                  seconds_left=round(left), action=action)

    # -- refreshing --------------------------------------------------------------

    def refresh(self, name: str, *, manual: bool = False) -> dict[str, Any]:
        """Run the profile's refresh command now; never more often than its floor."""
        st = self.states[name]
        now = self.clock()
        with self._lock:
            if st.refreshing:
                return {"refreshed": False, "rate_limited": True,
                        "reason": "a refresh of this profile is already running"}
            if manual and st.last_attempt_at is not None and now - st.last_attempt_at < st.profile.refresh_floor:
                wait = st.profile.refresh_floor - (now - st.last_attempt_at)
                return {"refreshed": False, "rate_limited": True, "reason": f"rate limited: the last refresh was "
                        f"{now - st.last_attempt_at:.0f} s ago; try again in {wait:.0f} s"}
            st.refreshing = True
            st.last_attempt_at = now
        try:
            error = self._refresh(name, st)
        except Exception as e:
            log.exception("token.refresh_crashed", profile=name)
            error = f"internal error during refresh: {type(e).__name__}"
        finally:
            st.refreshing = False
        if error is None:
            st.failures = 0
            st.last_error = None
            st.login_url = None
            st.needs_login = False
            st.refused = None
            return {"refreshed": True, "reason": None}
        st.failures += 1
        st.last_error = error
        log.warning("token.refresh_failed", profile=name, error=error, failures=st.failures,
                    action=self.action(name, self.clock()))
        return {"refreshed": False, "reason": error}

    def _refresh(self, name: str, st: ProfileState) -> str | None:
        p = st.profile
        target = p.target
        if p.command(target, 0) is None:
            self.reload(name)
            return None if st.found and st.found.claims else \
                f"profile {name} has no refresh command; get a token with `{p.manual_command()}`"
        new = target.with_name(target.name + ".rsub-new")
        new.unlink(missing_ok=True)
        new.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        claims = st.found.claims if st.found else None
        argv = p.command(new, p.margin(claims))
        assert argv is not None
        env = command_env(name, new, target, p.htgettoken_options)
        before = stamp(target)
        st.needs_login = False

        prompted = [False]

        def on_line(line: str) -> None:
            prompted[0] = prompted[0] or bool(LOGIN_PROMPT.search(line))
            url = URL.search(line)
            if url and not st.login_url and (prompted[0] or "user_code" in url.group(0)):
                st.login_url = url.group(0)
                st.needs_login = True
                log.warning("token.login_needed", profile=name, url=st.login_url,
                            action=f"open the URL in a browser, or run `{p.manual_command()}` in a terminal")
            log.info("token.refresh_output", profile=name, line=line)

        log.info("token.refreshing", profile=name, command=argv[0], timeout=p.refresh_timeout)
        st.login_url = None
        result = self.run(argv, env, p.refresh_timeout, on_line, self._cancel)
        if self._cancel.is_set():
            return "rsubd stopped during the refresh"
        try:
            if result.error:
                return result.error
            if result.timed_out:
                if result.url:
                    st.needs_login = True
                    st.login_url = result.url
                    return (f"the refresh command waits for a browser login at {result.url}; it was stopped after "
                            f"{p.refresh_timeout:g} s")
                return f"the refresh command did not finish within {p.refresh_timeout:g} s and was stopped"
            if result.returncode != 0:
                last = next((line for line in reversed(result.output) if line.strip()), "")
                bad_usage = result.returncode == 2 and argv[0] == "htgettoken"
                usage = " (bad usage: check the profile's options)" if bad_usage else ""
                return (f"the refresh command exited with status {result.returncode}{usage}"
                        + (f": {logs.scrub(last)[:300]}" if last else ""))
            lines = produced(new, target, before, result.output)
            if lines is None:
                return "the refresh command succeeded but wrote no token (to $BEARER_TOKEN_FILE or its output)"
            for line in lines:
                logs.add_secret(line)
            try:
                claims = validate_new(p.kind, lines, self.clock(), group=p.group, role=p.role)
            except TokenError as e:
                return f"the refresh produced an unusable token ({e}); the old token was kept"
            write_private(target, "\n".join(lines) + "\n")
        finally:
            new.unlink(missing_ok=True)
        st.last_refresh_at = self.clock()
        self.reload(name)
        log.info("token.refreshed", profile=name, expires_at=iso(claims.exp), generation=st.generation)
        return None

    def close(self) -> None:
        """Stop any running refresh command (rsubd is stopping)."""
        self._cancel.set()

    # -- what the rest of rsubd asks -------------------------------------------

    def note_refused(self, name: str, message: str) -> None:
        """The schedd refused this profile's token."""
        st = self.states[name]
        if st.refused != message:
            st.refused = message
            log.warning("token.refused", profile=name, error=message, action=self.action(name, self.clock()))

    def blocker(self, name: str) -> str | None:
        """Why a submit with this profile would fail before reaching the schedd, with what to run."""
        st = self.states[name]
        now = self.clock()
        claims = st.found.claims if st.found else None
        p = st.profile
        advice = self.action(name, now) or (
            f"rsubd is getting a new one; try again shortly, or run `{p.manual_command()}`, "
            f"then `rsub token refresh {name}`")
        if claims is None:
            problem = st.found.error if st.found else "no token"
            return f"token profile {name!r} has no usable token ({problem}); {advice}"
        try:
            check(p.kind, claims, now, group=p.group, role=p.role)
        except TokenError as e:
            return f"token profile {name!r}: {e}; {advice}"
        if st.refused:
            return f"token profile {name!r}: the schedd refused the token ({st.refused}); {advice}"
        return None

    def action(self, name: str, now: float) -> str | None:
        """The one thing a person must do for this profile now, or None."""
        st = self.states[name]
        p = st.profile
        manual = p.manual_command()
        claims = st.found.claims if st.found else None
        then = f", then `rsub token refresh {name}`"
        if st.needs_login and st.login_url:
            return f"log in: open {st.login_url} in a browser (or run `{manual}` in a terminal){then}"
        if st.refused:
            return f"get a token the schedd accepts: run `{manual}`{then}"
        if st.failures >= FAILURES_BEFORE_ACTION:
            return f"the refresh failed {st.failures} times in a row; fix the cause or run `{manual}` by hand{then}"
        has_command = p.command(p.target, 0) is not None
        if claims is None:
            return None if has_command and not st.failures else f"run `{manual}`{then}"
        if claims.exp is not None and claims.exp <= now:
            return None if has_command and not st.failures else f"the token expired: run `{manual}`{then}"
        if claims.exp is not None and not has_command and claims.exp - now <= p.margin(claims):
            return f"the token expires at {iso(claims.exp)} and rsub cannot refresh it: run `{manual}` before then"
        return None

    def state_label(self, name: str, now: float) -> str:
        st = self.states[name]
        claims = st.found.claims if st.found else None
        if st.refreshing and not st.needs_login:
            return "refreshing"
        if st.needs_login:
            return "needs_login"
        if st.refused:
            return "refused"
        if claims is None:
            return "missing" if st.found is None or "no token" in (st.found.error or "") else "invalid"
        if claims.exp is not None and claims.exp <= now:
            return "expired"
        if st.failures >= FAILURES_BEFORE_ACTION:
            return "failing"
        if claims.exp is not None and claims.exp - now <= st.profile.margin(claims):
            return "expiring"
        return "ok"

    def credential(self, name: str) -> Credential:
        st = self.states[name]
        p = st.profile
        if p.kind == "scitoken":
            env = {"_condor_SCITOKENS_FILE": str(p.target), "BEARER_TOKEN_FILE": str(p.target)}
            path: Path | None = p.target
        elif p.file is not None:
            env = {"_condor_SEC_TOKEN_DIRECTORY": str(self.private_dir / name)}
            path = self.private_dir / name / "token"
        else:
            assert p.directory is not None
            env = {"_condor_SEC_TOKEN_DIRECTORY": str(p.directory)}
            path = st.found.path if st.found else None
        return Credential(profile=name, generation=st.generation, env=env, token_file=path)

    def scoped(self, name: str, scopes: Sequence[str], *, key: str) -> tuple[scoped.ScopedToken, Credential]:
        """A token of one submit's own with more scopes (tokens/scoped.py), and how a backend presents it."""
        st = self.states[name]
        token = scoped.fetch(name, st.profile, st.found.claims if st.found else None, scopes, key=key,
                             private_dir=self.private_dir, run=self.run, cancel=self._cancel, now=self.clock())
        return token, Credential(profile=name, generation=0, env=token.env, token_file=token.path)

    def status(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for name, st in self.states.items():
            p = st.profile
            claims = st.found.claims if st.found else None
            left = claims.time_left(now) if claims else None
            out.append({
                "name": name, "kind": p.kind, "state": self.state_label(name, now),
                "file": str(st.found.path) if st.found and st.found.path else str(p.target),
                "group": p.group, "role": p.role,
                "subject": claims.subject if claims else None, "issuer": claims.issuer if claims else None,
                "scopes": list(claims.scopes) if claims else [], "groups": list(claims.groups) if claims else [],
                "expires_at": iso(claims.exp) if claims else None,
                "time_left": None if left is None else round(left),
                "refresh_command": (p.command(p.target, 0) or (None,))[0],
                "last_refresh": iso(st.last_refresh_at), "last_attempt": iso(st.last_attempt_at),
                "failures": st.failures, "last_error": st.last_error or (st.found.error if st.found else None),
                "login_url": st.login_url, "action_needed": self.action(name, now),
                "warnings": list(st.found.warnings) if st.found else [], "generation": st.generation,
            })
        return out

    def choose(self, *, token: str | None, group: str | None, role: str | None,
               default: str | None) -> tuple[str | None, bool]:
        """The profile a submit uses, and whether -G named a group no profile has (`choice.choose`)."""
        return choose({n: st.profile for n, st in self.states.items()}, token=token, group=group, role=role,
                      default=default)

def _rename_old_file(p: TokenProfile) -> None:
    """rsub's own file in a token directory was `rsub_<name>`, which sorts after most names: rename it."""
    if p.directory is None or p.file is not None:
        return
    old = p.directory / f"{OLD_FILE_PREFIX}{p.name}"
    if old.is_file() and not p.target.exists():
        try:
            os.replace(old, p.target)
        except OSError as e:
            log.warning("token.rename_failed", profile=p.name, path=str(old), error=e.strerror)
        else:
            log.info("token.renamed", profile=p.name, old=str(old), new=str(p.target))
