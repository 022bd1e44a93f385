"""A DAG node's live state in the embedded DAGMan, and the submit description its job is made from."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rsubd import submitdesc
from rsubd.backends.local.dagfile import Node, Script
from rsubd.submitdesc import SubmitDescription


@dataclass
class NodeLive:
    """Where one node is: Unready, Ready, Prerun, Queued (its job in the queue), Postrun, Done, Failed, Futile."""

    name: str
    state: str = "Unready"
    retry: int = 0  # the attempt now (or next) run: $(RETRY)
    cluster: int | None = None
    job_status: int = 0  # the node job's JobStatus as the nodes log tells it (0: none in the queue)
    job_return: int | None = None
    pre_return: int | None = None
    pre_done: bool = False
    script: subprocess.Popen[bytes] | None = None
    script_kind: str = ""


def description(path: Path, node: Node, retry: int, dag_cluster: int) -> SubmitDescription:
    """The node's submit file with DAGMan's macros: VARS (prepended, or appended), $(JOB), $(RETRY).

    Raises OSError for a file that cannot be read and SubmitError for one that cannot be parsed.
    """
    text = path.read_text(encoding="utf-8")
    desc = submitdesc.parse(text, cwd=str(path.parent))
    if desc.queue.count != 1 or desc.queue.items:
        raise submitdesc.SubmitError(f"{path.name}: a DAG node's submit file must queue exactly one job")
    macros = [("JOB", node.name), ("RETRY", str(retry)), ("DAGManJobId", str(dag_cluster)),
              ("DAG_STATUS", "0"), ("FAILED_COUNT", "0")]
    commands = (*macros, *node.vars, *desc.commands, *node.appended)
    return SubmitDescription(commands=tuple(commands), queue=desc.queue)


def start_script(script: Script, node: Node, live: NodeLive, cwd: Path, env: Mapping[str, str], *, status: int,
                 failed: int) -> subprocess.Popen[bytes]:
    """Start a PRE or POST script in the node's directory, with DAGMan's $JOB, $RETRY, $RETURN, ... in its arguments."""
    macros = {"$JOB": node.name, "$RETRY": str(live.retry), "$MAX_RETRIES": str(node.retry),
              "$RETURN": str(live.job_return if live.job_return is not None else -1),
              "$PRE_SCRIPT_RETURN": str(live.pre_return if live.pre_return is not None else -1),
              "$JOBID": f"{live.cluster}.0" if live.cluster else "", "$DAG_STATUS": str(status),
              "$FAILED_COUNT": str(failed), "$NODE": node.name}
    args = []
    for arg in script.arguments:  # longest first: $JOBID before $JOB, $PRE_SCRIPT_RETURN before $RETURN
        for name in sorted(macros, key=len, reverse=True):
            arg = arg.replace(name, macros[name])
        args.append(arg)
    where = cwd / node.directory if node.directory else cwd
    exe = script.executable if os.path.isabs(script.executable) else str(where / script.executable)
    return subprocess.Popen([exe, *args], cwd=where, env={"PATH": "/usr/local/bin:/usr/bin:/bin", **env},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def kill_script(live: NodeLive) -> None:
    """Kill a node's running script (its whole session), as DAGMan does when it exits."""
    if live.script is None:
        return
    try:
        os.killpg(live.script.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    live.script.wait()
    live.script = None
