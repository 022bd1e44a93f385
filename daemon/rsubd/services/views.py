"""The JSON shapes rsubd answers with: a job, its jobsub view, and the one way to print a time."""

from __future__ import annotations

import functools
import getpass
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rsub.wire.vocabulary import WRAPPER, iso
from rsubd import submitdesc
from rsubd.backends.schedd import job_id
from rsubd.polling.poller import PollStats
from rsubd.services import eventlog
from rsubd.services.usage import usage_view, wall_seconds
from rsubd.tokens.manager import TokenManager

# One-line hints for the hold codes users meet most (HTCondor's HoldReasonCode numbering).
HOLD_HINTS = {
    1: "held by a user or an administrator; 'rsub release' lets it run again",
    3: "held by a policy expression (periodic_hold or the pool's policy); fix the cause, then release",
    6: "the executable could not be started: check its #! line and that it is executable",
    12: "an output file named in transfer_output_files was not created by the job",
    13: "an input file could not be transferred to the execute machine",
    16: "spooling never finished: the input files were not uploaded (rsub resubmits or reports these)",
    21: "held by a periodic_hold expression of the job",
    26: "the job used more memory than request_memory; raise it and resubmit "
        "(rsub resubmit ID -a 'request_memory = N')",
    34: "the job used more resources than it requested (memory or disk); raise the request and resubmit "
        "(rsub resubmit ID -a 'request_memory = N')",
}


def freshness(stats: Mapping[str, PollStats], now: float) -> dict[str, Any]:
    """How current the ledger's view of each schedd is, from each one's poll stats."""
    out = {}
    for name, st in stats.items():
        ok = st.last_ok_at
        out[name] = {"last_ok_poll": iso(ok), "stale_seconds": None if ok is None else round(now - ok, 1),
                     "last_error": st.last_error}
    return out


def token_brief(tokens: TokenManager, profile: str, now: float) -> dict[str, Any]:
    """A schedd's token profile as `rsub daemon status` shows it."""
    st = tokens.states[profile]
    claims = st.found.claims if st.found else None
    return {"profile": profile, "state": tokens.state_label(profile, now),
            "expires_at": iso(claims.exp) if claims else None, "action_needed": tokens.action(profile, now)}


_ISO: dict[float, str | None] = {}  # a cluster's jobs share their submit time: a page formats it once


def _iso(ts: float | None) -> str | None:
    """`iso`, remembered: a page of 1,000 jobs formats a handful of distinct submit times, not 1,000."""
    if ts is None:
        return None
    text = _ISO.get(ts)
    if text is None:
        if len(_ISO) > 10_000:
            _ISO.clear()
        text = _ISO[ts] = iso(ts)
    return text


# The columns of the jobs rows that brief_view, jobsub_view (run_seconds) and the page's lineage and DAGs read.
BRIEF_COLUMNS = ("cluster_row", "schedd", "cluster", "proc", "state", "submitted_at", "exit_code", "exit_signal",
                 "wall_time", "run_start")


def brief_view(row: dict[str, Any]) -> dict[str, Any]:
    """A job as a `brief` status or history reply carries it (protocol.BRIEF_FIELDS, "jobsub" added by the caller)."""
    brief = {"id": f"{job_id(row['cluster'], row['proc'])}@{row['schedd']}", "cluster": row["cluster"],
             "proc": row["proc"], "schedd": row["schedd"], "state": row["state"],
             "submitted_at": _iso(row["submitted_at"]), "exit_code": row["exit_code"],
             "exit_signal": row["exit_signal"]}
    for key in ("replaces", "replaced_by"):  # the table's "resubmitted: 12.17 -> 30.0" line, where there is one
        if row.get(key):
            brief[key] = row[key]
    return brief


def table_row(row: dict[str, Any], facts: dict[str, Any], owner: str, now: float) -> list[Any]:
    """A job as a `rows` status or history reply carries it: protocol.TABLE_COLUMNS, the brief view's values."""
    more = None
    if row.get("replaces") or row.get("replaced_by"):
        more = {key: row[key] for key in ("replaces", "replaced_by") if row.get(key)}
    return [f"{row['cluster']}.{row['proc']}@{row['schedd']}", row["cluster"], row["schedd"], row["state"],
            _iso(row["submitted_at"]), row["exit_code"], row["exit_signal"], owner,
            STATUS_LETTERS.get(row["state"], "?"), run_seconds(row, now), facts.get("command"),
            facts.get("priority", 0), facts.get("size"), more]


def job_view(row: dict[str, Any]) -> dict[str, Any]:
    """A job as `rsub status --json` shows it (shape version 1)."""
    return {
        "id": f"{job_id(row['cluster'], row['proc'])}@{row['schedd']}",
        "cluster": row["cluster"],
        "proc": row["proc"],
        "schedd": row["schedd"],
        "state": row["state"],
        "job_status": row["job_status"],
        "exit_code": row["exit_code"],
        "exit_signal": row["exit_signal"],
        "hold_reason": row["hold_reason"],
        "hold_code": row["hold_code"],
        "hold_hint": HOLD_HINTS.get(row["hold_code"]) if row["state"] == "held" else None,
        "remove_reason": row["remove_reason"],
        "error": row["error"],
        "iwd": row["iwd"],
        "submitted_at": _iso(row["submitted_at"]),
        "completed_at": iso(row["completed_at"]),
        "retrieved_at": iso(row["retrieved_at"]),
        # A completed job whose output rsubd cannot write where it goes: a person must act (`attention`
        # says what), the output stays on the schedd; `rsub retrieve` fetches it again.
        "needs_attention": row.get("attention") is not None,
        "attention": row.get("attention"),
        "retrieve_failures": row.get("retrieve_failures") or 0,
        "retrieve_retry_at": None if row.get("retrieve_paused") else iso(row.get("retrieve_retry_at")),
        "retrieved_to": row.get("retrieved_to"),
        # What it used (recorded from the last ad a poll saw), and the jobs run again: "12.17" replaced by
        # "30.0" (`rsub resubmit`), each side naming the other; how often the hold policy released it.
        "usage": usage_view(row),
        "replaces": row.get("replaces"),
        "replaced_by": row.get("replaced_by"),
        "auto_releases": row.get("auto_releases") or 0,
    }


def submit_view(row: dict[str, Any]) -> dict[str, Any]:
    """A submit that made no job: where it came from, where it stands, and what happened."""
    return {"request_id": row["request_id"], "schedd": row["schedd"], "state": row["state"],
            "created_at": iso(row["created_at"]), "submit_dir": row["submit_dir"], "submit_file": row["submit_file"],
            "note": row["error"] or ("rsubd is settling this submit with the schedd" if row["state"] == "submitting"
                                     else None)}


def submitted_view(row: dict[str, Any], replaced: tuple[str, ...]) -> dict[str, Any]:
    """The reply to a submit: the cluster, its job ids, and rsub's commands that replaced the user's."""
    ids = [f"{row['cluster']}.{p}@{row['schedd']}" for p in range(row["num_procs"] or 0)]
    return {"cluster": row["cluster"], "schedd": row["schedd"], "jobs": ids, "replaced": list(replaced)}


# -- the jobsub views: what `rsub q` and `rsub history` show beside the ledger's fields ---------------

# jobsub_q's ST column. HTCondor's letters where it has one; S for rsub's spooling (and submitting),
# F for failed, and D ("done") for retrieved: completed with its output home, distinct from C,
# completed and its output not yet retrieved.
STATUS_LETTERS = {
    "submitting": "S", "spooling": "S", "idle": "I", "running": "R", "held": "H", "completed": "C",
    "retrieved": "D", "removed": "X", "failed": "F",
}
_QUEUE_LINE = re.compile(r"\s*queue\b(?!\s*=(?!=))", re.IGNORECASE)


def status_letter(state: str) -> str:
    return STATUS_LETTERS.get(state, "?")


def description_facts(text: str, group_attribute: str = "Jobsub_Group") -> dict[str, Any]:
    """What jobsub_q shows of a cluster, read cheaply from its submitted description (no macro expansion).

    The command is the executable's name; for a job `rsub submit file://` built, whose
    executable is rsub's wrapper, the script's (the first input file). The priority is
    `priority` when it is an integer (its text when it is a macro), else 0; the size is
    `request_memory` as written (MB unless it names a unit), else None. The group is the
    string value of `group_attribute` (the [jobsub] group_attribute that -G sets), else None.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():  # a submitted description is rendered: one command per line, queue last
        if _QUEUE_LINE.match(line):
            break
        key, eq, value = line.partition("=")
        if eq:
            values[key.strip().lower()] = value.strip()
    command = os.path.basename(values.get("executable", "")) or "-"
    if command == WRAPPER:
        first = values.get("transfer_input_files", "").split(",")[0].strip()
        command = os.path.basename(first) or command
    priority: int | str = 0
    if text_priority := values.get("priority"):
        try:
            priority = int(text_priority)
        except ValueError:
            priority = text_priority
    group_value = values.get(f"+{group_attribute.lower()}") or values.get(f"my.{group_attribute.lower()}") or ""
    group = group_value[1:-1] if len(group_value) >= 2 and group_value[0] == group_value[-1] == '"' else None
    return {"command": command, "priority": priority, "size": values.get("request_memory") or None, "group": group}


def run_seconds(row: dict[str, Any], now: float) -> float | None:
    """The schedd's RemoteWallClockTime (plus the current run); without it, seconds from when a poll first saw
    the job running until it finished (or now, or it left running)."""
    wall = wall_seconds(row, now)
    if wall is not None:
        return wall
    start = row.get("run_started_at")
    if start is None:
        return None
    end: float
    if row["state"] == "running":
        end = now
    elif row.get("finished_at") is not None and row["finished_at"] >= start:
        end = row["finished_at"]
    elif row.get("run_left_at") is not None:
        end = row["run_left_at"]
    else:
        return None
    seconds: float = round(max(0.0, end - start), 3)
    return seconds


def jobsub_view(row: dict[str, Any], facts: dict[str, Any], owner: str, now: float) -> dict[str, Any]:
    """The "jobsub" object of a job in `rsub q|status|history --json` (shape version 1)."""
    return {"owner": owner, "status": status_letter(row["state"]), "run_time": run_seconds(row, now), **facts}


class ClusterFacts:
    """description_facts of each cluster, read once per cluster (one read for all the missing ones).

    `read` gives the submitted descriptions of cluster rows; a submitted description never changes.
    """

    def __init__(self, read: Callable[[list[int]], dict[int, str]], *, size: int = 10_000,
                 group_attribute: str = "Jobsub_Group") -> None:
        self._read = read
        self._group_attribute = group_attribute
        self._size = size  # clusters kept; past it the cache starts again
        self._facts: dict[int, dict[str, Any]] = {}

    def get(self, cluster_rows: Iterable[int]) -> dict[int, dict[str, Any]]:
        wanted = set(cluster_rows)
        missing = [r for r in wanted if r not in self._facts]
        if missing:
            if len(self._facts) + len(missing) > self._size:
                self._facts.clear()
            for row, text in self._read(missing).items():
                self._facts[row] = description_facts(text, self._group_attribute)
        return {r: self._facts[r] for r in wanted if r in self._facts}


@functools.cache
def owner() -> str:
    """The local user: every job rsubd submits is this user's."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        return str(os.getuid())


def fetchlog_files(text: str, submit_dir: str, cluster: int, procs: list[int]) -> dict[int, dict[str, str | None]]:
    """Each proc's output, error and log file names, expanded for that cluster and proc (relative to its iwd)."""
    try:
        expanded = submitdesc.expand(submitdesc.parse(text, cwd=submit_dir), cluster=cluster)
    except submitdesc.SubmitError:
        expanded = []
    out: dict[int, dict[str, str | None]] = {}
    for proc in procs:
        commands = expanded[proc] if proc < len(expanded) else {}
        out[proc] = {}
        for kind in ("output", "error", "log"):
            # The user's own log, which holds every proc's events once they are home (services/eventlog.py).
            value = (commands.get(eventlog.LOG_MACRO if kind == "log" else kind) or commands.get(kind) or "").strip()
            out[proc][kind] = value if value and value != "/dev/null" else None
    return out
