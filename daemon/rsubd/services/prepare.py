"""Preparing a submit: check the user's description, add rsub's attributes, make it self-contained.

Everything that can be refused is refused here, before anything is sent to a
schedd: syntax errors, a missing executable or input file, an initialdir that
does not exist. Pure: no ledger, no schedd (services/submission.py runs the submit).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from rsubd import submitdesc
from rsubd.backends.schedd import SubmitRequest
from rsubd.services import eventlog, retrieval
from rsubd.submitdesc.expand import expand_queue
from rsubd.submitdesc.flatten import one_queue


class SubmitRefused(Exception):
    """The description cannot be submitted; the message says why."""


def leave_in_queue(max_age_seconds: int, *, keep_removed: bool = False) -> str:
    """Keep a completed job until rsub marks it retrieved, or until it is `max_age_seconds` old.

    The remote-submit example users copy has its parentheses misplaced; here the
    age test is one parenthesised alternative, so the expression is false for
    every job that is not completed (held, idle, running, removed).
    """
    completed = ("JobStatus == 4 && RETRIEVED =!= true && (CompletionDate =?= undefined || CompletionDate == 0 || "
                 f"(time() - CompletionDate) < {max_age_seconds})")
    if not keep_removed:
        return completed
    # A removed DAG's spool holds its outputs and rescue file: kept until retrieved, as a completed one.
    return (f"({completed}) || (JobStatus == 3 && RETRIEVED =!= true && "
            f"(time() - EnteredCurrentStatus) < {max_age_seconds})")


@dataclass(frozen=True)
class Prepared:
    request: SubmitRequest
    tag: str
    num_procs: int
    iwds: tuple[str, ...]
    replaced: tuple[str, ...]
    procs: tuple[dict[str, str], ...] = ()  # each job's commands, expanded (what `--dry-run` shows per job)


# Commands rsub sets itself; a user's own value is replaced (and the reply says so).
RSUB_KEYS = ("leave_in_queue", "My.RETRIEVED", "My.RsubInstance", "My.RsubId")


def _per_proc_logs(desc: submitdesc.SubmitDescription, mergeable: list[bool]) -> submitdesc.SubmitDescription:
    """The description as one queue statement whose procs each have their own `log`: under a per-proc name
    where `mergeable` (joined into the user's log once home), as written elsewhere (flatten.one_queue)."""
    procs = expand_queue(desc.commands, desc.queue, cluster=None)  # $(ClusterId) left for the schedd
    for proc, merge in zip(procs, mergeable, strict=True):
        # Every proc's own log value in rsub_log, mergeable or not: a rerun or a dry run reads the user's log
        # there; retrieval merges only where `log` differs from it (services/retrieval.py _log_names).
        proc[eventlog.LOG_MACRO] = proc.get("log", "").strip()
        if merge:
            proc["log"] = proc[eventlog.LOG_MACRO] + eventlog.PER_PROC_SUFFIX
    return one_queue(procs, range(len(procs)))


def _abs(base: str, path: str) -> str:
    return path if path.startswith("$") or os.path.isabs(os.path.expanduser(path)) else os.path.join(base, path)


def _here(cwd: str, path: str) -> Path:
    return Path(cwd, os.path.expanduser(path.strip()))


def _output_paths(commands: dict[str, str], iwd: str, remaps: dict[str, dict[str, str]]) -> list[str]:
    """Where a job's output, error and transfer_output_files land on retrieve (remaps applied), joined to iwd.

    Strings, not Paths, and each distinct remaps text parsed once (`remaps`): a 10,000-job cluster
    asks this 10,000 times, for a handful of directories.
    """
    text = commands.get("transfer_output_remaps", "")
    remap = remaps.get(text)
    if remap is None:
        remap = remaps[text] = submitdesc.parse_remaps(text)
    names = [commands.get("output", ""), commands.get("error", "")]
    names += [remap.get(n.strip(), n.strip()) for n in commands.get("transfer_output_files", "").split(",")]
    return [os.path.join(iwd, os.path.expanduser(n)) for n in (x.strip() for x in names)
            if n and n != os.devnull and "$" not in n and "://" not in n]


def prepare(
    text: str, *, cwd: str, instance_id: str, max_age_seconds: int, job_token: str | None = None,
    keep_removed: bool = False
) -> Prepared:
    """Parse, check and complete a submit description for `Schedd.submit`.

    A relative executable is resolved against the directory `rsub submit` ran in, as
    condor_submit resolves it against its own: from /w, `condor_submit subs/job.sub` with
    `executable = run.sh` runs /w/run.sh (HTCondor 25.13). The bindings would use the
    submitting process's cwd, which for rsubd is meaningless, so rsub makes it absolute.
    """
    if not os.path.isabs(cwd) or not os.path.isdir(cwd):
        raise SubmitRefused(f"the submit directory {cwd!r} is not an existing absolute directory")
    try:
        desc = submitdesc.parse(text, cwd=cwd)
    except submitdesc.SubmitError as e:
        raise SubmitRefused(str(e)) from None
    executable = desc.get("executable")
    if not executable or not executable.strip():
        raise SubmitRefused("the submit description has no 'executable'")
    tag = uuid.uuid4().hex
    replaced = tuple(k for k in RSUB_KEYS if desc.get(k) is not None)
    extra = [
        # condor_submit resolves executable against the cwd and initialdir against it too;
        # making both absolute keeps that meaning wherever the schedd parses the text.
        ("executable", _abs(cwd, executable.strip())),
        ("initialdir", _abs(cwd, (desc.get("initialdir") or ".").strip())),
        ("My.RETRIEVED", "false"),
        ("My.RsubInstance", f'"{instance_id}"'),
        ("My.RsubId", f'"{tag}"'),
        ("leave_in_queue", leave_in_queue(max_age_seconds, keep_removed=keep_removed)),
    ]
    if job_token is not None:  # a token of this submit's own goes with the job (tokens/scoped.py)
        inputs = (desc.get("transfer_input_files") or "").strip()
        extra.append(("transfer_input_files", f"{inputs}, {job_token}" if inputs else job_token))
    user_log = desc.get("log")
    if (desc.get("log_xml") or "").strip().lower() in ("true", "t", "yes", "y", "1"):
        user_log = None  # an XML log is not merged event by event: sent as written, as before
    per_proc_log = eventlog.per_proc_log(user_log) if user_log is not None else None
    if user_log is not None and per_proc_log is not None:
        # Each proc's log comes home under a name of its own, then joins the user's (services/eventlog.py).
        extra += [(eventlog.LOG_MACRO, user_log.strip()), ("log", per_proc_log)]
    try:
        procs = submitdesc.expand(desc.with_commands(extra), cluster=0)
        mergeable = [eventlog.per_proc_log(p[eventlog.LOG_MACRO]) is not None for p in procs] if per_proc_log else []
        if not all(mergeable):
            # A macro or a later queue statement made some proc's log empty, /dev/null or a "~" path: that
            # proc's log is sent as written, and each other proc's still comes home under a name of its own.
            extra = [(k, v) for k, v in extra if k not in (eventlog.LOG_MACRO, "log")]
            desc = desc.with_commands(extra)
            if any(mergeable):
                desc = _per_proc_logs(desc, mergeable)
            procs = submitdesc.expand(desc, cluster=0)
        else:
            desc = desc.with_commands(extra)
    except submitdesc.SubmitError as e:
        raise SubmitRefused(str(e)) from None
    if not procs:
        raise SubmitRefused("the queue statement makes no jobs")
    iwds = []
    checked: set[tuple[str, str]] = set()  # a 10,000-job cluster names the same few paths 30,000 times
    here: dict[str, Path] = {}
    remaps: dict[str, dict[str, str]] = {}
    for proc, commands in enumerate(procs):
        # A value from a macro ("initialdir = $(dir)") is only known now, and is still relative
        # to the submitter's cwd, as the schedd will read it; never to the daemon's own cwd.
        iwd = here.get(commands["initialdir"]) or here.setdefault(commands["initialdir"],
                                                                  _here(cwd, commands["initialdir"]))
        if ("iwd", str(iwd)) not in checked:
            if not iwd.is_dir():
                raise SubmitRefused(f"job {proc}: initialdir {iwd} is not a directory")
            if not os.access(iwd, os.W_OK):
                raise SubmitRefused(
                    f"job {proc}: initialdir {iwd} is not writable, so output could not be retrieved there")
            checked.add(("iwd", str(iwd)))
        exe = here.get(commands["executable"]) or here.setdefault(commands["executable"],
                                                                  _here(cwd, commands["executable"]))
        if commands.get("transfer_executable", "true").strip().lower() != "false" and ("exe", str(exe)) not in checked:
            if not exe.is_file():
                raise SubmitRefused(f"job {proc}: executable {exe} does not exist")
            checked.add(("exe", str(exe)))
        for entry in commands.get("transfer_input_files", "").replace("\n", ",").split(","):
            entry = entry.strip()
            if not entry or "://" in entry:
                continue
            path = iwd / entry
            if ("input", str(path)) in checked:
                continue
            if not path.exists():
                raise SubmitRefused(f"job {proc}: input file {path} does not exist")
            if not os.access(path, os.R_OK):
                raise SubmitRefused(f"job {proc}: input file {path} is not readable")
            checked.add(("input", str(path)))
        iwd_text = str(iwd)
        for joined in _output_paths(commands, iwd_text, remaps):
            # One look per directory: a 10,000-job cluster writes its outputs into a handful.
            parent = os.path.dirname(joined)
            if ("out", parent) in checked:
                continue
            target = Path(joined)
            problem = retrieval.probe(target.parent / ".rsub-output-check")
            if problem is not None and problem.permanent:
                raise SubmitRefused(f"job {proc}: output {target} could not be retrieved: {problem}")
            checked.add(("out", parent))
        iwds.append(iwd_text)
    rendered = submitdesc.render(desc)
    return Prepared(
        request=SubmitRequest(text=rendered, cwd=cwd), tag=tag, num_procs=len(procs), iwds=tuple(iwds),
        replaced=replaced, procs=tuple(procs),
    )
