"""One handler per request kind; `dispatch` matches on the kind exhaustively."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import getpass
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from rsub.wire.protocol import Request
from rsub.wire.vocabulary import ACTIVE_STATES, FINAL_STATES, STATES, WRAPPER, ErrorCode, RequestError
from rsubd.services import retrieval
from rsubd import submitdesc
from rsubd.services import submission as submitting
from rsubd.platform.crash import crashpoint
from rsubd.ledger.store import JobSelector
from rsubd.backends.schedd import (
    MAX_ID,
    Action,
    ErrorKind,
    ScheddError,
    job_id,
    parse_job_id,
)

if TYPE_CHECKING:
    from rsubd.app import Daemon

log = structlog.get_logger("rsubd.handlers")
MAX_WAIT = 60.0
ACTIONS = {"hold": Action.HOLD, "release": Action.RELEASE, "remove": Action.REMOVE}
# Failures after which the schedd may or may not have done what was asked.
UNKNOWN_OUTCOME = (ErrorKind.TIMEOUT, ErrorKind.OTHER)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


# One-line hints for the hold codes users meet most (HTCondor's HoldReasonCode numbering).
HOLD_HINTS = {
    1: "held by a user or an administrator; 'rsub release' lets it run again",
    3: "held by a policy expression (periodic_hold or the pool's policy); fix the cause, then release",
    6: "the executable could not be started: check its #! line and that it is executable",
    12: "an output file named in transfer_output_files was not created by the job",
    13: "an input file could not be transferred to the execute machine",
    16: "spooling never finished: the input files were not uploaded (rsub resubmits or reports these)",
    21: "held by a periodic_hold expression of the job",
    26: "the job used more memory than request_memory; raise it and resubmit",
    34: "the job used more resources than it requested (memory or disk); raise the request and resubmit",
}


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
        "submitted_at": iso(row["submitted_at"]),
        "completed_at": iso(row["completed_at"]),
        "retrieved_at": iso(row["retrieved_at"]),
        # A completed job whose output rsubd cannot write where it goes: a person must act (`attention`
        # says what), the output stays on the schedd; `rsub retrieve` fetches it again.
        "needs_attention": row.get("attention") is not None,
        "attention": row.get("attention"),
        "retrieve_failures": row.get("retrieve_failures") or 0,
        "retrieve_retry_at": None if row.get("retrieve_paused") else iso(row.get("retrieve_retry_at")),
        "retrieved_to": row.get("retrieved_to"),
    }


# -- the jobsub views: what `rsub q` and `rsub history` show beside the ledger's fields ---------------

# jobsub_q's ST column. HTCondor's letters where it has one; S for rsub's spooling (and submitting),
# F for failed, and D ("done") for retrieved: completed with its output home, distinct from C,
# completed and its output not yet retrieved.
STATUS_LETTERS = {
    "submitting": "S", "spooling": "S", "idle": "I", "running": "R", "held": "H", "completed": "C",
    "retrieved": "D", "removed": "X", "failed": "F",
}
_QUEUE_LINE = re.compile(r"\s*queue\b(?!\s*=(?!=))", re.IGNORECASE)
FACTS_CACHE_SIZE = 10_000  # clusters whose description facts are kept; past it the cache starts again


def status_letter(state: str) -> str:
    return STATUS_LETTERS.get(state, "?")


def description_facts(text: str) -> dict[str, Any]:
    """What jobsub_q shows of a cluster, read cheaply from its submitted description (no macro expansion).

    The command is the executable's name; for a job `rsub submit file://` built, whose
    executable is rsub's wrapper, the script's (the first input file). The priority is
    `priority` when it is an integer (its text when it is a macro), else 0; the size is
    `request_memory` as written (MB unless it names a unit), else None.
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
    return {"command": command, "priority": priority, "size": values.get("request_memory") or None}


def run_seconds(row: dict[str, Any], now: float) -> float | None:
    """Seconds from when a poll first saw the job running until it finished (or now, or it left running)."""
    start = row.get("run_started_at")
    if start is None:
        return None
    if row["state"] == "running":
        end = now
    elif row.get("finished_at") is not None and row["finished_at"] >= start:
        end = row["finished_at"]
    elif row.get("run_left_at") is not None:
        end = row["run_left_at"]
    else:
        return None
    return round(max(0.0, end - start), 3)


def jobsub_view(row: dict[str, Any], facts: dict[str, Any], owner: str, now: float) -> dict[str, Any]:
    """The "jobsub" object of a job in `rsub q|status|history --json` (shape version 1)."""
    return {"owner": owner, "status": status_letter(row["state"]), "run_time": run_seconds(row, now), **facts}


MAX_CONSTRAINT = 10_000
_OPEN = {"(": ")", "[": "]", "{": "}"}


def guarded_constraint(instance_id: str, expr: str) -> str:
    """`(RsubInstance == "<id>") && (EXPR)`: only this ledger's jobs, whatever EXPR says.

    EXPR must be one balanced expression, so that it cannot close the parenthesis around
    it and escape the guard: brackets nest, strings and quoted names end, and there are
    no comments (which could hide a bracket from this check, not from the schedd's parser).
    ValueError says what is wrong.
    """
    expr = expr.strip()
    if not expr:
        raise ValueError("the constraint is empty")
    if len(expr) > MAX_CONSTRAINT:
        raise ValueError(f"the constraint is longer than {MAX_CONSTRAINT} characters")
    if not expr.isprintable():
        raise ValueError("the constraint has control characters")
    try:
        expr.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the constraint is not valid UTF-8") from None
    stack: list[str] = []
    quote = ""
    i = 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif expr.startswith(("/*", "//"), i):
            raise ValueError("comments are not allowed in a constraint")
        elif c in _OPEN:
            stack.append(_OPEN[c])
        elif c in ")]}" and (not stack or stack.pop() != c):
            raise ValueError(f"unbalanced {c!r} at character {i + 1} of the constraint")
        i += 1
    if quote:
        raise ValueError("a string in the constraint is not closed")
    if stack:
        raise ValueError(f"the constraint lacks a closing {stack[-1]!r}")
    return f'(RsubInstance == "{instance_id}") && ({expr})'


def seconds_field(value: Any, name: str) -> float | None:
    """An age in seconds from a request: None, or a finite number >= 0."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not (0 <= seconds < math.inf):
        raise RequestError(ErrorCode.BAD_REQUEST, f"{name} must be a number of seconds >= 0")
    return seconds


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
            value = (commands.get(kind) or "").strip()
            out[proc][kind] = value if value and value != "/dev/null" else None
    return out


def parse_selector(text: str, schedds: list[str]) -> JobSelector:
    """"CLUSTER", "CLUSTER.PROC", optionally "@SCHEDD"."""
    head, _, schedd = text.partition("@")
    try:
        cluster, proc = parse_job_id(head)
    except ValueError as e:
        raise RequestError(ErrorCode.BAD_REQUEST, str(e)) from None
    if schedd and schedd not in schedds:
        raise RequestError(ErrorCode.NOT_FOUND, f"no schedd named {schedd!r}; configured: {', '.join(schedds)}")
    return JobSelector(cluster=cluster, proc=proc, schedd=schedd or None)


class Handlers:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._facts: dict[int, dict[str, Any]] = {}  # cluster row -> description_facts; a submitted one never changes
        self._owner: str | None = None

    async def dispatch(self, request: Request) -> dict[str, Any]:
        f = request.fields
        match request.kind:
            case "ping":
                return {"pong": True, "pid": os.getpid(), "version": self.d.version}
            case "submit":
                return await self.submit(f)
            case "status":
                return self.status(f, active=f.get("active", False))
            case "history":
                return self.status(f, history=True)
            case "fetchlog":
                return await self.fetchlog(f["job"])
            case "wait":
                return await self.wait(f["ids"], float(f.get("timeout", MAX_WAIT)))
            case "retrieve":
                return await self.retrieve(f["ids"], f.get("dest"))
            case "act":
                return await self.act(f["action"], f["ids"], f.get("reason"), constraint=f.get("constraint"),
                                      schedd=f.get("schedd"))
            case "poke":
                return self.poke(f.get("schedd"))
            case "daemon_status":
                return self.d.status()
            case "daemon_stop":
                self.d.request_stop()
                return {"stopping": True}
            case "token_status":
                return {"tokens": self.d.tokens.status()}
            case "token_refresh":
                return await self.token_refresh(f.get("name"), float(f.get("wait", 30.0)))
            case "token_request_plan":
                return self.token_request_plan(f.get("name"), f.get("schedd"))
            case _:
                raise RequestError(ErrorCode.BAD_REQUEST, f"no handler for {request.kind!r}")

    def _selectors(self, ids: list[Any]) -> list[JobSelector]:
        names = list(self.d.schedds)
        if not all(isinstance(i, str) for i in ids):
            raise RequestError(ErrorCode.BAD_REQUEST, "ids must be strings like 12, 12.0 or 12.0@local")
        return [parse_selector(i, names) for i in ids]

    def _rows(self, ids: list[Any], limit: int = 100_000) -> list[dict[str, Any]]:
        selectors = self._selectors(ids)
        rows = self.d.ledger.jobs(selectors, limit=limit)
        for sel, text in zip(selectors, ids):
            if not any(r["cluster"] == sel.cluster and sel.proc in (None, r["proc"])
                       and sel.schedd in (None, r["schedd"]) for r in rows):
                raise RequestError(ErrorCode.NOT_FOUND, f"no job {text} in rsub's ledger")
        return rows

    async def submit(self, f: dict[str, Any]) -> dict[str, Any]:
        """Submit once per request id: a retry joins the submit in flight or gets its cluster."""
        rid = f["request_id"]
        task = self.inflight.get(rid)
        if task is None:
            task = asyncio.ensure_future(self._submit(f))
            self.inflight[rid] = task
            task.add_done_callback(lambda _t: self.inflight.pop(rid, None))
        # Shielded: a client that hangs up must not cut a submit between the schedd's submit and spool.
        return await asyncio.shield(task)

    async def _submit(self, f: dict[str, Any]) -> dict[str, Any]:
        name = f.get("schedd") or next(iter(self.d.schedds))
        if name not in self.d.schedds:
            raise RequestError(ErrorCode.NOT_FOUND, f"no schedd named {name!r}; configured: {', '.join(self.d.schedds)}")
        existing = self.d.ledger.cluster_by_request(f["request_id"])
        if existing is not None:
            if existing["state"] == "failed":
                raise RequestError(ErrorCode.SCHEDD, existing["error"] or "submit failed")
            if existing["state"] in ("submitting", "spooling"):
                raise RequestError(ErrorCode.SCHEDD, "rsubd is finishing this submit (it was interrupted); the schedd "
                                   "must answer first: try again shortly, or see `rsub daemon status`")
            if existing["state"] != "interrupted":
                return self._submitted(existing, replaced=())
        try:
            profile = self.d.tokens.choose(token=f.get("token"), group=f.get("group"), role=f.get("role"),
                                           default=self.d.config.schedd(name).token)
        except KeyError as e:
            raise RequestError(ErrorCode.BAD_REQUEST, str(e.args[0])) from None
        if profile is not None and (blocker := self.d.tokens.blocker(profile)):
            raise RequestError(ErrorCode.TOKEN, f"nothing was submitted: {blocker}")
        prepared = await self.prepare(f["description"], f["cwd"], f.get("submit_file"))
        if existing is not None:  # interrupted before the schedd heard of it: this retry submits it
            row = int(existing["id"])
            self.d.ledger.restart_submit(row, tag=prepared.tag, submitted_description=prepared.request.text)
        else:
            crashpoint("submit.before_intent")
            row = self.d.ledger.add_submit_intent(
                request_id=f["request_id"], schedd=name, tag=prepared.tag, description=f["description"],
                submitted_description=prepared.request.text, submit_dir=f["cwd"], submit_file=f.get("submit_file"),
            )
        crashpoint("submit.after_intent")
        return await self.run_submit(row, name, profile, prepared)

    async def prepare(self, description: str, cwd: str, submit_file: str | None) -> submitting.Prepared:
        try:
            return await asyncio.to_thread(
                submitting.prepare, description, cwd=cwd, instance_id=self.d.ledger.instance_id,
                max_age_seconds=int(self.d.config.leave_in_queue_days * 86400), submit_file=submit_file,
            )
        except submitting.SubmitRefused as e:
            raise RequestError(ErrorCode.BAD_SUBMIT, str(e)) from None

    async def run_submit(self, row: int, name: str, profile: str | None,
                         prepared: submitting.Prepared) -> dict[str, Any]:
        """Submit and spool a cluster whose intent is recorded; each outcome is recorded before the next step."""
        schedd = self.d.submitter(name, profile)
        try:
            result = await asyncio.to_thread(schedd.submit, prepared.request)
        except ScheddError as e:
            self.d.note_schedd_error(name, profile, e.kind, str(e))
            log.warning("submit.failed", schedd=name, error=str(e))
            if e.kind in UNKNOWN_OUTCOME:
                # The schedd may have made the cluster before the call was cut off: the recovery asks it by tag.
                self.d.needs_recovery(name)
                raise RequestError(ErrorCode.SCHEDD, f"schedd {name} did not answer the submit ({e}); rsubd will "
                                   "find out whether the cluster was made: see `rsub status` shortly") from None
            self.d.ledger.record_submit_failed(row, str(e))
            raise RequestError(ErrorCode.SCHEDD, f"schedd {name} refused the submit: {e}") from None
        crashpoint("submit.after_schedd")
        self.d.ledger.record_submitted(row, result.cluster, list(zip(result.procs, prepared.iwds)))
        crashpoint("submit.after_record")
        try:
            await asyncio.to_thread(schedd.spool, result)
        except ScheddError as e:
            self.d.ledger.record_submit_failed(row, f"spool failed: {e}")
            log.warning("spool.failed", schedd=name, cluster=result.cluster, error=str(e))
            # Unspooled jobs would sit held (code 16) for ever; remove them, best effort.
            with contextlib.suppress(ScheddError):
                await asyncio.to_thread(schedd.act, Action.REMOVE, [job_id(result.cluster, p) for p in result.procs],
                                        "rsub: spooling the input files failed")
            raise RequestError(ErrorCode.SCHEDD, f"cluster {result.cluster}: spooling the input files failed: {e}") from None
        crashpoint("submit.after_spool")
        self.d.ledger.record_spooled(row)
        crashpoint("submit.after_spooled")
        self.d.schedd_answered(name)
        log.info("cluster.submitted", schedd=name, cluster=result.cluster, procs=result.num_procs)
        self.d.poke(name)
        cluster_row = self.d.ledger.cluster_row(row)
        assert cluster_row is not None
        return self._submitted(cluster_row, replaced=prepared.replaced)

    def _submitted(self, row: dict[str, Any], replaced: tuple[str, ...]) -> dict[str, Any]:
        ids = [f"{row['cluster']}.{p}@{row['schedd']}" for p in range(row["num_procs"] or 0)]
        return {"cluster": row["cluster"], "schedd": row["schedd"], "jobs": ids, "replaced": list(replaced)}

    @property
    def owner(self) -> str:
        """The local user: every job rsubd submits is this user's."""
        if self._owner is None:
            try:
                self._owner = getpass.getuser()
            except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
                self._owner = str(os.getuid())
        return self._owner

    def _filters(self, f: dict[str, Any]) -> dict[str, Any]:
        """The filters of a status or history request, checked, as `Ledger.job_page` takes them."""
        states = f.get("states") or []
        if not all(isinstance(s, str) and s in STATES for s in states):
            raise RequestError(ErrorCode.BAD_REQUEST, f"states must be among {', '.join(STATES)}")
        schedd = f.get("schedd")
        if schedd is not None and schedd not in self.d.schedds:
            raise RequestError(ErrorCode.NOT_FOUND, f"no schedd named {schedd!r}; configured: {', '.join(self.d.schedds)}")
        clusters = f.get("clusters") or []
        if not all(type(c) is int and 0 <= c <= MAX_ID for c in clusters):
            raise RequestError(ErrorCode.BAD_REQUEST, f"clusters must be integers from 0 to {MAX_ID}")
        now = time.time()
        since, older = seconds_field(f.get("since"), "since"), seconds_field(f.get("older_than"), "older_than")
        return {
            "states": list(dict.fromkeys(states)), "schedd": schedd, "clusters": list(dict.fromkeys(clusters)),
            "submitted_after": None if since is None else now - since,
            "submitted_before": None if older is None else now - older,
        }

    def status(self, f: dict[str, Any], *, active: bool = False, history: bool = False) -> dict[str, Any]:
        """Jobs by id and filters, one page, with their jobsub view; history: final states only, newest first."""
        ids = f.get("ids") or []
        limit = max(1, min(f.get("limit", 1000), 100_000))
        offset = min(max(0, f.get("offset", 0)), 2**62)
        selectors = self._selectors(ids)
        filters = self._filters(f)
        # `rsub q 12` shows cluster 12 whatever its state, as it always has; history is final states only.
        scope = FINAL_STATES if history else ACTIVE_STATES if active and not ids else None
        if scope is not None:
            filters["states"] = [s for s in filters["states"] or scope if s in scope]
            if not filters["states"]:  # asked only for states this view never shows
                return {"jobs": [], "schedds": self.d.freshness()}
        rows = self.d.ledger.job_page(selectors, **filters, newest_first=history, limit=limit, offset=offset)
        for sel, text in zip(selectors, ids):
            shown = any(r["cluster"] == sel.cluster and sel.proc in (None, r["proc"])
                        and sel.schedd in (None, r["schedd"]) for r in rows)
            # Filters or the page may leave a job out; only a job the ledger lacks is an error.
            if not shown and not self.d.ledger.jobs([sel], limit=1):
                raise RequestError(ErrorCode.NOT_FOUND, f"no job {text} in rsub's ledger")
        facts = self._cluster_facts({r["cluster_row"] for r in rows})
        now = time.time()
        jobs = [{**job_view(r), "jobsub": jobsub_view(r, facts.get(r["cluster_row"], {}), self.owner, now)}
                for r in rows]
        return {"jobs": jobs, "schedds": self.d.freshness()}

    def _cluster_facts(self, cluster_rows: set[int]) -> dict[int, dict[str, Any]]:
        """description_facts of each cluster, read from the ledger once per cluster (one query for the missing)."""
        missing = [r for r in cluster_rows if r not in self._facts]
        if missing:
            if len(self._facts) + len(missing) > FACTS_CACHE_SIZE:
                self._facts.clear()
            for row, text in self.d.ledger.submitted_descriptions(missing).items():
                self._facts[row] = description_facts(text)
        return {r: self._facts[r] for r in cluster_rows if r in self._facts}

    async def fetchlog(self, text: str) -> dict[str, Any]:
        """What `rsub fetchlog` packs: each job's iwd and files, and the cluster's submitted description."""
        rows = self._rows([text])
        schedds = sorted({r["schedd"] for r in rows})
        if len(schedds) > 1:
            raise RequestError(ErrorCode.BAD_REQUEST, f"{text} is on several schedds ({', '.join(schedds)}); "
                               f"say which, as {text}@{schedds[0]}")
        schedd, cluster = schedds[0], rows[0]["cluster"]
        found = self.d.ledger.descriptions(schedd, [cluster]).get(cluster)
        if found is None:
            raise RequestError(ErrorCode.NOT_FOUND, f"no submit description for cluster {cluster} in rsub's ledger")
        description, submit_dir = found
        files = await asyncio.to_thread(fetchlog_files, description, submit_dir, cluster, [r["proc"] for r in rows])
        whole = parse_selector(text, list(self.d.schedds)).proc is None
        return {
            "id": f"{cluster}@{schedd}" if whole else f"{job_id(cluster, rows[0]['proc'])}@{schedd}",
            "cluster": cluster, "schedd": schedd, "submitted_description": description,
            "jobs": [{"id": f"{job_id(r['cluster'], r['proc'])}@{schedd}", "proc": r["proc"], "state": r["state"],
                      "iwd": r["iwd"], "files": files[r["proc"]]} for r in rows],
        }

    async def wait(self, ids: list[Any], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + max(0.0, min(timeout, MAX_WAIT))
        rows = self._rows(ids)
        for name in {r["schedd"] for r in rows}:
            self.d.poke(name)
        while True:
            rows = self._rows(ids)
            # A job that needs a person is as far as rsubd can take it alone: the wait ends.
            if all(r["state"] in FINAL_STATES or r.get("attention") is not None for r in rows):
                return {"done": True, "attention": sum(r.get("attention") is not None for r in rows),
                        "jobs": [job_view(r) for r in rows]}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {"done": False, "jobs": [job_view(r) for r in rows]}
            await self.d.wait_for_poll(remaining)

    async def retrieve(self, ids: list[Any], dest: str | None) -> dict[str, Any]:
        """`rsub retrieve`: fetch completed jobs' output now, into each job's own directory or into `dest`."""
        if not ids:
            raise RequestError(ErrorCode.BAD_REQUEST, "name the jobs to retrieve: ids like 12, 12.0 or 12.0@local")
        if dest is not None:
            if not os.path.isabs(dest):
                raise RequestError(ErrorCode.BAD_REQUEST, f"--dest must be an absolute path, not {dest!r}")
            problem = retrieval.probe(Path(dest) / ".rsub-dest")
            if problem is not None:
                raise RequestError(ErrorCode.BAD_REQUEST, f"--dest {dest}: {problem}")
        rows = self._rows(ids)
        not_ready = [r for r in rows if r["state"] != "completed"]
        if not_ready and len(not_ready) == len(rows):
            r = not_ready[0]
            where = f" (in {r['retrieved_to'] or r['iwd']})" if r["state"] == "retrieved" else ""
            raise RequestError(ErrorCode.BAD_REQUEST, f"{len(not_ready)} job(s) have no output waiting on the"
                               f" schedd: {job_id(r['cluster'], r['proc'])}@{r['schedd']} is {r['state']}{where}")
        by_schedd: dict[str, list[tuple[int, int]]] = {}
        for r in rows:
            if r["state"] == "completed":
                by_schedd.setdefault(r["schedd"], []).append((r["cluster"], r["proc"]))
        if dest is not None:
            await asyncio.to_thread(os.makedirs, dest, 0o700, True)
        summary: dict[str, Any] = {}
        for name, keys in by_schedd.items():
            try:
                result = await asyncio.to_thread(self.d.pollers[name].retrieve_now, keys, dest=dest)
            except ScheddError as e:
                raise RequestError(ErrorCode.SCHEDD, f"schedd {name}: {e}") from None
            summary[name] = {k: [f"{job_id(*key)}@{name}" for key in v] for k, v in result.items()}
            log.info("jobs.retrieve_requested", schedd=name, jobs=len(keys), dest=dest,
                     retrieved=len(result["retrieved"]), failed=len(result["failed"]))
            self.d.poke(name, force=True)
        jobs = [job_view(r) for r in self._rows(ids)]
        return {"schedds": summary, "skipped": [f"{job_id(r['cluster'], r['proc'])}@{r['schedd']}" for r in not_ready],
                "dest": dest, "jobs": jobs}

    async def act(self, action: str, ids: list[Any], reason: str | None, *, constraint: str | None = None,
                  schedd: str | None = None) -> dict[str, Any]:
        """Hold, release or remove jobs by id, or rsub's own jobs matching a constraint on one schedd."""
        if action not in ACTIONS:
            raise RequestError(ErrorCode.BAD_REQUEST, f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if schedd is not None and schedd not in self.d.schedds:
            raise RequestError(ErrorCode.NOT_FOUND, f"no schedd named {schedd!r}; configured: {', '.join(self.d.schedds)}")
        if constraint is not None:
            if ids:
                raise RequestError(ErrorCode.BAD_REQUEST, "give job ids or a constraint, not both")
            return await self._act_constraint(action, constraint, reason, schedd or next(iter(self.d.schedds)))
        if not ids:
            raise RequestError(ErrorCode.BAD_REQUEST, "name the jobs: ids like 12, 12.0 or 12.0@local, or a constraint")
        if schedd is not None:  # the schedd of ids that name none
            ids = [i if not isinstance(i, str) or "@" in i else f"{i}@{schedd}" for i in ids]
        rows = self._rows(ids)
        by_schedd: dict[str, list[str]] = {}
        for r in rows:
            by_schedd.setdefault(r["schedd"], []).append(job_id(r["cluster"], r["proc"]))
        summary: dict[str, Any] = {}
        for name, jobs in by_schedd.items():
            try:
                result = await asyncio.to_thread(self.d.schedds[name].act, ACTIONS[action], jobs, reason)
            except ScheddError as e:
                raise RequestError(ErrorCode.SCHEDD, f"schedd {name}: {e}") from None
            summary[name] = result.as_dict()
            self.d.schedd_answered(name)
            log.info("jobs.acted", schedd=name, action=action, jobs=len(jobs), **result.as_dict())
            self.d.poke(name, force=True)
        return {"action": action, "schedds": summary}

    async def _act_constraint(self, action: str, constraint: str, reason: str | None, name: str) -> dict[str, Any]:
        try:
            spec = guarded_constraint(self.d.ledger.instance_id, constraint)
        except ValueError as e:
            raise RequestError(ErrorCode.BAD_REQUEST, f"invalid constraint: {e}") from None
        try:
            result = await asyncio.to_thread(self.d.schedds[name].act, ACTIONS[action], spec, reason)
        except ScheddError as e:
            if e.kind is ErrorKind.INVALID:
                raise RequestError(ErrorCode.BAD_REQUEST, f"invalid constraint {constraint.strip()!r}: the schedd "
                                   f"says {e.message}") from None
            raise RequestError(ErrorCode.SCHEDD, f"schedd {name}: {e}") from None
        except ValueError as e:  # text the ClassAd parser refuses before parsing (it passed the checks above)
            raise RequestError(ErrorCode.BAD_REQUEST, f"invalid constraint: {e}") from None
        self.d.schedd_answered(name)
        log.info("jobs.acted", schedd=name, action=action, constraint=True, **result.as_dict())
        self.d.poke(name, force=True)
        return {"action": action, "constraint": spec, "schedds": {name: result.as_dict()}}

    def poke(self, schedd: str | None) -> dict[str, Any]:
        """Ask for an early poll; each schedd says whether it was granted, and if not, why not."""
        if schedd is not None and schedd not in self.d.schedds:
            raise RequestError(ErrorCode.NOT_FOUND, f"no schedd named {schedd!r}; configured: {', '.join(self.d.schedds)}")
        decisions = self.d.poke(schedd)
        return {"poked": [n for n, d in decisions.items() if d.granted], "schedds": {
            n: {"poked": d.granted, "decision": d.value, "backing_off": self.d.policies[n].backing_off,
                "next_poll_in": self.d.loops[n].schedule.state()["next_poll_in"], **self.d.early[n].state()}
            for n, d in decisions.items()}}

    async def token_refresh(self, name: str | None, wait: float) -> dict[str, Any]:
        names = [name] if name else list(self.d.tokens.states)
        if name and name not in self.d.tokens.states:
            raise RequestError(ErrorCode.NOT_FOUND, f"no token profile named {name!r}; "
                               f"configured: {', '.join(self.d.tokens.states) or 'none'}")
        tasks = {n: self.d.start_refresh(n, manual=True) for n in names}
        if tasks:
            await asyncio.wait([asyncio.shield(t) for t in tasks.values()], timeout=max(0.0, min(wait, MAX_WAIT)))
        results = {}
        for n, task in tasks.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                results[n] = task.result()
            else:
                results[n] = {"refreshed": None, "reason": "still running; `rsub token status` shows its progress "
                              "(a browser login may be needed)"}
        return {"results": results, "tokens": self.d.tokens.status()}

    def token_request_plan(self, name: str | None, schedd: str | None) -> dict[str, Any]:
        """How to get a new IDTOKEN for a profile with condor_token_request, here or on the submit host."""
        states = self.d.tokens.states
        idtokens = [n for n, st in states.items() if st.profile.kind == "idtoken"]
        if name is None:
            if not idtokens:
                raise RequestError(ErrorCode.NOT_FOUND, "no idtoken profile is configured; add a [tokens.NAME] "
                                   'table with kind = "idtoken" to the config')
            name = idtokens[0]
        if name not in states:
            raise RequestError(ErrorCode.NOT_FOUND, f"no token profile named {name!r}")
        profile = states[name].profile
        if profile.kind != "idtoken":
            raise RequestError(ErrorCode.BAD_REQUEST, f"profile {name!r} holds a SciToken; "
                               f"get one with `{profile.manual_command()}`")
        users = [s for s in self.d.config.schedds if s.token == name]
        cfg = self.d.config.schedd(schedd) if schedd else (users[0] if users else None)
        target = profile.file if profile.file is not None else profile.target
        user = getpass.getuser()
        argv = ["condor_token_request", "-identity", f"{user}@fs", "-authz", "READ", "-authz", "WRITE"]
        if cfg is not None and cfg.backend == "htcondor":
            argv += ["-type", "SCHEDD"] + (["-name", cfg.name] if cfg.name else [])
            argv += ["-pool", cfg.pool] if cfg.pool else []
        remote = " ".join([*argv, "-token", f"rsub_{name}"])
        argv += ["-token", target.name]
        return {
            "profile": name, "target": str(target), "argv": argv,
            "env": {"_condor_SEC_TOKEN_DIRECTORY": str(target.parent)},
            "instructions": [
                "condor_token_request is not installed here (the htcondor wheel cannot request tokens).",
                "On the submit host, run:",
                f"  {remote}",
                "  (it prints a request id; the schedd's administrator approves it with condor_token_request_approve)",
                f"then copy ~/.condor/tokens.d/rsub_{name} from the submit host to {target} here, and run:",
                f"  chmod 600 {target} && rsub token refresh {name}",
            ],
        }
