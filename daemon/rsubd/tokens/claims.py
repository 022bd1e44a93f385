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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsub.wire.vocabulary import iso

KINDS = ("idtoken", "scitoken")
# Default refresh point: once three quarters of the lifetime are used, whatever the lifetime, so that a
# 120 s token is refreshed every 90 s and a 12 h one every 9 h (never "always due", as a fixed floor of
# 30 minutes made every token of 30 minutes or less).
DEFAULT_MARGIN_FRACTION = 0.25
DEFAULT_MARGIN_UNKNOWN = 1800.0  # a token that does not say when it was issued: refresh 30 minutes before exp


class TokenError(Exception):
    """A token that cannot be read or is not acceptable; the message never holds the token."""


@dataclass(frozen=True)
class Claims:
    """The claims of one JWT that rsub reads."""

    raw: Mapping[str, Any]
    kid: str | None = None  # the header's key id: HTCondor presents a token only to a schedd that has the key

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
    kid = header.get("kid")
    return Claims(payload, kid=kid if isinstance(kid, str) else None)


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


OWN_FILE_PREFIX = "00-rsub-"
OLD_FILE_PREFIX = "rsub_"  # what rsub named its file in a token directory before; renamed at start


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
        """The file a refresh writes: the profile's file, or `00-rsub-<name>` in its directory.

        HTCondor presents the first token of a directory in name order whose issuer and key fit
        (tokens/directory.py), so rsub's own file is named to sort before the files people name.
        """
        if self.file is not None:
            return self.file
        assert self.directory is not None
        return self.directory / f"{OWN_FILE_PREFIX}{self.name}"

    def margin(self, claims: Claims | None) -> float:
        """Seconds before `exp` at which to refresh."""
        if self.refresh_margin is not None:
            return self.refresh_margin
        lifetime = claims.lifetime if claims is not None else None
        return DEFAULT_MARGIN_UNKNOWN if not lifetime else lifetime * DEFAULT_MARGIN_FRACTION

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


def validate_new(kind: str, lines: Sequence[str], now: float, *, group: str | None, role: str | None) -> Claims:
    """Check what a refresh produced before it may replace the old token."""
    if not lines:
        raise TokenError("the refresh produced no token")
    claims = [decode(line) for line in lines]
    for c in claims:
        check(kind, c, now, group=group, role=role)
    return claims[0]
