"""Token files: reading a profile's token as HTCondor would present it, and writing one privately.

A token directory is read in HTCondor's order (condor_auth_passwd.cpp, `findTokens`):
files in name order, lines in file order, and the first token whose issuer and key
id fit the schedd is presented, whatever its expiry. rsub cannot ask the schedd which
issuers and keys it trusts, so it takes those of its own file (the one a refresh
writes) or, without one, of the first token; a file that sorts before rsub's own with
the same issuer and key shadows it, and is named in a warning.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsub.wire.vocabulary import iso
from rsubd.tokens.claims import Claims, TokenError, TokenProfile, decode


@dataclass(frozen=True)
class Found:
    """The token a profile would present now, and what was noticed on the way."""

    claims: Claims | None
    path: Path | None
    fingerprint: tuple[Any, ...]  # changes when any token file changes
    error: str | None = None
    warnings: tuple[str, ...] = ()
    values: tuple[str, ...] = field(default=(), repr=False)  # the secrets read, for log redaction


def read_file(path: Path) -> tuple[list[str], str | None]:
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
    """Read a profile's token file, or the token HTCondor would present from its directory."""
    if profile.kind == "idtoken" and profile.file is None:
        return read_directory(profile, now)
    path = profile.target
    if not path.exists():
        return Found(None, None, stamp(path), error=f"no token file at {path}")
    lines, error = read_file(path)
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


def read_directory(profile: TokenProfile, now: float) -> Found:
    """The token HTCondor presents from a profile's directory, and the files that shadow rsub's own."""
    directory = profile.directory
    assert directory is not None
    try:
        # Name order as HTCondor sorts it: by bytes (for UTF-8 names the same as by code point).
        files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.endswith(".rsub-new")
                       and not p.name.startswith("."))
    except FileNotFoundError:
        return Found(None, None, (str(directory), None), error=f"no token directory at {directory}")
    except OSError as e:
        return Found(None, None, (str(directory), None), error=f"cannot read {directory}: {e.strerror}")
    tokens: list[tuple[Path, Claims]] = []
    warnings: list[str] = []
    values: list[str] = []
    for path in files:
        lines, error = read_file(path)
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
                tokens.append((path, decode(line)))
            except TokenError:
                warnings.append(f"{path} holds a line that is not a JWT")
    fingerprint = (str(directory), *(stamp(p) for p in files))
    if not tokens:
        return Found(None, None, fingerprint, error=f"no usable IDTOKEN in {directory}",
                     warnings=tuple(warnings), values=tuple(values))
    own = next((t for t in tokens if t[0] == profile.target), None)
    ref = (own or tokens[0])[1]
    # The tokens this schedd would take: the same issuer and key id as the reference one.
    fitting = [t for t in tokens if (t[1].issuer, t[1].kid) == (ref.issuer, ref.kid)]
    path, claims = fitting[0]
    if own is not None and path != own[0]:
        expired = claims.exp is not None and claims.exp <= now
        why = f"it expired at {iso(claims.exp)}" if expired else "rsub's refreshes of its own file do not reach it"
        warnings.append(f"{path.name} sorts before {own[0].name} in {directory} and holds a token of the same "
                        f"issuer and key, so HTCondor presents it instead ({why}): remove {path} unless you mean it")
    return Found(claims, path, fingerprint, warnings=tuple(warnings), values=tuple(values))


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
