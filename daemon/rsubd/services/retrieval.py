"""A second retrieve of the same job never destroys what the user changed since the first.

A retrieve is repeated only when rsubd stopped after the schedd wrote a job's
output but before the ledger recorded it (the ledger records `retrieve_started_at`
before every retrieve, so rsub knows a repeat when it sees one). Before a
repeat, every output file of the job written since that first attempt (its own
output, or the user's edit of it) is set aside as `NAME.rsub-kept-<time>`. After
the repeat, a set-aside copy identical to the file fetched again is deleted; one
that differs is the user's edit: it goes back to its own name, and the copy just
fetched is left beside it as `NAME.rsub-refetched-<time>` (logged). If the
repeat fails, the set-aside files are put back.

Output names come from the submitted description (output, error,
transfer_output_files and its remaps), expanded for the job's own cluster and
proc; a job that names no transfer_output_files sends back whatever new files
it made, which rsub cannot know in advance: those are not set aside.
"""

from __future__ import annotations

import errno
import filecmp
import glob
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from rsubd import submitdesc
from rsubd.services import eventlog

log = structlog.get_logger("rsubd.services.retrieval")
KEPT = ".rsub-kept-"
REFETCHED = ".rsub-refetched-"




def output_targets(
    submitted_description: str, submit_dir: str, cluster: int, procs: Iterable[int]
) -> dict[int, list[Path]]:
    """Where each proc's output lands, as the schedd's retrieve writes it."""
    procs = list(procs)
    desc = submitdesc.parse(submitted_description, cwd=submit_dir)
    expanded = submitdesc.expand(desc, cluster=cluster, limit=max(procs, default=-1) + 1)
    out: dict[int, list[Path]] = {}
    for proc in procs:
        if proc >= len(expanded):
            continue
        c = expanded[proc]
        iwd = Path(submit_dir, os.path.expanduser(c.get("initialdir", ".").strip()))
        remaps = submitdesc.parse_remaps(c.get("transfer_output_remaps", ""))
        names = [c.get("output", ""), c.get("error", "")]
        names += [remaps.get(n.strip(), n.strip()) for n in c.get("transfer_output_files", "").split(",")]
        out[proc] = [iwd / n for n in (x.strip() for x in names) if n and n != os.devnull]
    return out


def log_targets(
    submitted_description: str, submit_dir: str, cluster: int, procs: Iterable[int], dest: str | None = None
) -> dict[int, tuple[list[Path], Path]]:
    """For each proc whose event log comes home under a name of its own: (where that copy may be, the user's log).

    A schedd spooling a job rewrites its UserLog to the basename (reference dag/README: UserLog
    "probe.dag.dagman.log", SUBMIT_UserLog the client's full path), so the copy comes back into
    the job's initialdir under its basename, whether the log was `logs/job.log` or absolute; the
    path it names is looked at too. With `dest`, the retrieve wrote into that directory instead
    of the job's initialdir, and the user's log is written there too (as `--dest` puts an
    absolute output there).
    """
    if eventlog.LOG_MACRO not in submitted_description:
        # No `log` sent under a per-proc name (services/submission.py adds the macro when it does): a
        # poll retrieving 5,000 jobs of 1,000 clusters need not expand 1,000 descriptions to learn that.
        return {}
    names = _log_names(submitted_description, submit_dir, cluster)
    out: dict[int, tuple[list[Path], Path]] = {}
    for proc in procs:
        entry = names[proc] if 0 <= proc < len(names) else None
        if entry is None:
            continue
        per_proc, user_log, initialdir = entry
        iwd = Path(submit_dir, os.path.expanduser(initialdir))
        if dest:
            here = Path(dest)
            user = here / (os.path.basename(user_log) if os.path.isabs(user_log) else user_log)
            out[proc] = ([here / os.path.basename(per_proc), here / per_proc], user)
        else:
            out[proc] = ([iwd / os.path.basename(per_proc), iwd / per_proc], iwd / user_log)
    return out


# Each proc's (per-proc log, user's log, initialdir), by cluster: a cluster's procs are retrieved a
# few at a time, and expanding all of its procs for each batch made a 1,000-proc cluster's retrieves
# quadratic (bench/retrieval.py). A description never changes once submitted.
_LogNames = list[tuple[str, str, str] | None]
_log_cache: dict[tuple[str, str, int], _LogNames] = {}
_log_cache_lock = threading.Lock()
_LOG_CACHE_CLUSTERS = 64


def _log_names(text: str, submit_dir: str, cluster: int) -> _LogNames:
    key = (text, submit_dir, cluster)
    with _log_cache_lock:
        hit = _log_cache.pop(key, None)
        if hit is not None:
            _log_cache[key] = hit  # the most recently used last: the oldest unused goes first
            return hit
    names: _LogNames = []
    for c in submitdesc.expand(submitdesc.parse(text, cwd=submit_dir), cluster=cluster):
        user_log, per_proc = c.get(eventlog.LOG_MACRO, "").strip(), c.get("log", "").strip()
        ok = user_log and per_proc and per_proc != user_log
        names.append((per_proc, user_log, c.get("initialdir", ".").strip()) if ok else None)
    with _log_cache_lock:
        while len(_log_cache) >= _LOG_CACHE_CLUSTERS:
            del _log_cache[next(iter(_log_cache))]
        _log_cache[key] = names
    return names


def set_aside(paths: Iterable[Path], since: float) -> list[tuple[Path, Path]]:
    """Move output files written since `since` out of the way of a repeated retrieve."""
    moved = []
    stamp = int(time.time())
    for path in paths:
        try:
            if not path.exists():
                # A repeat cut short after setting this file aside: carry on with what it set aside.
                earlier = sorted(path.parent.glob(glob.escape(path.name) + KEPT + "*"))
                if earlier:
                    moved.append((path, earlier[-1]))
                continue
            if path.is_file() and path.stat().st_mtime >= since - 1:
                kept = path.with_name(f"{path.name}{KEPT}{stamp}")
                os.replace(path, kept)
                moved.append((path, kept))
        except OSError as e:
            log.warning("retrieve.set_aside_failed", path=str(path), error=e.strerror)
    return moved


def leftovers(paths: Iterable[Path]) -> list[tuple[Path, Path]]:
    """Files an earlier repeat set aside and never settled (it was cut short), newest for each path."""
    found = []
    for path in paths:
        earlier = sorted(path.parent.glob(glob.escape(path.name) + KEPT + "*"))
        if earlier:
            found.append((path, earlier[-1]))
    return found


def settle(moved: list[tuple[Path, Path]], *, succeeded: bool) -> list[str]:
    """After the repeat: drop copies equal to what came back; the user's edits win their names back.

    Returns where each differing re-fetched copy was left.
    """
    kept = []
    stamp = int(time.time())
    for path, aside in moved:
        try:
            if not succeeded or not path.exists():
                # The repeat failed or brought nothing: what was set aside goes back (over anything
                # the failed repeat half wrote; the next repeat fetches it again).
                os.replace(aside, path)
                continue
            if filecmp.cmp(path, aside, shallow=False):
                aside.unlink()
            else:
                refetched = path.with_name(f"{path.name}{REFETCHED}{stamp}")
                os.replace(path, refetched)
                os.replace(aside, path)
                kept.append(str(refetched))
                log.warning("retrieve.kept_user_copy", path=str(path), refetched=str(refetched))
        except OSError as e:
            log.warning("retrieve.settle_failed", path=str(path), error=e.strerror)
    return kept


# -- why a retrieve cannot write, and whether waiting helps ---------------------------------------

# What no retry can fix: the path cannot exist as named (a missing mount, a file where a directory
# must be, a read-only file system, a name too long or looping). A person must change something.
PERMANENT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EROFS, errno.ELOOP, errno.ENAMETOOLONG,
                              errno.EISDIR})


@dataclass(frozen=True)
class Unwritable:
    """An output path this user cannot write now, and whether that may heal by itself."""

    path: str
    errno: int
    strerror: str
    permanent: bool

    def __str__(self) -> str:
        return f"cannot write {self.path}: (errno {self.errno}) {self.strerror}"


def _refusal(e: OSError, path: Path, *, directory: Path | None) -> Unwritable:
    code = e.errno or 0
    permanent = code in PERMANENT_ERRNOS
    if code in (errno.EACCES, errno.EPERM) and directory is not None:
        # A directory of someone else's: only they (or an administrator) can open it up. One of the
        # user's own (chmod, chattr +i) is theirs to fix, and retrying finds it fixed.
        try:
            permanent = directory.stat().st_uid != os.geteuid()
        except OSError:
            permanent = True
    return Unwritable(str(path), code, e.strerror or os.strerror(code), permanent)


def probe(path: Path) -> Unwritable | None:
    """Whether a retrieve could write `path` now (making its missing directories); leaves no trace.

    Missing directories are tried by making (and at once removing) the first of them; an existing
    file by opening it for writing (without truncating it); a new file by making and removing a
    probe file beside it.
    """
    path = Path(os.path.abspath(path))
    parent = path.parent
    existing = parent
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            return _refusal(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), existing, directory=None)
        if existing != parent:
            first = parent
            while first.parent != existing:
                first = first.parent
            try:
                os.mkdir(first, 0o700)
            except OSError as e:
                return _refusal(e, first, directory=existing)
            os.rmdir(first)
            return None
        if path.is_dir():
            return None  # an output directory (transfer_output_files names one): its files are its own
        if os.path.lexists(path):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY))
            except OSError as e:
                # The file itself refuses (immutable, locked, permissions): the user can free it, and
                # the next try finds it freed; only a missing directory below it stays missing.
                return Unwritable(str(path), e.errno or 0, e.strerror or "", e.errno in PERMANENT_ERRNOS)
            return None
        trial = parent / f".rsub-probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.close(os.open(trial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as e:
            return _refusal(e, path, directory=parent)
        os.unlink(trial)
        return None
    except OSError as e:  # a stat of something vanishing under us: say so, and let the retry look again
        return Unwritable(str(path), e.errno or 0, e.strerror or "", False)


def first_unwritable(paths: Iterable[Path]) -> Unwritable | None:
    """The first path of a job's outputs a retrieve could not write, permanent problems first."""
    found = [p for p in (probe(path) for path in paths) if p is not None]
    return next((p for p in found if p.permanent), found[0] if found else None)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def redirected(ad: Mapping[str, Any], dest: str) -> dict[str, str]:
    """The edits (attribute: ClassAd expression) that make a job's retrieve write into `dest`.

    The schedd writes a spooled job's output relative to SUBMIT_Iwd, with its remaps and
    its Out and Err: relative names keep their place below `dest`, absolute ones inside the old
    Iwd become relative, and absolute ones elsewhere land in `dest` under their own name.
    """
    old = str(ad.get("SUBMIT_Iwd") or "")

    def moved(path: str) -> str:
        if not os.path.isabs(path) or path == os.devnull:
            return path
        if old and (path == old or path.startswith(old.rstrip(os.sep) + os.sep)):
            return os.path.relpath(path, old)
        return os.path.basename(path)

    edits = {"SUBMIT_Iwd": _quoted(dest)}
    for attr in ("Out", "Err"):
        value = ad.get(attr)
        if isinstance(value, str) and moved(value) != value:
            edits[attr] = _quoted(moved(value))
    remaps = ad.get("SUBMIT_TransferOutputRemaps")
    pairs = submitdesc.parse_remaps(remaps) if isinstance(remaps, str) else {}
    if any(moved(dst) != dst for dst in pairs.values()):
        edits["SUBMIT_TransferOutputRemaps"] = _quoted("; ".join(f"{src} = {moved(dst)}" for src, dst in pairs.items()))
    return edits
