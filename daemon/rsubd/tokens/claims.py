"""Tokens: what rsub reads of an IDTOKEN or a SciToken, and where HTCondor finds them.

rsub never checks a signature (the schedd does that); it reads the claims to
know who the token names, what it allows and when it expires, so that it can
refresh ahead of expiry and refuse a submit that would fail. No function here
puts a token's value into an exception, a log event or a reply.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsub.wire.vocabulary import iso

KINDS = ("idtoken", "scitoken")
# Default refresh point: when less than a quarter of the lifetime, or less than this, is left.
DEFAULT_MARGIN_FLOOR = 1800.0


class TokenError(Exception):
    """A token that cannot be read or is not acceptable; the message never holds the token."""


@dataclass(frozen=True)
class Claims:
    """The claims of one JWT that rsub reads."""

    raw: Mapping[str, Any]

    def _num(self, key: str) -> float | None:
        value = self.raw.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def exp(self) -> float | None:
        return self._num("exp")

    @property
    def iat(self) -> float | None:
        iat = self._num("iat")
        return self._num("nbf") if iat is None else iat

    @property
    def subject(self) -> str | None:
        sub = self.raw.get("sub")
        return sub if isinstance(sub, str) else None

    @property
    def issuer(self) -> str | None:
        iss = self.raw.get("iss")
        return iss if isinstance(iss, str) else None

    @property
    def scopes(self) -> tuple[str, ...]:
        # SciTokens carry "scope" (space separated); IDTOKENs carry "scope" with condor:/ALLOW etc.
        scope = self.raw.get("scope")
        if isinstance(scope, str):
            return tuple(scope.split())
        if isinstance(scope, list):
            return tuple(str(s) for s in scope)
        return ()

    @property
    def groups(self) -> tuple[str, ...]:
        groups = self.raw.get("wlcg.groups")
        if isinstance(groups, list):
            return tuple(str(g) for g in groups)
        if isinstance(groups, str):
            return tuple(g.strip() for g in groups.split(",") if g.strip())
        return ()

    @property
    def lifetime(self) -> float | None:
        if self.exp is None or self.iat is None:
            return None
        return max(0.0, self.exp - self.iat)

    def time_left(self, now: float) -> float | None:
        return None if self.exp is None else self.exp - now


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def decode(text: str) -> Claims:
    """The claims of a compact JWT (header.payload.signature); no signature check."""
    parts = text.strip().split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise TokenError("not a JWT (expected three dot-separated base64url parts)")
    try:
        header = json.loads(_b64(parts[0]))
        payload = json.loads(_b64(parts[1]))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise TokenError("not a JWT (its header or payload is not base64url JSON)") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise TokenError("not a JWT (its header or payload is not a JSON object)")
    return Claims(payload)


def required_groups(group: str | None, role: str | None) -> tuple[str, ...]:
    """The wlcg.groups a token must hold for a jobsub-style group and role."""
    if not group:
        return ()
    base = "/" + group.strip("/")
    return (base,) if not role else (base, f"{base}/{role.strip('/')}")


def check(kind: str, claims: Claims, now: float, *, group: str | None = None, role: str | None = None) -> None:
    """Refuse a token rsub must not use: expired, or (SciTokens) without the group or role asked for."""
    exp = claims.exp
    if kind == "scitoken" and exp is None:
        raise TokenError("the SciToken has no 'exp' claim")
    if exp is not None and exp <= now:
        raise TokenError(f"the token expired at {iso(exp)}")
    if kind == "scitoken":
        missing = [g for g in required_groups(group, role) if g not in claims.groups]
        if missing:
            have = ", ".join(claims.groups) or "none"
            raise TokenError(f"the SciToken lacks wlcg.groups {', '.join(missing)} (it has: {have})")


# -- profiles ------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenProfile:
    """A `[tokens.NAME]` table of the config."""

    name: str
    kind: str
    file: Path | None = None
    directory: Path | None = None
    refresh_command: tuple[str, ...] | None = None
    refresh_margin: float | None = None
    refresh_floor: float = 10.0
    refresh_timeout: float = 300.0
    group: str | None = None
    role: str | None = None
    vault: str | None = None  # htgettoken -a
    issuer: str | None = None  # htgettoken -i (default: the group)
    htgettoken_options: str | None = None

    @property
    def target(self) -> Path:
        """The file a refresh writes: the profile's file, or `rsub_<name>` in its directory."""
        if self.file is not None:
            return self.file
        assert self.directory is not None
        return self.directory / f"rsub_{self.name}"

    def margin(self, claims: Claims | None) -> float:
        """Seconds before `exp` at which to refresh."""
        if self.refresh_margin is not None:
            return self.refresh_margin
        lifetime = claims.lifetime if claims is not None else None
        return max(DEFAULT_MARGIN_FLOOR, (lifetime or 0.0) / 4)

    def command(self, output: Path, minsecs: float) -> tuple[str, ...] | None:
        """The refresh command: the configured one, else htgettoken for a SciToken with a vault."""
        if self.refresh_command:
            return self.refresh_command
        if self.kind != "scitoken" or not self.vault:
            return None
        argv = ["htgettoken", "-a", self.vault, "-i", self.issuer or self.group or ""]
        if self.role:
            argv += ["-r", self.role]
        return (*argv, "--minsecs", str(int(minsecs)), "-o", str(output))

    def manual_command(self) -> str:
        """What a person runs in a terminal to get this profile a token by hand."""
        if self.refresh_command:
            return " ".join(self.refresh_command)
        if self.kind == "idtoken":
            return f"rsub token request {self.name}"
        cmd = self.command(self.target, 0)
        if cmd is None:
            return f"htgettoken -a <vault> -i <issuer> -o {self.target}"
        return " ".join((*cmd[:-4], "-o", str(self.target)))  # without --minsecs: get one now


def default_bearer_file(env: Mapping[str, str] | None = None) -> Path:
    """Where a SciToken is written when a profile names no file: HTCondor's discovery order."""
    env = os.environ if env is None else env
    for key in ("BEARER_TOKEN_FILE", "SCITOKENS_FILE"):
        if env.get(key):
            return Path(env[key])
    uid = os.getuid()
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / f"bt_u{uid}"
    return Path(f"/tmp/bt_u{uid}")


def default_token_directory(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("_condor_SEC_TOKEN_DIRECTORY"):
        return Path(env["_condor_SEC_TOKEN_DIRECTORY"])
    return Path.home() / ".condor" / "tokens.d"


# -- reading a profile's token ---------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """The token a profile would present now, and what was noticed on the way."""

    claims: Claims | None
    path: Path | None
    fingerprint: tuple[Any, ...]  # changes when any token file changes
    error: str | None = None
    warnings: tuple[str, ...] = ()
    values: tuple[str, ...] = field(default=(), repr=False)  # the secrets read, for log redaction


def _read_file(path: Path) -> tuple[list[str], str | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return [], f"{path} is not text"
    except OSError as e:
        return [], f"cannot read {path}: {e.strerror}"
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")], None


def stamp(path: Path) -> tuple[Any, ...]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), st.st_mtime_ns, st.st_size, st.st_ino)


def read_profile(profile: TokenProfile, now: float) -> Found:
    """Read a profile's token file, or the best token of its directory."""
    if profile.kind == "idtoken" and profile.file is None:
        return _read_directory(profile, now)
    path = profile.target
    if not path.exists():
        return Found(None, None, stamp(path), error=f"no token file at {path}")
    lines, error = _read_file(path)
    if error:
        return Found(None, path, stamp(path), error=error)
    if not lines:
        return Found(None, path, stamp(path), error=f"{path} is empty")
    warnings = []
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        warnings.append(f"{path} is mode {mode:04o}; HTCondor skips token files not private to you (chmod 600)")
    try:
        claims = decode(lines[0])
    except TokenError as e:
        return Found(None, path, stamp(path), error=f"{path}: {e}", values=tuple(lines))
    return Found(claims, path, stamp(path), warnings=tuple(warnings), values=tuple(lines))


def _read_directory(profile: TokenProfile, now: float) -> Found:
    directory = profile.directory
    assert directory is not None
    try:
        files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.endswith(".rsub-new"))
    except FileNotFoundError:
        return Found(None, None, (str(directory), None), error=f"no token directory at {directory}")
    except OSError as e:
        return Found(None, None, (str(directory), None), error=f"cannot read {directory}: {e.strerror}")
    best: tuple[float, Path, Claims] | None = None
    warnings: list[str] = []
    values: list[str] = []
    for path in files:
        lines, error = _read_file(path)
        values += lines
        if error:
            warnings.append(error)
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            warnings.append(f"{path} is mode {mode:04o} and HTCondor skips it (chmod 600 {path})")
            continue
        for line in lines:
            try:
                claims = decode(line)
            except TokenError:
                warnings.append(f"{path} holds a line that is not a JWT")
                continue
            rank = claims.exp if claims.exp is not None else float("inf")
            if best is None or rank > best[0]:
                best = (rank, path, claims)
    fingerprint = (str(directory), *(stamp(p) for p in files))
    if best is None:
        return Found(None, None, fingerprint, error=f"no usable IDTOKEN in {directory}",
                     warnings=tuple(warnings), values=tuple(values))
    return Found(best[2], best[1], fingerprint, warnings=tuple(warnings), values=tuple(values))


def validate_new(kind: str, lines: Sequence[str], now: float, *, group: str | None, role: str | None) -> Claims:
    """Check what a refresh produced before it may replace the old token."""
    if not lines:
        raise TokenError("the refresh produced no token")
    claims = [decode(line) for line in lines]
    for c in claims:
        check(kind, c, now, group=group, role=role)
    return claims[0]


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, mode 0600 from the first byte, fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.rsub-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
