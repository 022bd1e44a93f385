"""`rsub fetchlog`: a job's stdout, stderr, job log and submit description, packed into ID.tgz."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rsub.connection import Failure, call
from rsub.views import emit_json
from rsub.wire.vocabulary import EXIT_USAGE, JSON_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any

    from rsub.commands import AddParser


def member_name(path: str, iwd: str | None) -> str:
    """A file's name in a fetchlog archive: its path under the job's iwd, else its base name; never absolute."""
    if iwd:
        rel = os.path.relpath(path, iwd)
        if not rel.startswith(".."):
            return rel
    return os.path.basename(path)


def pack_logs(result: dict[str, Any], archive: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Write the archive of `rsub fetchlog`: job.sub and each job's existing output, error and log files.

    Returns the member names and the (file, job state) pairs that were not there. The archive
    is written beside its final name and renamed over it, so a failure never leaves half of one.
    """
    import io
    import tarfile

    members = ["job.sub"]
    missing: list[tuple[str, str]] = []
    packed: set[str] = set()  # paths, each packed (or reported missing) once: a cluster's procs share its log
    names: set[str] = {"job.sub"}
    tmp = archive.with_name(f".{archive.name}.{os.getpid()}.partial")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            data = result["submitted_description"].encode()
            info = tarfile.TarInfo("job.sub")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
            for job in result["jobs"]:
                for name in ("output", "error", "log"):
                    value = job["files"].get(name)
                    if not value:
                        continue
                    path = os.path.join(job["iwd"] or "", value)
                    if path in packed:
                        continue
                    packed.add(path)
                    if not os.path.isfile(path):
                        missing.append((path, job["state"]))
                        continue
                    arcname = member_name(path, job["iwd"])
                    if arcname in names:
                        arcname = f"{job['proc']}/{arcname}"
                    names.add(arcname)
                    tar.add(path, arcname=arcname, recursive=False)
                    members.append(arcname)
        tmp.replace(archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return members, missing


def missing_why(state: str) -> str:
    """Why a job's file may be missing, from its state: not home yet, or never coming."""
    if state == "retrieved":
        return ""
    if state in ("removed", "failed"):
        return f" (the job was {state}: its output will never come home)"
    return f" (the job is {state}: its output is not home yet)"


def cmd_fetchlog(args: argparse.Namespace) -> int:
    given = [i for i in (args.id, args.jobid) if i is not None]
    if len(given) != 1:
        raise Failure(EXIT_USAGE, "fetchlog needs one job id: ID or -J ID (12.0, 12, 12.0@local)"
                      + (f", not both {given[0]} and -J {given[1]}" if given else ""))
    result = call(args, "fetchlog", job=given[0])
    dest = Path(args.dest or ".")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        archive = dest / f"{result['id']}.tgz"
        members, missing = pack_logs(result, archive)
    except OSError as e:
        # A place this user cannot write: the command line's fault, not rsubd's (exit 2, as retrieve --dest).
        raise Failure(EXIT_USAGE, f"--dest {dest}: cannot write the archive there: {e.strerror or e}") from None
    for path, state in missing:
        print(f"rsub: not in the archive, no such file: {path}{missing_why(state)}", file=sys.stderr)
    if args.json:
        emit_json({"version": JSON_VERSION, "archive": str(archive), "members": members,
                   "missing": [path for path, _ in missing]})
    else:
        print(f"wrote {archive}: {', '.join(members)}")
    return 0


def add_parser(name: str, add: AddParser) -> None:
    s = add("fetchlog", "pack a job's stdout, stderr, job log and submit description into ID.tgz",
            "rsub fetchlog 12.0\nrsub fetchlog 12@local --dest logs/\nrsub fetchlog -J 12.0@local")
    s.add_argument("id", metavar="ID", nargs="?", help="CLUSTER.PROC, or CLUSTER for all its jobs; optionally @SCHEDD")
    s.add_argument("-J", "--jobid", metavar="ID", help="the job id, as jobsub_fetchlog's -J takes it: 12.0@SCHEDD")
    s.add_argument("--dest", metavar="DIR", help="where to write the archive (default: here)")
    s.add_argument("--json", action="store_true", help=f"print JSON (shape version {JSON_VERSION})")
    s.set_defaults(func=cmd_fetchlog)
