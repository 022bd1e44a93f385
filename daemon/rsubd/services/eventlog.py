"""The job event log a user asked for with `log = FILE`, whole again after a remote submit.

With spooling, each proc has its own spool directory and its own copy of the user log, and
each retrieve writes that copy over the file in the submit directory: after a 3-proc cluster
`job.log` would hold only the last proc's events (HTCondor 25.13). So rsub sends each proc's
log under a name of its own (`job.log.rsub-<cluster>.<proc>`) and, once a proc's output is home
(beside the user's log, or in the initialdir under that basename: where a schedd's retrieve
writes a log named with a directory, or absolute), merges its events into the user's file in
time order, as a local condor_submit would have left it, and removes the proc's copy. Merging
is idempotent: an event already in the file (as often as the copy holds it) is not added
again, so a repeated retrieve or a crash between the write and the removal changes nothing.

An event is HTCondor's block: a header line `NNN (cluster.proc.subproc) DATE TIME text`, its
body, and a line `...`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import structlog

log = structlog.get_logger("rsubd.services.eventlog")

LOG_MACRO = "rsub_log"  # the submit macro holding the user's own `log` value
PER_PROC_SUFFIX = ".rsub-$(ClusterId).$(ProcId)"
# Dates as HTCondor writes them: ISO (the default since 8.8, maybe with fractions and zone) or "MM/DD".
_HEADER = re.compile(r"(\d{3}) \((\d+)\.(\d+)\.(\d+)\) "
                     r"(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}\S*|\d{2}/\d{2} \d{2}:\d{2}:\d{2})")
_END = "..."
_merging = threading.Lock()  # two schedds' retrieves may name the same user log


def per_proc_log(user_log: str) -> str | None:
    """The `log` value rsub sends for a user's `log` value, or None to send it unchanged.

    An absolute log comes back with the output too: the schedd writes every spooled job's log
    in its spool directory under the basename (it rewrites UserLog so when it spools), and the
    retrieve brings it into the initialdir (services/retrieval.py log_targets). A "~" path is
    sent as written: condor_submit does not expand it.
    """
    value = user_log.strip()
    if not value or value == os.devnull or value.startswith("~"):
        return None
    return f"$({LOG_MACRO}){PER_PROC_SUFFIX}"


def events(text: str) -> list[str]:
    """The event blocks of an event log, each ending with its `...` line; text after the last is dropped."""
    out: list[str] = []
    block: list[str] = []
    for line in text.splitlines(keepends=True):
        if not block and not _HEADER.match(line):
            continue  # a torn write, or a file that is not an event log: nothing to keep
        block.append(line if line.endswith("\n") else line + "\n")
        if line.rstrip("\r\n") == _END:
            out.append("".join(block))
            block = []
    return out


def _when(event: str) -> str:
    m = _HEADER.match(event)
    return m.group(5).replace("T", " ") if m else ""


def merge(user_log: Path, parts: Iterable[Path]) -> int:
    """Merge the event logs `parts` into `user_log` in time order, then remove them; returns events added.

    The file is replaced whole (a temporary file, fsynced, renamed), so a reader never sees half
    of it; its mode is kept. A part that cannot be read is left where it is, and said.
    """
    parts = [p for p in parts if p != user_log]
    with _merging:
        try:
            original = user_log.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            original = ""
        have = events(original)
        # Counted, not just seen: a proc may log the same text twice (evicted twice within a second),
        # and a repeated merge must still add nothing.
        had = Counter(have)
        wanted: Counter[str] = Counter()
        added: list[str] = []
        read: list[Path] = []
        for part in parts:
            try:
                text = part.read_text(encoding="utf-8", errors="surrogateescape")
            except FileNotFoundError:
                continue  # merged already: a repeat
            except OSError as e:
                log.warning("eventlog.unreadable", path=str(part), error=e.strerror)
                continue
            found = events(text)
            if found or not text.strip():
                read.append(part)  # merged below; a part with text and no event (an XML log?) stays, and is said
            else:
                log.warning("eventlog.not_events", path=str(part))
            counts: Counter[str] = Counter()
            for event in found:
                counts[event] += 1
                if counts[event] > wanted[event]:
                    wanted[event] = counts[event]
                    if counts[event] > had[event]:
                        added.append(event)
        if added and "".join(have) == original:
            # A stable sort: events of the same second keep the order their proc logged them in.
            _replace(user_log, "".join(sorted(have + added, key=_when)))
        elif added:
            # The file holds more than events (a note of the user's, a torn write): kept as it is, the new after it.
            _replace(user_log, original + ("\n" if original and not original.endswith("\n") else "")
                     + "".join(sorted(added, key=_when)))
        for part in read:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        return len(added)


def _replace(path: Path, text: str) -> None:
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask, read without setting it (os.umask would change it for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
