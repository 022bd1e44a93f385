"""A submit, crash-safe: intent, submit, record, spool, record (docs/protocol.md).

What is checked and added before anything is sent is in services/prepare.py
(re-exported here: `prepare`, `Prepared`, `SubmitRefused`, `leave_in_queue`, `RSUB_KEYS`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from rsub.wire.vocabulary import ClusterState, ErrorCode, RequestError
from rsubd.backends.schedd import Action, ErrorKind, Schedd, ScheddError, job_id
from rsubd.ledger.store import Ledger
from rsubd.platform.crash import crashpoint
from rsubd.services.limits import SubmitLimits
from rsubd.services.limits import check as check_limits
from rsubd.services.prepare import RSUB_KEYS, Prepared, SubmitRefused, leave_in_queue, prepare
from rsubd.services.views import submitted_view
from rsubd.tokens import scoped
from rsubd.tokens.manager import Credential, TokenManager

# The tail of a cut-off submit's note while recovery asks the schedd (recovery rewords the note after).
ASKING = "; rsubd asks the schedd whether it made the cluster"
__all__ = ["RSUB_KEYS", "Prepared", "Submissions", "SubmitOrder", "SubmitRefused", "leave_in_queue", "prepare"]
log = structlog.get_logger("rsubd.services.submission")
# Failures after which the schedd may or may not have done what was asked.
UNKNOWN_OUTCOME = (ErrorKind.TIMEOUT, ErrorKind.OTHER)


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
            moved = (order.description, order.cwd) if order.cwd != existing["submit_dir"] else None
            self.ledger.restart_submit(row, tag=prepared.tag, submitted_description=prepared.request.text,
                                       moved_to=moved)
        else:
            crashpoint("submit.before_intent")
            row = self.ledger.add_submit_intent(
                request_id=order.request_id, schedd=name, tag=prepared.tag, description=order.description,
                submitted_description=prepared.request.text, submit_dir=order.cwd, submit_file=order.submit_file,
                token_profile=profile,
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
