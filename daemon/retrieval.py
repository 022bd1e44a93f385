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

import filecmp
import glob
import os
import time
from collections.abc import Iterable
from pathlib import Path

import structlog

from rsubd import submitdesc

log = structlog.get_logger("rsubd.retrieval")
KEPT = ".rsub-kept-"
REFETCHED = ".rsub-refetched-"


def _remaps(text: str) -> dict[str, str]:
    pairs = {}
    for item in text.strip().strip('"').split(";"):
        src, eq, dst = item.partition("=")
        if eq and src.strip():
            pairs[src.strip()] = dst.strip()
    return pairs


def output_targets(submitted_description: str, submit_dir: str, cluster: int, procs: Iterable[int]) -> dict[int, list[Path]]:
    """Where each proc's output lands, as the schedd's retrieve writes it."""
    desc = submitdesc.parse(submitted_description, cwd=submit_dir)
    expanded = submitdesc.expand(desc, cluster=cluster)
    out: dict[int, list[Path]] = {}
    for proc in procs:
        if proc >= len(expanded):
            continue
        c = expanded[proc]
        iwd = Path(submit_dir, os.path.expanduser(c.get("initialdir", ".").strip()))
        remaps = _remaps(c.get("transfer_output_remaps", ""))
        names = [c.get("output", ""), c.get("error", "")]
        names += [remaps.get(n.strip(), n.strip()) for n in c.get("transfer_output_files", "").split(",")]
        out[proc] = [iwd / n for n in (x.strip() for x in names) if n and n != os.devnull]
    return out


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
