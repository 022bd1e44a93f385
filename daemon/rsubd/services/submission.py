"""Preparing a submit: check the user's description, add rsub's attributes, make it self-contained.

Everything that can be refused is refused here, before anything is sent to a
schedd: syntax errors, a missing executable or input file, an initialdir that
does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from rsub.wire.vocabulary import ClusterState, ErrorCode, RequestError
from rsubd import submitdesc
from rsubd.backends.schedd import Action, ErrorKind, Schedd, ScheddError, SubmitRequest, job_id
from rsubd.ledger.store import Ledger
from rsubd.platform.crash import crashpoint
from rsubd.services import eventlog, retrieval
from rsubd.services.limits import SubmitLimits
from rsubd.services.limits import check as check_limits
from rsubd.services.views import submitted_view
from rsubd.tokens import scoped
from rsubd.tokens.manager import Credential, TokenManager

# The tail of a cut-off submit's note while recovery asks the schedd (recovery rewords the note after).
ASKING = "; rsubd asks the schedd whether it made the cluster"
log = structlog.get_logger("rsubd.services.submission")
# Failures after which the schedd may or may not have done what was asked.
UNKNOWN_OUTCOME = (ErrorKind.TIMEOUT, ErrorKind.OTHER)


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


# Commands rsub sets itself; a user's own value is replaced (and the reply says so).
RSUB_KEYS = ("leave_in_queue", "My.RETRIEVED", "My.RsubInstance", "My.RsubId")


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
        remap = remaps[text] = retrieval.parse_remaps(text)
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
    per_proc_log = eventlog.per_proc_log(user_log) if user_log is not None else None
    if user_log is not None and per_proc_log is not None:
        # Each proc's log comes home under a name of its own, then joins the user's (services/eventlog.py).
        extra += [(eventlog.LOG_MACRO, user_log.strip()), ("log", per_proc_log)]
    try:
        procs = submitdesc.expand(desc.with_commands(extra), cluster=0)
        if per_proc_log is not None and any(eventlog.per_proc_log(p[eventlog.LOG_MACRO]) is None for p in procs):
            # A macro made some proc's log absolute (or none): those never come home, so send it as written.
            extra = [(k, v) for k, v in extra if k not in (eventlog.LOG_MACRO, "log")]
            procs = submitdesc.expand(desc.with_commands(extra), cluster=0)
    except submitdesc.SubmitError as e:
        raise SubmitRefused(str(e)) from None
    desc = desc.with_commands(extra)
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
        replaced=replaced,
    )


# -- the submit workflow: intent, submit, record, spool, record (docs/protocol.md) -----------------


@dataclass(frozen=True)
class SubmitOrder:
    """A submit request's fields, as the protocol checked them."""

    request_id: str
    description: str
    cwd: str
    submit_file: str | None = None
    schedd: str | None = None
    token: str | None = None
    group: str | None = None
    role: str | None = None
    scopes: tuple[str, ...] = ()  # --need-scope / --need-storage-modify: a token of this submit's own
    keep_removed: bool = False  # a DAG: its removed DAGMan job stays until retrieved

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> SubmitOrder:
        return cls(request_id=f["request_id"], description=f["description"], cwd=f["cwd"],
                   submit_file=f.get("submit_file"), schedd=f.get("schedd"), token=f.get("token"),
                   group=f.get("group"), role=f.get("role"), scopes=tuple(map(str, f.get("scopes") or ())))


class ScheddHooks(Protocol):
    """What a submit needs from the daemon's schedds: the backend to submit through, and whom to tell."""

    def submitter(self, schedd: str, profile: str | None, own_token: Credential | None = None) -> Schedd: ...

    def note_schedd_error(self, schedd: str, profile: str | None, kind: ErrorKind, message: str) -> None: ...

    def needs_recovery(self, name: str) -> None: ...

    def schedd_answered(self, name: str) -> None: ...

    def poke(self, name: str | None = None, *, force: bool = False) -> Mapping[str, object]: ...


class Submissions:
    """Submits once per request id, for the submit handler and for recovery alike."""

    def __init__(self, ledger: Ledger, tokens: TokenManager, hooks: ScheddHooks, *,
                 schedds: Mapping[str, str | None], max_age_seconds: int,
                 limits: Mapping[str, tuple[int, int]] | None = None) -> None:
        self.ledger = ledger
        # name -> the schedd's (max_jobs_per_submission, max_jobs_per_owner); a schedd not named has the defaults
        self.limits = {name: SubmitLimits(*pair) for name, pair in (limits or {}).items()}
        self.tokens = tokens
        self.hooks = hooks
        self.schedds = schedds  # name -> the schedd's own token profile; the first is the default schedd
        self.max_age_seconds = max_age_seconds
        self.inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def submit(self, order: SubmitOrder) -> dict[str, Any]:
        """Submit once per request id: a retry joins the submit in flight or gets its cluster."""
        rid = order.request_id
        task = self.inflight.get(rid)
        if task is None:
            task = asyncio.ensure_future(self._submit(order))
            self.inflight[rid] = task
            task.add_done_callback(lambda _t: self.inflight.pop(rid, None))
        # Shielded: a client that hangs up must not cut a submit between the schedd's submit and spool.
        return await asyncio.shield(task)

    async def _submit(self, order: SubmitOrder) -> dict[str, Any]:
        name = order.schedd or next(iter(self.schedds))
        if name not in self.schedds:
            raise RequestError(ErrorCode.NOT_FOUND, f"no schedd named {name!r}; configured: {', '.join(self.schedds)}")
        existing = self.ledger.cluster_by_request(order.request_id)
        if existing is not None:
            if existing["state"] == "failed":
                raise RequestError(ErrorCode.SCHEDD, existing["error"] or "submit failed")
            if existing["state"] in (ClusterState.SUBMITTING, ClusterState.SPOOLING):
                raise RequestError(ErrorCode.SCHEDD, "rsubd is finishing this submit (it was interrupted); the schedd "
                                   "must answer first: try again shortly, or see `rsub daemon status`")
            if existing["state"] != ClusterState.INTERRUPTED:
                return submitted_view(existing, replaced=())
        try:
            profile, fell_back = self.tokens.choose(token=order.token, group=order.group, role=order.role,
                                                    default=self.schedds[name])
        except KeyError as e:
            raise RequestError(ErrorCode.BAD_REQUEST, str(e.args[0])) from None
        if profile is not None and (blocker := self.tokens.blocker(profile)):
            raise RequestError(ErrorCode.TOKEN, f"nothing was submitted: {blocker}")
        if order.scopes:
            return await self._submit_scoped(order, name, profile, existing, fell_back)
        prepared = await self.prepare(order.description, order.cwd, keep_removed=order.keep_removed)
        return await self._record_and_run(order, name, profile, existing, fell_back, prepared)

    async def _submit_scoped(self, order: SubmitOrder, name: str, profile: str | None,
                             existing: dict[str, Any] | None, fell_back: bool) -> dict[str, Any]:
        """A submit with a token of its own: fetched, shipped with the job, used for the submit, then removed."""
        if profile is None:
            raise RequestError(ErrorCode.BAD_SUBMIT, "nothing was submitted: --need-scope and --need-storage-modify "
                               "ask a token profile for a token with more scopes, and this submit uses none: give "
                               "-G GROUP (or --token NAME) of a [tokens.NAME] profile with kind = \"scitoken\"")
        token, credential = await asyncio.to_thread(self.tokens.scoped, profile, order.scopes, key=order.request_id)
        try:
            prepared = await self.prepare(order.description, order.cwd, job_token=str(token.path),
                                          keep_removed=order.keep_removed)
            result = await self._record_and_run(order, name, profile, existing, fell_back, prepared, credential)
        finally:
            scoped.discard(token)
        result["scopes"] = list(token.scopes)
        return result

    async def _record_and_run(self, order: SubmitOrder, name: str, profile: str | None,
                              existing: dict[str, Any] | None, fell_back: bool, prepared: Prepared,
                              credential: Credential | None = None) -> dict[str, Any]:
        self.check_limits(name, prepared.num_procs)  # before the intent: a refused submit leaves no trace
        if existing is not None:  # interrupted before the schedd heard of it: this retry submits it
            row = int(existing["id"])
            self.ledger.restart_submit(row, tag=prepared.tag, submitted_description=prepared.request.text)
        else:
            crashpoint("submit.before_intent")
            row = self.ledger.add_submit_intent(
                request_id=order.request_id, schedd=name, tag=prepared.tag, description=order.description,
                submitted_description=prepared.request.text, submit_dir=order.cwd, submit_file=order.submit_file,
            )
        crashpoint("submit.after_intent")
        result = await self.run_submit(row, name, profile, prepared, credential)
        if fell_back:
            token = f"its token profile {profile!r}" if profile else "the credentials it has by default"
            result["notes"] = [f"no token profile for group {order.group!r}: -G {order.group} names the job's group; "
                               f"it goes to schedd {name} with {token}"]
        return result

    def check_limits(self, name: str, procs: int) -> None:
        """Refuse, before anything is sent, a submit past the schedd's submission limits (services/limits.py)."""
        check_limits(name, self.limits.get(name, SubmitLimits()), procs, self.ledger.queued_count(name))

    async def prepare(self, description: str, cwd: str, job_token: str | None = None, *,
                      keep_removed: bool = False) -> Prepared:
        """`prepare` in a thread; a refusal becomes the request error the client sees."""
        try:
            return await asyncio.to_thread(
                prepare, description, cwd=cwd, instance_id=self.ledger.instance_id,
                max_age_seconds=self.max_age_seconds, job_token=job_token, keep_removed=keep_removed,
            )
        except SubmitRefused as e:
            raise RequestError(ErrorCode.BAD_SUBMIT, str(e)) from None

    async def run_submit(self, row: int, name: str, profile: str | None, prepared: Prepared,
                         own_token: Credential | None = None) -> dict[str, Any]:
        """Submit and spool a cluster whose intent is recorded; each outcome is recorded before the next step.

        With `own_token` (this submit's own) the submit goes through a backend of its own, closed after.
        """
        schedd = self.hooks.submitter(name, profile, own_token)
        try:
            return await self._submit_and_spool(row, name, profile, prepared, schedd, own_token)
        finally:
            if own_token is not None:  # in a thread: closing a binding worker waits for its process
                await asyncio.to_thread(schedd.close)

    async def _submit_and_spool(self, row: int, name: str, profile: str | None, prepared: Prepared, schedd: Schedd,
                                own_token: Credential | None) -> dict[str, Any]:
        hooks = self.hooks
        try:
            result = await asyncio.to_thread(schedd.submit, prepared.request)
        except ScheddError as e:
            if own_token is not None and e.kind is ErrorKind.AUTHENTICATION:
                # The refused token is this submit's own: the profile's token is not in question.
                self.ledger.record_submit_failed(row, str(e))
                raise RequestError(ErrorCode.TOKEN, f"schedd {name} refused the token fetched for this submit's "
                                   f"scopes; nothing was submitted: {e}") from None
            hooks.note_schedd_error(name, profile, e.kind, str(e))
            log.warning("submit.failed", schedd=name, error=str(e))
            if e.kind in UNKNOWN_OUTCOME:
                # The schedd may have made the cluster before the call was cut off: the recovery asks it by tag.
                self.ledger.note_submit(row, f"the submit call to schedd {name} was cut off ({e}){ASKING}")
                hooks.needs_recovery(name)
                raise RequestError(ErrorCode.SCHEDD, f"schedd {name} did not answer the submit ({e}); rsubd will "
                                   "find out whether the cluster was made: see `rsub status` shortly") from None
            self.ledger.record_submit_failed(row, str(e))
            if e.kind is ErrorKind.AUTHENTICATION:
                # The first refusal already means a person must act: the token is marked (above), and
                # the answer is the token's, with what to run, not a schedd failure to retry.
                advice = (self.tokens.blocker(profile) if profile is not None else None) or (
                    "check the credentials this schedd accepts from you (a token in ~/.condor/tokens.d, or a"
                    " [tokens.NAME] profile named by the schedd's `token`)")
                raise RequestError(ErrorCode.TOKEN, f"schedd {name} refused the token; nothing was submitted: {e}."
                                   f" {advice}") from None
            raise RequestError(ErrorCode.SCHEDD, f"schedd {name} refused the submit: {e}") from None
        crashpoint("submit.after_schedd")
        # Not strict: a backend that reports fewer procs than were prepared records those it made.
        self.ledger.record_submitted(row, result.cluster, list(zip(result.procs, prepared.iwds, strict=False)))
        crashpoint("submit.after_record")
        try:
            await asyncio.to_thread(schedd.spool, result)
        except ScheddError as e:
            self.ledger.record_submit_failed(row, f"spool failed: {e}")
            log.warning("spool.failed", schedd=name, cluster=result.cluster, error=str(e))
            # Unspooled jobs would sit held (code 16) for ever; remove them, best effort.
            with contextlib.suppress(ScheddError):
                await asyncio.to_thread(schedd.act, Action.REMOVE, [job_id(result.cluster, p) for p in result.procs],
                                        "rsub: spooling the input files failed")
            raise RequestError(ErrorCode.SCHEDD,
                               f"cluster {result.cluster}: spooling the input files failed: {e}") from None
        crashpoint("submit.after_spool")
        self.ledger.record_spooled(row)
        crashpoint("submit.after_spooled")
        hooks.schedd_answered(name)
        log.info("cluster.submitted", schedd=name, cluster=result.cluster, procs=result.num_procs)
        hooks.poke(name, force=True)  # the queue changed: worth a poll now, within the early-poll budget
        cluster_row = self.ledger.cluster_row(row)
        assert cluster_row is not None
        return submitted_view(cluster_row, replaced=prepared.replaced)
