"""The files the embedded DAGMan reads and writes beside the DAG: dagman.out, the nodes log, rescue, metrics.

The nodes log (x.dag.nodes.log) is written by the scheduler, as a real schedd writes a node's
events to its `DAGManNodesLog`; DAGMan reads it, as the real one does, to follow its nodes and,
after a restart with the lock file present, to recover.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

VERSION = "25.13.2"
STATUS_NAMES = {0: "DAG_STATUS_OK", 1: "DAG_STATUS_ERROR", 2: "DAG_STATUS_NODE_FAILED", 3: "DAG_STATUS_ABORT",
                4: "DAG_STATUS_RM", 5: "DAG_STATUS_CYCLE", 6: "DAG_STATUS_HALTED"}
_HEADER = re.compile(r"^(\d{3}) \((\d+)\.(\d+)\.(\d+)\) (\S+ \S+) ")
_NODE = re.compile(r'DAGNodeName = "([^"]*)"')
_RETURN = re.compile(r"\(1\) Normal termination \(return value (-?\d+)\)")
_SIGNAL = re.compile(r"Abnormal termination \(signal (\d+)\)")
_DAG_NODE = re.compile(r"DAG Node: (\S+)")
_DONE = re.compile(r"^\s*DONE\s+(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Event:
    code: int
    cluster: int
    stamp: str
    node: str | None = None  # submit and POST script events name their node
    value: int | None = None  # a termination's return value (a signal: 128 + its number, as DAGMan counts it)


class EventReader:
    """Reads the events appended to a log since the last read (whole events only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[Event]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"...\n")
        if end < 0:
            return []
        self.offset += end + 4
        events = []
        for block in data[:end].decode("utf-8", "replace").split("...\n"):
            m = _HEADER.match(block.lstrip("\n"))
            if m is None:
                continue
            code = int(m.group(1))
            node = _NODE.search(block) or _DAG_NODE.search(block)
            value = _RETURN.search(block)
            signal = _SIGNAL.search(block)
            events.append(Event(
                code, int(m.group(2)), m.group(5), node.group(1) if node else None,
                int(value.group(1)) if value else (128 + int(signal.group(1)) if signal else None)))
        return events


def stamp(when: float) -> str:
    return time.strftime("%m/%d/%y %H:%M:%S", time.localtime(when))


class DagmanOut:
    """x.dag.dagman.out: DAGMan's own log, a line at a time with its time stamp."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, *lines: str) -> None:
        now = stamp(time.time())
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(f"{now} {line}\n" for line in lines)

    def header(self, dagman: str, argv: list[str]) -> None:
        self.write("******************************************************",
                   "** condor_dagman (CONDOR_DAGMAN) STARTING UP", f"** {dagman}",
                   f"** $CondorVersion: {VERSION} (rsub embedded scheduler) $", f"** PID = {os.getpid()}",
                   "******************************************************",
                   f'argv[0] == "{dagman}"', *(f'argv[{i}] == "{a}"' for i, a in enumerate(argv, 1)))

    def status(self, status: int, counts: dict[str, int], total: int, held: int) -> None:
        c = counts
        self.write(f"DAG status: {status} ({STATUS_NAMES.get(status, 'DAG_STATUS_ERROR')})",
                   f"Of {total} nodes total:",
                   " Done     Pre   Queued    Post   Ready   Un-Ready   Failed   Futile",
                   "  ===     ===      ===     ===     ===        ===      ===      ===",
                   f"{c['Done']:5d}{c['Prerun']:8d}{c['Queued']:9d}{c['Postrun']:8d}{c['Ready']:8d}"
                   f"{c['Unready']:11d}{c['Failed']:9d}{c['Futile']:9d}",
                   f"{held} job proc(s) currently held")


def event_name(code: int) -> str:
    return {0: "ULOG_SUBMIT", 1: "ULOG_EXECUTE", 4: "ULOG_JOB_EVICTED", 5: "ULOG_JOB_TERMINATED",
            9: "ULOG_JOB_ABORTED", 12: "ULOG_JOB_HELD", 13: "ULOG_JOB_RELEASED",
            16: "ULOG_POST_SCRIPT_TERMINATED"}.get(code, f"ULOG_{code:03d}")


def post_script_event(path: Path, cluster: int, node: str, value: int) -> None:
    """The POST script's end, as DAGMan writes it into the nodes log (recovery reads it back)."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"016 ({cluster:03d}.000.000) {when} POST Script terminated.\n"
                f"\t(1) Normal termination (return value {value})\n    DAG Node: {node}\n...\n")


def write_rescue(path: Path, dag_file: str, done: Iterable[str], failed: Iterable[str], total: int) -> None:
    """A partial rescue DAG (version 2.1.0): the DONE nodes, read with the DAG file it came from."""
    done, failed = list(done), list(failed)
    text = (f"# Rescue DAG file, created after running\n#   the {dag_file} DAG file\n"
            f"# Created {time.strftime('%-m/%-d/%Y %H:%M:%S UTC', time.gmtime())}\n"
            f"# Rescue DAG version: 2.1.0\n#\n# Total number of Nodes: {total}\n"
            f"# Nodes premarked DONE: {len(done)}\n# Nodes that failed: {len(failed)}\n"
            f"#   {','.join(failed)},<ENDLIST>\n\n" + "".join(f"DONE {n}\n" for n in done))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def rescue_done(path: Path) -> list[str]:
    """The nodes a rescue DAG marks DONE."""
    return _DONE.findall(path.read_text(encoding="utf-8"))


def write_metrics(path: Path, *, cluster: int, start: float, exit_code: int, status: int, rescue: int,
                  nodes: int, done: int, failed: int, jobs_submitted: int, jobs_ok: int) -> None:
    end = time.time()
    metrics = {
        "client": "condor_dagman", "version": VERSION, "type": "metrics", "metrics_version": 2,
        "start_time": round(start, 3), "end_time": round(end, 3), "duration": round(end - start, 3),
        "exitcode": exit_code, "dagman_id": str(cluster), "parent_dagman_id": "", "rescue_dag_number": rescue,
        "has_final_node": False, "nodes": nodes, "nodes_failed": failed, "nodes_succeeded": done,
        "total_nodes": nodes, "total_nodes_run": done + failed, "jobs_submitted": jobs_submitted,
        "jobs_succeeded": jobs_ok, "jobs_failed": jobs_submitted - jobs_ok, "DagStatus": status,
    }
    path.write_text(json.dumps(metrics, indent=4) + "\n", encoding="utf-8")
