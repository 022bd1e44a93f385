"""The description that runs chosen procs of a cluster again, exactly as they ran: `rsub resubmit`'s text.

The ledger keeps each cluster's submitted description: self-contained (item data inlined,
executable and initialdir absolute) with rsub's own commands added. rsub takes those out
(`leave_in_queue`, `My.RETRIEVED`, `My.RsubInstance`, `My.RsubId`, and the per-proc event log
name, which gives the user's `log` back), expands each chosen proc's macros as the schedd
expanded them, with its old $(Cluster) and $(Process), so each new job gets its own itemdata
row, arguments and file names, and writes the chosen procs as one queue statement (the
way `submitdesc.flatten` writes several): what every chosen proc shares stays a command, the
rest reads one queue variable per command, one item per proc. Overrides (`-a 'request_memory
= 4096'`) then replace a command for every new job.
"""

from __future__ import annotations

from collections.abc import Sequence

from rsubd import submitdesc
from rsubd.services import eventlog
from rsubd.services.submission import RSUB_KEYS
from rsubd.submitdesc.expand import expand_queue
from rsubd.submitdesc.flatten import one_queue
from rsubd.submitdesc.model import QueueSpec, SubmitDescription, identity

_RSUB_IDENTITIES = {identity(k) for k in RSUB_KEYS}
_CLUSTER_LEFT = "$(ClusterId)"  # what `expand_queue(cluster=None)` leaves for the schedd


class RerunError(ValueError):
    """The chosen procs cannot be written again (the message says why)."""


def parse_overrides(texts: Sequence[str]) -> list[tuple[str, str]]:
    """`-a 'key = value'` options as (key, value); RerunError for one that is not a command."""
    out = []
    for text in texts:
        key, eq, value = text.partition("=")
        if not eq or not key.strip():
            raise RerunError(f"-a {text!r}: expected a submit command, 'key = value' (e.g. 'request_memory = 4096')")
        if identity(key) in _RSUB_IDENTITIES:
            raise RerunError(f"-a {text!r}: {key.strip()} is rsub's own; it cannot be overridden")
        out.append((key.strip(), value.strip()))
    return out


def user_commands(desc: SubmitDescription) -> list[tuple[str, str]]:
    """The submitted description's commands without rsub's own, the user's `log` restored."""
    commands = [(k, v) for k, v in desc.commands if identity(k) not in _RSUB_IDENTITIES]
    user_log = desc.get(eventlog.LOG_MACRO)
    if user_log is not None:
        commands = [(k, v) for k, v in commands if identity(k) not in (eventlog.LOG_MACRO, "log")]
        commands.append(("log", user_log))
    return commands


def rerun_description(submitted: str, submit_dir: str, cluster: int, procs: Sequence[int],
                      overrides: Sequence[tuple[str, str]] = ()) -> str:
    """Submit text making one new job per proc in `procs` (in that order), each as that proc ran."""
    if not procs:
        raise RerunError("no jobs to run again")
    try:
        desc = submitdesc.parse(submitted, cwd=submit_dir)
        expanded = expand_queue(user_commands(desc), desc.queue, cluster=None)
    except submitdesc.SubmitError as e:
        raise RerunError(f"cluster {cluster}'s description no longer parses: {e}") from None
    missing = [p for p in procs if not 0 <= p < len(expanded)]
    if missing:
        raise RerunError(f"cluster {cluster} has no proc {missing[0]} in its description")
    # The old cluster's number where the schedd would have put it: the new job writes the files the old one did.
    chosen = [{k: v.replace(_CLUSTER_LEFT, str(cluster)) for k, v in expanded[p].items()} for p in procs]
    out = one_queue(chosen, procs)
    if len(procs) == 1 and len(out.queue.vars) == 1:  # one job, nothing varying: a plain `queue`
        out = SubmitDescription(out.commands, QueueSpec(1))
    try:
        if overrides:
            out = out.with_commands(overrides)
        return submitdesc.render(out)
    except submitdesc.SubmitError as e:
        raise RerunError(str(e)) from None
