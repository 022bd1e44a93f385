"""HTCondor's file transfer rules, for the embedded scheduler.

Three moves, as with a real schedd: stage-in (client files into the job's spool
directory, at `spool`), sandbox set-up and output collection (spool to execute
directory and back), and retrieve (spool into the job's submit-time Iwd, with
`transfer_output_remaps` applied). Every file that lands for the user is
written to a temporary name, fsynced and renamed, so a crash never leaves half
a file under the real name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rsubd.backends.local import events

STDOUT = "_condor_stdout"
STDERR = "_condor_stderr"


class TransferError(Exception):
    """A file transfer failed; the message names the file and the OS error, as HTCondor does."""


def split_list(value: Any) -> list[str]:
    """A comma (or whitespace) separated file list as HTCondor reads it."""
    if not isinstance(value, str):
        return []
    return [p.strip() for p in value.replace("\n", ",").split(",") if p.strip()]


def parse_remaps(value: Any) -> dict[str, str]:
    """`transfer_output_remaps` ("name = dest; name2 = dest2") as a dict."""
    remaps: dict[str, str] = {}
    if not isinstance(value, str):
        return remaps
    for part in value.split(";"):
        name, eq, dest = part.partition("=")
        if eq and name.strip() and dest.strip():
            remaps[name.strip()] = dest.strip()
    return remaps


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_file_durably(src: Path, dest: Path, dirs: set[Path] | None = None) -> None:
    """Copy src to dest via a temporary file in dest's directory, fsync, rename.

    A failed copy (a full disk, say) removes its temporary file and leaves dest as it was.
    The rename is durable once dest's directory is fsynced: here, or, given `dirs`, by the
    caller, once per directory for a whole batch (`sync_dirs`) before it reports the batch done.
    """
    if not dest.parent.exists():  # a parent that is a file then fails as "Not a directory"
        dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.rsub-partial")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copymode(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if dirs is None:
        _fsync_dir(dest.parent)
    else:
        dirs.add(dest.parent)


def sync_dirs(dirs: set[Path]) -> None:
    """fsync each directory once: the renames of every file copied into it so far are durable after."""
    for path in sorted(dirs):
        _fsync_dir(path)
    dirs.clear()


def copy_tree(src: Path, dest: Path, *, durable: bool = False, dirs: set[Path] | None = None) -> None:
    """Copy a file or a directory tree; durable copies go through `copy_file_durably` (and `dirs`)."""
    if src.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        for child in sorted(src.iterdir()):
            copy_tree(child, dest / child.name, durable=durable, dirs=dirs)
    elif durable:
        copy_file_durably(src, dest, dirs)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def _missing(path: Path, job: str, what: str) -> TransferError:
    return TransferError(
        f"File transfer failed for target job {job}: {what}: |Error: 1 total failures: "
        f"first failure: reading from file {path}: (errno {errno.ENOENT}) No such file or directory"
    )


def stage_in(job: str, ad: Mapping[str, Any], spool_iwd: Path) -> None:
    """Copy the executable and transfer_input_files from the client side into the spool."""
    spool_iwd.mkdir(parents=True, exist_ok=True)
    for src, dest in _inputs(job, ad, spool_iwd):
        if not src.exists():
            raise _missing(src, job, "TOOL failed to send file(s) to the embedded schedd")
        copy_tree(src, dest)


def check_inputs(job: str, ad: Mapping[str, Any], checked: set[str]) -> None:
    """Fail as `stage_in` would for a missing input, without copying anything.

    `checked` holds the sources already seen to exist, so the 10,000 procs of one
    cluster stat their shared executable once.
    """
    sources = []
    if ad.get("TransferExecutable", True) is not False:
        sources.append(ad["SUBMIT_Cmd"])
    entries = split_list(ad.get("TransferInput"))
    if any("://" in e for e in entries):
        _inputs(job, ad, Path(ad["Iwd"]))  # raises as stage_in does
    sources.extend(os.path.join(ad["SUBMIT_Iwd"], e) for e in entries)
    for src in sources:
        if src not in checked:
            if not os.path.exists(src):
                raise _missing(Path(src), job, "TOOL failed to send file(s) to the embedded schedd")
            checked.add(src)


def _inputs(job: str, ad: Mapping[str, Any], spool_iwd: Path) -> list[tuple[Path, Path]]:
    """(source, destination in the spool) for the executable and each transfer_input_files entry."""
    submit_iwd = Path(ad["SUBMIT_Iwd"])
    sources: list[tuple[Path, Path]] = []
    if ad.get("TransferExecutable", True) is not False:
        exe = Path(ad["SUBMIT_Cmd"])
        sources.append((exe, spool_iwd / ad["Cmd"]))
    for entry in split_list(ad.get("TransferInput")):
        if "://" in entry:
            raise TransferError(f"File transfer failed for target job {job}: "
                                f"URL inputs are not supported by the embedded scheduler: {entry}")
        src = submit_iwd / entry
        if entry.endswith("/"):
            sources.append((src, spool_iwd))  # a trailing slash ships the directory's contents
        else:
            sources.append((src, spool_iwd / src.name))
    return sources


def direct(ad: Mapping[str, Any]) -> bool:
    """Whether a job was submitted without spooling (a DAG node, submitted by DAGMan on the access point)."""
    return "SUBMIT_Iwd" not in ad


def stage_direct(ad: Mapping[str, Any], sandbox: Path) -> None:
    """Set up a direct job's sandbox: its executable and transfer_input_files, read from its Iwd."""
    iwd = Path(ad["Iwd"])
    if ad.get("TransferExecutable", True) is not False:
        exe = _resolve(iwd, ad["Cmd"])
        copy_tree(exe, sandbox / exe.name)
    for entry in split_list(ad.get("TransferInput")):
        src = _resolve(iwd, entry)
        if not src.exists():
            raise TransferError(f"Transfer input files failure at access point localhost while sending files to "
                                f"the execution point: reading from file {src}: (errno 2) No such file or directory")
        copy_tree(src, sandbox if entry.endswith("/") else sandbox / src.name)


def place_std(ad: Mapping[str, Any], iwd: Path) -> None:
    """A direct job's stdout and stderr, collected as _condor_stdout/_condor_stderr, under their own names."""
    for std, attr in ((STDOUT, "Out"), (STDERR, "Err")):
        dest = ad.get(attr)
        if (iwd / std).exists():
            if isinstance(dest, str) and dest and dest != os.devnull:
                os.replace(iwd / std, _resolve(iwd, dest))
            else:
                (iwd / std).unlink()


def snapshot(directory: Path) -> dict[str, float]:
    """Top-level names and mtimes, to tell new or changed files after the job ran."""
    return {p.name: p.stat().st_mtime for p in directory.iterdir()}


def collect_output(
    job: str, ad: Mapping[str, Any], sandbox: Path, spool_iwd: Path, before: Mapping[str, float]
) -> list[str]:
    """Move the job's output from its sandbox to the spool; returns SpooledOutputFiles.

    Raises TransferError when a named output file is missing (a real schedd then
    holds the job with HoldReasonCode 12); stdout and stderr are spooled either way.
    """
    for name in (STDOUT, STDERR):
        if (sandbox / name).exists():
            shutil.copy2(sandbox / name, spool_iwd / name)
    spooled: list[str] = []
    named = split_list(ad.get("TransferOutput"))
    preserve = ad.get("PreserveRelativePaths") is True
    if named:
        for entry in named:
            src = sandbox / entry.rstrip("/")
            if not src.exists():
                raise TransferError(
                    "Transfer output files failure at execution point slot1@localhost while sending "
                    "files to access point localhost. Details: 1 total failures: first failure: "
                    f"reading from file {src}: (errno 2) No such file or directory"
                )
            if entry.endswith("/") and src.is_dir():
                for child in sorted(src.iterdir()):
                    copy_tree(child, spool_iwd / child.name)
                    spooled.append(child.name)
            elif preserve and "/" in entry.strip("/"):
                top = entry.strip("/").split("/")[0]
                copy_tree(src, spool_iwd / entry.strip("/"))
                if top not in spooled:
                    spooled.append(top)
            else:
                copy_tree(src, spool_iwd / src.name)
                spooled.append(src.name)
    else:
        # No list given: every new or modified top-level file, but not directories.
        for path in sorted(sandbox.iterdir()):
            if path.name in (STDOUT, STDERR) or path.is_dir():
                continue
            if before.get(path.name) == path.stat().st_mtime:
                continue
            copy_tree(path, spool_iwd / path.name)
            spooled.append(path.name)
    return spooled


def _resolve(iwd: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else iwd / path


def retrieve(job: str, ad: Mapping[str, Any], spool_iwd: Path, dirs: set[Path] | None = None) -> list[Path]:
    """Write the job's spooled output into its submit-time Iwd; returns the paths written.

    Each file is fsynced and renamed into place; with `dirs`, the directories to fsync are left
    to the caller (one fsync per directory per batch of jobs, not one per file).
    """
    iwd = Path(ad["SUBMIT_Iwd"])
    remaps = parse_remaps(ad.get("SUBMIT_TransferOutputRemaps"))
    written: list[Path] = []
    pairs: list[tuple[Path, Path]] = []
    for std, attr in ((STDOUT, "Out"), (STDERR, "Err")):
        dest = ad.get(attr)
        if isinstance(dest, str) and dest and dest != os.devnull and (spool_iwd / std).exists():
            pairs.append((spool_iwd / std, _resolve(iwd, dest)))
    for name in split_list(ad.get("SpooledOutputFiles")):
        dest_name = remaps.get(name, name)
        pairs.append((spool_iwd / name, _resolve(iwd, dest_name)))
    user_log = events.retrievable(ad)
    if user_log is not None and (spool_iwd / user_log).exists():
        pairs.append((spool_iwd / user_log, iwd / user_log))  # this proc's copy, over the submit directory's
    missing = [src for src, _ in pairs if not src.exists()]
    for src, dest in pairs:
        if src.exists():
            try:
                copy_tree(src, dest, durable=True, dirs=dirs)
            except OSError as e:
                # Named as HTCondor names a failed transfer: the user's file (not the temporary one), the OS error.
                spool_side = isinstance(e.filename, str) and e.filename.startswith(f"{spool_iwd}{os.sep}")
                where = f"reading from file {e.filename}" if spool_side else f"writing to file {dest}"
                raise TransferError(
                    f"File transfer failed for target job {job}: TOOL failed to receive file(s) from the embedded"
                    f" schedd: |Error: 1 total failures: first failure: {where}: (errno {e.errno}) {e.strerror}"
                ) from None
            written.append(dest)
    if missing:
        raise _missing(missing[0], job, "SCHEDD failed to send file(s) to TOOL")
    return written


def names(paths: Iterable[Path]) -> list[str]:
    return [str(p) for p in paths]
