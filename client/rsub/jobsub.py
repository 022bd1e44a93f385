"""`rsub submit [options] file:///path/to/script [ARG ...]`: build the submit description the way jobsub_submit does.

The options and their meaning follow jobsub_lite (`-N`, `-f`, `--tar`, `--memory`,
`--disk`, `--cpus`, `--expected-lifetime`, `-e`, `-l`). Each submit gets a fresh
directory of its own under rsub's state directory:

    <state>/jobs/<UTC time>-<script>-<id>/
        job.sub                the submit description, as sent to rsubd
        rsub_wrapper.sh        the job's executable: lays out the inputs, then runs the script
        <DIR>.tar.gz           one per `--tar DIR`, made at submit time
        <cluster>.log          the job event log (a real schedd writes it)
        <cluster>.<proc>.out   stdout, and .err stderr, of each job once retrieved

The wrapper gives the script what jobsub's wrapper gives it: `$CONDOR_DIR_INPUT`
holding the `-f` files; each tarball moved into a directory of its own and unpacked
there, its path in `$INPUT_TAR_FILE` (then `$INPUT_TAR_FILE_1`, ...) and that directory
in `$INPUT_TAR_DIR_LOCAL` (then `$INPUT_TAR_DIR_LOCAL_1`, ...); `$CLUSTER` and `$PROCESS`.

Standard library only: the client must start fast.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import re
import shlex
import shutil
import tarfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self

from rsub.wire import paths
from rsub.wire.vocabulary import WRAPPER

SUBMIT_FILE = "job.sub"
INPUT_DIR = "TRANSFERRED_INPUT_FILES"  # $CONDOR_DIR_INPUT, inside the job's scratch directory
UNWIND = ".unwind_{}"  # where tarball N is moved and unpacked, as jobsub_lite names it
PROGRESS_THRESHOLD = 50 * 1024**2  # bytes of input above which a terminal shows spooling progress

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
_PLAIN_RE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
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


# -- the command line ------------------------------------------------------------


def count(text: str) -> int:
    """A count of at least 1 (argparse names the type "count" in its error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    """The jobsub_submit options of `rsub submit`; they apply to file:// submits only."""
    g = parser.add_argument_group("jobsub-style options (with file:///path/to/script; they go before it)")
    g.add_argument("-N", dest="count", type=count, metavar="COUNT", help="submit COUNT copies of the job ($PROCESS is 0..COUNT-1)")
    g.add_argument("-f", dest="input_files", action="append", default=[], metavar="FILE",
                   help="an input file, found by the job in $CONDOR_DIR_INPUT (repeatable)")
    g.add_argument("--tar", "--tar-file-name", "--tar_file_name", dest="tars", action="append", default=[],
                   metavar="DIR|TARBALL", help="a directory (tarred up now) or a tarball, unpacked for the job; "
                   "found through $INPUT_TAR_FILE, $INPUT_TAR_FILE_1, ... (repeatable)")
    g.add_argument("--memory", metavar="SIZE", help="request_memory, e.g. 2000MB or 2GB (no unit: MB)")
    g.add_argument("--disk", metavar="SIZE", help="request_disk, e.g. 500MB or 10GB (no unit: KB)")
    g.add_argument("--cpus", "--cpu", dest="cpus", type=count, metavar="N", help="request_cpus")
    g.add_argument("--expected-lifetime", dest="lifetime", metavar="TIME",
                   help="short (3h), medium (8h), long (23.7h) or a duration like 3h, 45m, 3600s (no unit: s)")
    g.add_argument("-e", "--environment", dest="environment", action="append", default=[], metavar="VAR[=VALUE]",
                   help="pass VAR to the job with its value here, or with VALUE (repeatable)")
    g.add_argument("-l", "--lines", dest="lines", action="append", default=[], metavar="LINE",
                   help="an extra submit description line, put before 'queue' (repeatable)")
    g.add_argument("--dry-run", action="store_true", help="print the submit description and exit; write nothing")


def options_used(args: argparse.Namespace) -> list[str]:
    """The jobsub-style options given, by name: a plain submit file cannot take them."""
    given = {"-N": args.count is not None, "-f": bool(args.input_files), "--tar": bool(args.tars),
             "--memory": args.memory is not None, "--disk": args.disk is not None, "--cpus": args.cpus is not None,
             "--expected-lifetime": args.lifetime is not None, "-e": bool(args.environment),
             "-l": bool(args.lines), "--dry-run": args.dry_run}
    return [name for name, used in given.items() if used]


# -- units -----------------------------------------------------------------------


def _size(text: str, option: str, unit_power: int, default_unit: str) -> int:
    """A jobsub size ("2GB", "500KB", "2000") in units of 1024**unit_power bytes, rounded up."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise BuildError(f"{option} {text!r}: expected a number and an optional unit KB, MB, GB or TB "
                         f"(none means {default_unit}), like 2000MB or 2GB")
    power = _POWERS[(m.group(2) or default_unit[0]).upper()]
    value = math.ceil(float(m.group(1)) * 1024 ** (power - unit_power))
    if value < 1:
        raise BuildError(f"{option} {text!r}: must be more than 0")
    return value


def memory_mb(text: str) -> int:
    """--memory as request_memory (MB); no unit means MB, as jobsub reads it."""
    return _size(text, "--memory", 2, "MB")


def disk_kb(text: str) -> int:
    """--disk as request_disk (KB); no unit means KB, as jobsub reads it."""
    return _size(text, "--disk", 1, "KB")


def lifetime_seconds(text: str) -> int:
    """--expected-lifetime in seconds: short, medium, long, or NUMBER[s|m|h|d] (no unit: seconds)."""
    word = text.strip().lower()
    if word in LIFETIMES:
        return LIFETIMES[word]
    m = _DURATION_RE.fullmatch(word)
    if m is None:
        raise BuildError(f"--expected-lifetime {text!r}: expected short, medium, long or a duration "
                         "like 3h, 45m, 3600s or 2d")
    seconds = round(float(m.group(1)) * _SECONDS[m.group(2).upper()])
    if seconds < 1:
        raise BuildError(f"--expected-lifetime {text!r}: must be at least one second")
    return seconds


# -- quoting ---------------------------------------------------------------------


def _condor_word(word: str) -> str:
    """One argument or value in HTCondor's new syntax: single quotes protect blanks, '' and "" are literal quotes."""
    if _PLAIN_RE.fullmatch(word):
        return word
    # Anything else is single-quoted, backslashes included: literal for HTCondor and a shell alike.
    return "'" + word.replace("'", "''").replace('"', '""') + "'"


def quote_arguments(arguments: Sequence[str]) -> str:
    """The value of `arguments` in HTCondor's new syntax, double quotes included."""
    return '"' + " ".join(_condor_word(a) for a in arguments) + '"'


def quote_environment(pairs: Sequence[tuple[str, str]], *, preset: str = "") -> str:
    """The value of `environment` in HTCondor's new syntax ("A=1 B='two words'"), after `preset` as written."""
    words = [preset] if preset else []
    words += [f"{name}={_condor_word(value) if value else ''}" for name, value in pairs]
    return '"' + " ".join(words) + '"'


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


# -- writing it out --------------------------------------------------------------


def submit_dir(script_name: str, now: datetime.datetime | None = None) -> Path:
    """A fresh per-submit directory's path (not created): <state>/jobs/<UTC time>-<script>-<id>."""
    now = now or datetime.datetime.now(datetime.UTC)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", script_name)[:64] or "job"
    return paths.state_dir() / "jobs" / f"{now:%Y%m%dT%H%M%SZ}-{name}-{uuid.uuid4().hex[:8]}"


def _tar_path(plan: Plan, tar: TarInput, directory: Path) -> Path:
    return directory / tar.name if tar.from_directory else tar.source


def describe(plan: Plan, directory: Path) -> str:
    """The submit description, with the per-submit directory as initialdir."""
    inputs = [plan.script, *plan.inputs, *(_tar_path(plan, t, directory) for t in plan.tars)]
    out = [
        f"# written by rsub submit for file://{plan.script}",
        "universe = vanilla",
        f"executable = {directory / WRAPPER}",
    ]
    if plan.arguments:
        out.append(f"arguments = {quote_arguments(plan.arguments)}")
    out += [
        f"initialdir = {directory}",
        f"transfer_input_files = {', '.join(str(p) for p in inputs)}",
        "should_transfer_files = YES",
        "when_to_transfer_output = ON_EXIT",
        "output = $(Cluster).$(Process).out",
        "error = $(Cluster).$(Process).err",
        "log = $(Cluster).log",
        # jobsub's jobs know their ids as $CLUSTER and $PROCESS.
        f"environment = {quote_environment(plan.environment, preset='CLUSTER=$(Cluster) PROCESS=$(Process)')}",
    ]
    if plan.memory_mb is not None:
        out.append(f"request_memory = {plan.memory_mb}")
    if plan.disk_kb is not None:
        out.append(f"request_disk = {plan.disk_kb}")
    if plan.cpus is not None:
        out.append(f"request_cpus = {plan.cpus}")
    if plan.lifetime is not None:
        out.append(f"+JOB_EXPECTED_MAX_LIFETIME = {plan.lifetime}")
    out += list(plan.lines)
    out.append(f"queue {plan.count}" if plan.count != 1 else "queue")
    return "\n".join(out) + "\n"


def wrapper(plan: Plan) -> str:
    """The job's executable (POSIX sh): lay out the inputs as jobsub's wrapper does, then run the script."""
    q = shlex.quote
    out = [
        "#!/bin/sh",
        f"# written by rsub submit: sets up the inputs of {q(plan.script.name)} as jobsub_submit's wrapper does,",
        "# then runs it with the job's arguments, and exits with its status.",
        'rsub_fail() { echo "rsub wrapper: $*" >&2; exit 1; }',
        'scratch=${_CONDOR_SCRATCH_DIR:-$(pwd)}',
        f"CONDOR_DIR_INPUT=$scratch/{INPUT_DIR}",
        "export CONDOR_DIR_INPUT",
        'mkdir -p "$CONDOR_DIR_INPUT" || rsub_fail "cannot make $CONDOR_DIR_INPUT"',
    ]
    for path in plan.inputs:
        out.append(f'mv -f "$scratch"/{q(path.name)} "$CONDOR_DIR_INPUT"/ '
                   f'|| rsub_fail {q("input file " + path.name + " is not in the job directory")}')
    for i, tar in enumerate(plan.tars):
        suffix = f"_{i}" if i else ""
        unwind = f'"$scratch"/{UNWIND.format(i)}'
        flag = f"-x{tar.tar_flag}f"
        out += [
            f"mkdir -p {unwind} && mv -f \"$scratch\"/{q(tar.name)} {unwind}/ &&",
            f"  (cd {unwind} && tar {flag} {q(tar.name)}) || rsub_fail {q('cannot unpack ' + tar.name)}",
            f"INPUT_TAR_FILE{suffix}=$scratch/{UNWIND.format(i)}/{q(tar.name)}",
            f"INPUT_TAR_DIR_LOCAL{suffix}=$scratch/{UNWIND.format(i)}",
            f"export INPUT_TAR_FILE{suffix} INPUT_TAR_DIR_LOCAL{suffix}",
        ]
    out += [
        f'chmod u+x "$scratch"/{q(plan.script.name)} 2>/dev/null',
        f'exec "$scratch"/{q(plan.script.name)} "$@"',
    ]
    return "\n".join(out) + "\n"


def _tar_directory(source: Path, dest: Path) -> None:
    """Tar up a directory's contents (not the directory itself), as jobsub's tardir:// does."""
    tmp = dest.with_name(f".{dest.name}.partial")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for child in sorted(source.iterdir()):
            tar.add(child, arcname=child.name)
    tmp.replace(dest)


def materialize(plan: Plan, directory: Path, description: str) -> None:
    """Create the per-submit directory with the wrapper, the tarballs made from directories, and job.sub."""
    try:
        for parent in (directory.parent.parent, directory.parent):
            paths.ensure_private_dir(parent)
        directory.mkdir(mode=0o700)
    except OSError as e:
        raise BuildError(f"cannot create {directory}: {e.strerror or e}") from None
    try:
        for tar in plan.tars:
            if tar.from_directory:
                try:
                    _tar_directory(tar.source, directory / tar.name)
                except (OSError, tarfile.TarError) as e:
                    raise BuildError(f"--tar {tar.source}: cannot tar it up: {e}") from None
        exe = directory / WRAPPER
        exe.write_text(wrapper(plan), encoding="utf-8")
        exe.chmod(0o755)
        (directory / SUBMIT_FILE).write_text(description, encoding="utf-8")
    except BaseException as e:
        shutil.rmtree(directory, ignore_errors=True)
        if isinstance(e, OSError):
            raise BuildError(f"cannot write {directory}: {e.strerror or e}") from None
        raise


def input_bytes(plan: Plan, directory: Path) -> int:
    """How much the schedd is sent: the script, the -f files and the tarballs."""
    files = [plan.script, *plan.inputs, *(_tar_path(plan, t, directory) for t in plan.tars)]
    total = 0
    for path in files:
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


# -- progress --------------------------------------------------------------------


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """While a large submit is in flight, "spooling 1.2 GB ... 12 s" on a terminal; nothing otherwise."""

    def __init__(self, total: int, stream: IO[str], *, threshold: int = PROGRESS_THRESHOLD,
                 interval: float = 1.0) -> None:
        self.total = total
        self.stream = stream
        self.interval = interval
        self.enabled = total > threshold and stream.isatty()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._width = 0

    def _show(self, elapsed: float) -> None:
        text = f"\rspooling {human_size(self.total)} ... {elapsed:.0f} s"
        self._width = max(self._width, len(text))
        self.stream.write(text)
        self.stream.flush()

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            self._show(time.monotonic() - started)
            if self._done.wait(self.interval):
                return

    def __enter__(self) -> Self:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="rsub-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._done.set()
            self._thread.join()
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
