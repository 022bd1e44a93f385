"""A token of one submit's own, with the extra scopes of `--need-scope` / `--need-storage-modify`.

jobsub_lite (lib/token_mods.py) takes the scopes of the user's token, drops every
`storage.modify` (a job gets none by default), adds back each `storage.modify:PATH`
asked for if one of the token's own covers PATH, adds the other scopes as asked,
and has condor_vault_storer fetch a token with exactly that scope for the job.
rsub does the same, through the profile's refresh source: htgettoken with
`--scopes`, or the profile's refresh_command with `RSUB_TOKEN_SCOPES` set. The
token is written to a private file of this submit's own; the submit is
authenticated with it, and it is shipped to the job as an input file (the job's
wrapper points `BEARER_TOKEN_FILE` at it). The profile's own token is untouched,
so other submits and their jobs keep theirs. The file is removed once the submit
is spooled (the schedd holds the job's copy); no log line ever holds its value.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from rsub.wire.vocabulary import JOB_TOKEN, ErrorCode, RequestError, iso
from rsubd.platform import logs
from rsubd.tokens.claims import Claims, TokenError, TokenProfile, validate_new
from rsubd.tokens.files import write_private
from rsubd.tokens.refresher import Runner, RunResult, command_env, produced

log = structlog.get_logger("rsubd.tokens.scoped")
SCOPED_DIR = "scoped"  # under the manager's private directory: one subdirectory per submit
SCOPES_ENV = "RSUB_TOKEN_SCOPES"  # what a refresh_command is asked for, space separated
MODIFY = "storage.modify"


@dataclass(frozen=True)
class ScopedToken:
    """One submit's token: where it is, what it holds, and how a backend presents it."""

    profile: str
    path: Path
    scopes: tuple[str, ...]
    expires_at: float | None

    @property
    def env(self) -> dict[str, str]:
        return {"_condor_SCITOKENS_FILE": str(self.path), "BEARER_TOKEN_FILE": str(self.path)}


def job_scopes(have: Sequence[str], asked: Sequence[str]) -> tuple[str, ...]:
    """jobsub_lite's job scope: the token's scopes less storage.modify, plus what was asked.

    A `storage.modify:PATH` asked for must lie under one the token already has; RequestError
    (exit 5) says which it has. Other scopes are added as asked: only the issuer can tell.
    """
    bad = [s for s in asked if not s or any(c.isspace() for c in s)]
    if bad:
        raise RequestError(ErrorCode.BAD_REQUEST, f"a scope is one word without blanks, not {bad[0]!r}")
    modify = [s.split(":", 1)[1] for s in have if s.startswith(MODIFY + ":")]
    out = [s for s in have if s.split(":", 1)[0] != MODIFY]
    for scope in asked:
        if scope.startswith(MODIFY + ":"):
            path = os.path.normpath(scope.split(":", 1)[1])
            if not any(os.path.commonpath([p, path]) == p for p in modify if p.startswith("/")):
                allowed = ", ".join(f"{MODIFY}:{p}" for p in modify) or "no storage.modify at all"
                raise RequestError(ErrorCode.BAD_SUBMIT, f"nothing was submitted: --need-storage-modify {path} is "
                                   f"not within what the profile's token allows ({allowed}); ask for a path "
                                   "under one of those")
            scope = f"{MODIFY}:{path}"
        if scope not in out:
            out.append(scope)
    return tuple(out)


def refusal(name: str, p: TokenProfile) -> str | None:
    """Why this profile cannot give a submit a token with more scopes, or None."""
    if p.kind != "scitoken":
        return (f"token profile {name!r} holds an IDTOKEN, which carries HTCondor authorizations only "
                "(condor:/READ, condor:/WRITE), never storage scopes: use a SciToken profile (kind = \"scitoken\" "
                "with a vault or a refresh_command) for --need-scope and --need-storage-modify")
    if p.command(p.target, 0) is None:
        return (f"token profile {name!r} has no refresh source (neither vault nor refresh_command), so rsub cannot "
                "ask for a token with more scopes: set vault (htgettoken) or a refresh_command that honours "
                f"${SCOPES_ENV}")
    return None


def fetch(name: str, p: TokenProfile, claims: Claims | None, asked: Sequence[str], *, key: str, private_dir: Path,
          run: Runner, cancel: threading.Event, now: float) -> ScopedToken:
    """Get a token with the job scopes for one submit (`key`: its request id). RequestError says why not."""
    why = refusal(name, p)
    if why:
        raise RequestError(ErrorCode.BAD_SUBMIT, f"nothing was submitted: {why}")
    if claims is None:
        raise RequestError(ErrorCode.TOKEN, f"nothing was submitted: token profile {name!r} has no token to take "
                           f"the scopes from; run `{p.manual_command()}`, then `rsub token refresh {name}`")
    scopes = job_scopes(claims.scopes, asked)
    directory = private_dir / SCOPED_DIR / key
    shutil.rmtree(directory, ignore_errors=True)  # a retry of the same request fetches afresh
    directory.mkdir(parents=True, mode=0o700)
    target = directory / JOB_TOKEN
    new = directory / f"{JOB_TOKEN}.rsub-new"
    argv = p.refresh_command or _htgettoken(p, scopes, new)
    env = command_env(name, new, target, p.htgettoken_options)
    env[SCOPES_ENV] = " ".join(scopes)
    log.info("token.scoped_fetching", profile=name, scopes=list(scopes), command=argv[0], request_id=key)
    result = run(argv, env, p.refresh_timeout, lambda line: log.info("token.refresh_output", profile=name,
                                                                      line=line), cancel)
    try:
        failed = _failure(result, p.refresh_timeout)
        lines = None if failed else produced(new, target, None, result.output)
        if failed or not lines:
            raise RequestError(ErrorCode.TOKEN, f"nothing was submitted: the token with scopes {' '.join(scopes)} "
                               f"could not be fetched for profile {name!r}: "
                               f"{failed or 'the command succeeded but wrote no token'}")
        for line in lines:
            logs.add_secret(line)
        try:
            got = validate_new(p.kind, lines, now, group=p.group, role=p.role)
        except TokenError as e:
            raise RequestError(ErrorCode.TOKEN, f"nothing was submitted: the token fetched for this submit is "
                               f"unusable ({e})") from None
        missing = [s for s in scopes if s not in got.scopes]
        if missing:
            hint = f" (a refresh_command must honour ${SCOPES_ENV})" if p.refresh_command else ""
            raise RequestError(ErrorCode.TOKEN, f"nothing was submitted: the token fetched for this submit lacks "
                               f"the scopes {' '.join(missing)}{hint}; it has: {' '.join(got.scopes) or 'none'}")
        write_private(target, "\n".join(lines) + "\n")
    except RequestError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        new.unlink(missing_ok=True)
    log.info("token.scoped_fetched", profile=name, scopes=list(scopes), expires_at=iso(got.exp), request_id=key)
    return ScopedToken(profile=name, path=target, scopes=scopes, expires_at=got.exp)


def _htgettoken(p: TokenProfile, scopes: Sequence[str], output: Path) -> tuple[str, ...]:
    argv = p.command(output, 0)
    assert argv is not None and argv[-4] == "--minsecs"
    # A new file: no --minsecs (nothing to reuse), and the scopes asked for (htgettoken's --scopes).
    return (*argv[:-4], "--scopes", " ".join(scopes), "-o", str(output))


def _failure(result: RunResult, timeout: float) -> str | None:
    if result.error:
        return result.error
    if result.timed_out:
        extra = f" (it waits for a browser login at {result.url}: run `rsub token refresh` first)" if result.url else ""
        return f"the command did not finish within {timeout:g} s{extra}"
    if result.returncode != 0:
        last = next((line for line in reversed(result.output) if line.strip()), "")
        return f"the command exited with status {result.returncode}" + (f": {logs.scrub(last)[:300]}" if last else "")
    return None


def discard(token: ScopedToken) -> None:
    """Remove a submit's token once the schedd has the job's copy (or the submit failed)."""
    shutil.rmtree(token.path.parent, ignore_errors=True)


def sweep(private_dir: Path) -> None:
    """Remove what submits cut off by a stop left behind (a resubmit never reuses them)."""
    shutil.rmtree(private_dir / SCOPED_DIR, ignore_errors=True)


def mentions(private_dir: Path, text: str) -> bool:
    """Whether a submitted description ships a per-submit token (recovery cannot submit it again)."""
    return f"{private_dir / SCOPED_DIR}/" in text
