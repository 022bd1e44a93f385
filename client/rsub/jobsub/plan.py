"""A jobsub-style command line checked and resolved into a `Plan`: paths, sizes, lifetimes, names, lines."""

from __future__ import annotations

import math
import os
import re
import shlex
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rsub.wire.vocabulary import WRAPPER

INPUT_DIR = "TRANSFERRED_INPUT_FILES"  # $CONDOR_DIR_INPUT, inside the job's scratch directory

# The values jobsub_lite gives the named lifetimes (Grid Operations may change theirs).
LIFETIMES = {"short": 3 * 3600, "medium": 8 * 3600, "long": 85200}
_SIZE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([KMGT])B?)?", re.IGNORECASE)
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([SMHD]?)", re.IGNORECASE)
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4}
_SECONDS = {"": 1, "S": 1, "M": 60, "H": 3600, "D": 86400}
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A submit line as -l may give it: "key = value" or "+Attr = value"; rsubd parses the rest.
_LINE_RE = re.compile(r"\s*(?:\+|[Mm][Yy]\.)?[A-Za-z_][A-Za-z0-9_.]*\s*=")
# Text a submit description would take for a macro or a function call ("$(x)", "$ENV(x)").
_MACRO_RE = re.compile(r"\$[A-Za-z]*\(")
# Arguments made only of these need no quoting in either HTCondor or a POSIX shell.
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
# jobsub's prefixes for local files: taken as plain paths, since rsub ships every input itself.
_LOCAL_PREFIXES = ("dropbox://", "tardir://", "file://")


class BuildError(Exception):
    """The command line cannot make a job; the message says what to fix. Nothing was sent."""


@dataclass(frozen=True)
class TarInput:
    """One --tar: a tarball shipped as is, or a directory tarred up at submit time."""

    source: Path
    name: str  # its name in the sandbox (and, for a directory, in the submit directory)
    from_directory: bool
    tar_flag: str  # "z", "j", "J" or "": the tar option that reads its compression


@dataclass(frozen=True)
class Plan:
    """Everything checked and resolved; `describe`, `wrapper` and `materialize` only write it out."""

    script: Path
    arguments: tuple[str, ...]
    count: int
    inputs: tuple[Path, ...]
    tars: tuple[TarInput, ...]
    memory_mb: int | None
    disk_kb: int | None
    cpus: int | None
    lifetime: int | None
    environment: tuple[tuple[str, str], ...]
    lines: tuple[str, ...]


# -- units -----------------------------------------------------------------------


def _size(text: str, option: str, unit_power: int, default_unit: str) -> int:
    """A jobsub size ("2GB", "500KB", "2000") in units of 1024**unit_power bytes, rounded up."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise BuildError(f"{option} {text!r}: expected a number and an optional unit KB, MB, GB or TB "
                         f"(none means {default_unit}), like 2000MB or 2GB")
    power = _POWERS[(m.group(2) or default_unit[0]).upper()]
    value: int = math.ceil(float(m.group(1)) * 1024 ** (power - unit_power))  # int ** int is Any to the checker
    if value < 1:
        raise BuildError(f"{option} {text!r}: must be more than 0")
    return value


def memory_mb(text: str) -> int:
    """--memory as request_memory (MB); no unit means MB, as jobsub reads it."""
    return _size(text, "--memory", 2, "MB")


def disk_kb(text: str) -> int:
    """--disk as request_disk (KB); no unit means KB, as jobsub reads it."""
    return _size(text, "--disk", 1, "KB")


def duration_seconds(text: str, option: str, *, words: str = "") -> int:
    """A jobsub duration, NUMBER[s|m|h|d] (no unit: seconds), in whole seconds of at least one."""
    m = _DURATION_RE.fullmatch(text.strip().lower())
    if m is None:
        raise BuildError(f"{option} {text!r}: expected {words}a duration like 3h, 45m, 3600s or 2d")
    seconds = round(float(m.group(1)) * _SECONDS[m.group(2).upper()])
    if seconds < 1:
        raise BuildError(f"{option} {text!r}: must be at least one second")
    return seconds


def lifetime_seconds(text: str) -> int:
    """--expected-lifetime in seconds: short, medium, long, or NUMBER[s|m|h|d] (no unit: seconds)."""
    word = text.strip().lower()
    if word in LIFETIMES:
        return LIFETIMES[word]
    return duration_seconds(text, "--expected-lifetime", words="short, medium, long or ")


def writable(text: str, what: str) -> str:
    """Refuse text a submit description line cannot carry unchanged (a line break, a macro)."""
    return _writable(text, what)


def _writable(text: str, what: str) -> str:
    """Refuse text a submit description line cannot carry unchanged."""
    if "\n" in text or "\r" in text or "\0" in text:
        raise BuildError(f"{what} {text!r}: a submit description cannot carry a line break")
    if _MACRO_RE.search(text):
        raise BuildError(f"{what} {text!r}: '$(' would be read as a submit description macro")
    return text


# -- checking the command line -----------------------------------------------------


def _local(text: str, option: str, cwd: str) -> Path:
    for prefix in _LOCAL_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if "://" in text:
        raise BuildError(f"{option} {text}: rsub ships local files only; give a path on this machine")
    if not text:
        raise BuildError(f"{option}: empty path")
    return Path(os.path.abspath(os.path.join(cwd, os.path.expanduser(text))))


def _tar_flag(path: Path) -> str:
    """The tar option that reads this tarball's compression, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x1f\x8b"):
        return "z"
    if head.startswith(b"BZh"):
        return "j"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "J"
    return ""


def _tar_input(text: str, cwd: str, taken: set[str]) -> TarInput:
    path = _local(text, "--tar", cwd)
    if path.is_dir():
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", path.name) or "dir"
        name, n = f"{stem}.tar.gz", 1
        while name in taken:  # two directories of the same name: the tarballs are all shipped side by side
            name, n = f"{stem}_{n}.tar.gz", n + 1
        return TarInput(source=path, name=name, from_directory=True, tar_flag="z")
    if not path.exists():
        raise BuildError(f"--tar {text}: {path} does not exist")
    if not path.is_file():
        raise BuildError(f"--tar {text}: {path} is neither a directory nor a tarball")
    if not path.name.lower().endswith(_TAR_SUFFIXES):
        raise BuildError(f"--tar {text}: {path.name} is not named like a tarball ({', '.join(_TAR_SUFFIXES)})")
    try:
        if not tarfile.is_tarfile(path):
            raise BuildError(f"--tar {text}: {path} is not a tar archive")
        flag = _tar_flag(path)
    except (OSError, EOFError) as e:  # a truncated or damaged compressed file
        raise BuildError(f"--tar {text}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return TarInput(source=path, name=path.name, from_directory=False, tar_flag=flag)


def _environment(entries: Sequence[str], environ: Mapping[str, str]) -> list[tuple[str, str]]:
    pairs = []
    for entry in entries:
        name, eq, value = entry.partition("=")
        if not _ENV_NAME_RE.fullmatch(name):
            raise BuildError(f"-e {entry}: {name!r} is not an environment variable name")
        if not eq:
            if name not in environ:
                raise BuildError(f"-e {name}: {name} is not set here; set it, or give its value as -e {name}=VALUE")
            value = environ[name]
        pairs.append((name, _writable(value, f"-e {name}: its value")))
    return pairs


def _lines(lines: Sequence[str]) -> list[str]:
    kept = []
    for line in lines:
        if line.strip() in ("", '""', "''"):  # as jobsub_lite, which drops these
            continue
        if "\n" in line or "\r" in line:
            raise BuildError(f"-l {line!r}: one submit line per -l")
        if re.match(r"\s*queue\b", line, re.IGNORECASE) or not _LINE_RE.match(line):
            raise BuildError(f"-l {line!r}: expected a submit command like 'key = value' or '+Attr = value' "
                             "(rsub writes the queue statement itself, from -N)")
        kept.append(line.strip())
    return kept


def build(url: str, arguments: Sequence[str], *, count: int | None = None, input_files: Sequence[str] = (),
          tars: Sequence[str] = (), memory: str | None = None, disk: str | None = None, cpus: int | None = None,
          lifetime: str | None = None, environment: Sequence[str] = (), lines: Sequence[str] = (),
          cwd: str, environ: Mapping[str, str]) -> Plan:
    """Check a jobsub-style command line; BuildError says what is wrong, before anything is written or sent."""
    if not url.startswith("file://"):
        raise BuildError(f"{url}: the script must be given as file:///path/to/script")
    script = _local(url, "script", cwd)
    if not script.exists():
        raise BuildError(f"script {script} does not exist")
    if not script.is_file():
        raise BuildError(f"script {script} is not a file")
    if not os.access(script, os.R_OK):
        raise BuildError(f"script {script} is not readable")
    if not os.access(script, os.X_OK):
        raise BuildError(f"script {script} is not executable; run: chmod +x {shlex.quote(str(script))}")
    inputs = []
    for text in input_files:
        path = _local(text, "-f", cwd)
        if not path.exists():
            raise BuildError(f"-f {text}: {path} does not exist")
        if not path.is_file():
            raise BuildError(f"-f {text}: {path} is not a file (to ship a directory, use --tar {text})")
        if not os.access(path, os.R_OK):
            raise BuildError(f"-f {text}: {path} is not readable")
        inputs.append(path)
    # Every input lands in the job's scratch directory under its own name, so names must not collide.
    if script.name == WRAPPER:
        raise BuildError(f"script {script}: rsub's wrapper has that name; rename the script")
    owners: dict[str, str] = {WRAPPER: "rsub's wrapper", script.name: f"the script {script}"}
    for path in inputs:
        if path.name in owners:
            raise BuildError(f"-f {path}: its name {path.name} is already taken by {owners[path.name]}")
        owners[path.name] = f"-f {path}"
    tar_inputs = []
    for text in tars:
        tar = _tar_input(text, cwd, set(owners))
        if tar.name in owners:
            raise BuildError(f"--tar {text}: its name {tar.name} is already taken by {owners[tar.name]}")
        owners[tar.name] = f"--tar {tar.source}"
        tar_inputs.append(tar)
    for name, owner in owners.items():
        if name == INPUT_DIR or name.startswith((".unwind_", "_condor_")):
            raise BuildError(f"{owner}: rsub cannot ship a file named {name!r}: the wrapper uses that name")
    for path in (script, *inputs, *(t.source for t in tar_inputs if not t.from_directory)):
        _writable(str(path), "path")
        # transfer_input_files is a comma separated list whose entries are stripped of blanks.
        if "," in str(path) or path.name != path.name.strip():
            raise BuildError(f"path {str(path)!r}: HTCondor cannot ship a file whose path has a comma, "
                             "or whose name starts or ends with a blank")
    return Plan(
        script=script,
        arguments=tuple(_writable(a, "job argument") for a in arguments),
        count=count or 1,
        inputs=tuple(inputs),
        tars=tuple(tar_inputs),
        memory_mb=None if memory is None else memory_mb(memory),
        disk_kb=None if disk is None else disk_kb(disk),
        cpus=cpus,
        lifetime=None if lifetime is None else lifetime_seconds(lifetime),
        environment=tuple(_environment(environment, environ)),
        lines=tuple(_lines(lines)),
    )
