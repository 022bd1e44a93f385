"""The job event log (`log = FILE`, the ad's UserLog) as the embedded scheduler writes it.

As with a real schedd and a spooled job, the UserLog is written in the job's spool directory
(its Iwd there) under its basename and comes back with the output on retrieve,
over whatever the submit directory held; a job that is not spooled (a DAG node) writes it where
it names. The events are HTCondor's format:
`NNN (cluster.proc.subproc) YYYY-MM-DD HH:MM:SS text`, a body, and a line `...`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rsubd.backends.schedd import HoldCode, JobStatus

HOST = "<127.0.0.1:0?alias=localhost>"
SPOOL_RELEASE_REASON = "Data files spooled"


def path_of(ad: Mapping[str, Any]) -> Path | None:
    """Where this job's event log is written, or None when it has none."""
    name = retrievable(ad)
    if name is not None:
        return Path(str(ad.get("Iwd", "."))) / name
    name = ad.get("UserLog")
    if not isinstance(name, str) or not name.strip() or name.strip() == os.devnull:
        return None
    path = Path(os.path.expanduser(name.strip()))
    return path if path.is_absolute() else Path(str(ad.get("Iwd", "."))) / path


def retrievable(ad: Mapping[str, Any]) -> str | None:
    """The UserLog a retrieve brings back (a name in the job's spool Iwd and in SUBMIT_Iwd), if any.

    Only a spooled job's (one with SUBMIT_Iwd) comes back. A real schedd rewrites its UserLog (the
    full path condor_submit makes of it) to the basename when it spools the job, as it does Iwd and
    Cmd, so the log is written in the spool directory under its basename, whether it named a
    directory or was absolute, and comes back into SUBMIT_Iwd under that name (reference
    dag/README: UserLog "probe.dag.dagman.log", SUBMIT_UserLog the client's path, retrieved with
    the output).
    """
    name = ad.get("UserLog")
    if "SUBMIT_Iwd" not in ad or not isinstance(name, str) or not name.strip() or name.strip() == os.devnull:
        return None
    return os.path.basename(name.strip()) or None


def _header(code: int, ad: dict[str, Any], when: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    return f"{code:03d} ({int(ad['ClusterId']):03d}.{int(ad['ProcId']):03d}.000) {stamp} "


def submitted(ad: dict[str, Any], when: float) -> None:
    text = _header(0, ad, when) + f"Job submitted from host: {HOST}\n"
    if isinstance(ad.get("DAGNodeName"), str):  # a DAG node's, as DAGMan's direct submit writes it
        text += f'    [ DAGNodeName = "{ad["DAGNodeName"]}"; JobBatchName = "{ad.get("JobBatchName", "")}" ]\n'
    _append(ad, text)


def changed(ad: dict[str, Any], old: int, when: float) -> None:
    """Log the event of a status change from `old` to the ad's JobStatus, if it has one."""
    new = ad.get("JobStatus")
    event: tuple[int, str] | None = None
    if new == JobStatus.RUNNING:
        event = 1, f"Job executing on host: {HOST}\n"
    elif new == JobStatus.COMPLETED:
        if ad.get("ExitBySignal") is True:
            how = f"\t(0) Abnormal termination (signal {ad.get('ExitSignal')})\n\t(0) No core file\n"
        else:
            how = f"\t(1) Normal termination (return value {ad.get('ExitCode')})\n"
        event = 5, "Job terminated.\n" + how + _usage("Run Remote", "Run Local", "Total Remote", "Total Local") \
            + _bytes("Run Bytes Sent", "Run Bytes Received", "Total Bytes Sent", "Total Bytes Received")
    elif new == JobStatus.HELD and ad.get("HoldReasonCode") != HoldCode.SPOOLING_INPUT:
        event = 12, (f"Job was held.\n\t{_line(ad.get('HoldReason')) or 'Reason unspecified'}\n"
                     f"\tCode {ad.get('HoldReasonCode') or 0} Subcode {ad.get('HoldReasonSubCode') or 0}\n")
    elif new == JobStatus.IDLE and old == JobStatus.HELD and ad.get("ReleaseReason") != SPOOL_RELEASE_REASON:
        reason = _line(ad.get("ReleaseReason"))
        event = 13, "Job was released.\n" + (f"\t{reason}\n" if reason else "")
    elif new == JobStatus.IDLE and old == JobStatus.RUNNING:
        event = 4, "Job was evicted.\n\t(0) CPU times\n" + _usage("Run Remote", "Run Local") \
            + _bytes("Run Bytes Sent", "Run Bytes Received")
    elif new == JobStatus.REMOVED:
        reason = _line(ad.get("RemoveReason"))
        event = 9, "Job was aborted.\n" + (f"\t{reason}\n" if reason else "")
    if event is not None:
        _append(ad, _header(event[0], ad, when) + event[1])


def _usage(*kinds: str) -> str:
    # No rusage is measured here: HTCondor's readers need the lines all the same (condor_event.cpp).
    return "".join(f"\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  {kind} Usage\n" for kind in kinds)


def _bytes(*kinds: str) -> str:
    return "".join(f"\t0  -  {kind} By Job\n" for kind in kinds)


def _line(reason: Any) -> str:
    # An event's reason is one line of its body: a newline in it would end the body early.
    return reason.replace("\r", " ").replace("\n", " ").strip() if isinstance(reason, str) else ""


def _append(ad: dict[str, Any], text: str) -> None:
    paths = [path_of(ad)]
    nodes_log = ad.get("DAGManNodesLog")  # a DAG node's events also go to its DAGMan's nodes log
    if isinstance(nodes_log, str) and nodes_log:
        paths.append(Path(nodes_log))
    for path in paths:
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(text + "...\n")
        except OSError:
            pass  # a schedd says so in its own log; the job goes on
