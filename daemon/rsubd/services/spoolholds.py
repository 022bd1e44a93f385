"""A hold asked for while the schedd still holds a job for spooling: kept, and sent again once spooled.

Between submit and the end of spooling a schedd holds each job with code 16. A hold then is
"already done" to the schedd, which releases the job as soon as its input is in: the user's
hold would be lost and the job would run. So the act handler asks which of the jobs it could
not hold are held for spooling (`keep_intent`), and the ledger keeps the user's hold of those
(`pending_holds`, durable across a restart). Each poll reads the pending holds of its schedd;
when the poll's own query shows one job's spool hold over, `settle` holds it with the user's
reason. A job that finished or left the queue meanwhile drops its pending hold; one held for
another reason already has what the user asked. A release asked for before the hold is sent
is the user's last word: it drops the pending hold (`cancel_intent`), and the job runs once
spooled. One lock per schedd orders that drop against the poll sending the hold, so a hold
never lands after the release that should have cancelled it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence

import structlog

from rsubd.backends.schedd import (
    Action,
    HoldCode,
    JobAd,
    JobSpec,
    JobStatus,
    Schedd,
    ScheddError,
    ids_constraint,
    job_id,
)
from rsubd.ledger.store import Ledger

log = structlog.get_logger("rsubd.services.spoolholds")
Key = tuple[int, int]
Change = tuple[int, int, dict[str, object]]
SPOOL_PROJECTION = ("ClusterId", "ProcId", "JobStatus", "HoldReasonCode")
# Seconds after a hold that found jobs spooling before a poll looks again: a real schedd releases a
# spooled job about a second after its input is in, the embedded scheduler after SPOOL_RELEASE_SECONDS.
LOOK_AGAIN_AFTER = 2.0


_GUARDS: dict[str, threading.Lock] = {}
_GUARDS_LOCK = threading.Lock()


def guard(name: str) -> threading.Lock:
    """The lock that orders one schedd's pending holds: kept, cancelled by a release, or sent by a poll."""
    with _GUARDS_LOCK:
        return _GUARDS.setdefault(name, threading.Lock())


def spooling(ad: Mapping[str, object]) -> bool:
    return ad.get("JobStatus") == JobStatus.HELD and ad.get("HoldReasonCode") == HoldCode.SPOOLING_INPUT


def keep_intent(schedd: Schedd, ledger: Ledger, name: str, spec: JobSpec, reason: str,
                *, clock: Callable[[], float] = time.time) -> list[str]:
    """After a hold: record it for the jobs of `spec` the schedd still holds for spooling; their ids.

    One projected query of the jobs just named (only when the schedd said some were already
    held). A failed query keeps nothing and says so in the log: the hold itself was sent.
    """
    try:
        ads = schedd.query(spec if isinstance(spec, str) else _ids_constraint(spec), SPOOL_PROJECTION)
    except ScheddError as e:
        log.warning("hold.spooling_unknown", schedd=name, error=str(e))
        return []
    keys = sorted((int(str(a["ClusterId"])), int(str(a["ProcId"]))) for a in ads if spooling(a))
    if keys:
        with guard(name):
            ledger.add_pending_holds(name, keys, reason, clock())
        log.info("hold.pending_spool", schedd=name, jobs=len(keys), first=job_id(*keys[0]))
    return [job_id(*k) for k in keys]


def cancel_intent(schedd: Schedd, ledger: Ledger, name: str, spec: JobSpec) -> dict[Key, tuple[str, float]]:
    """Before a release: drop the holds kept for the jobs of `spec`; what was dropped (almost always nothing).

    Called before the release is sent, so that a poll cannot send the kept hold after it. Jobs named by
    id need no query; a constraint is asked of the schedd (projected) only when some hold is pending,
    and a failed query raises (ScheddError): the release is then not sent either. `restore_intent`
    puts the holds back if the release fails.
    """
    if not ledger.pending_hold_count(name):
        return {}
    if isinstance(spec, str):
        named = {(int(str(a["ClusterId"])), int(str(a["ProcId"]))) for a in schedd.query(spec, SPOOL_PROJECTION)}
    else:
        named = {(int(c), int(p)) for c, _, p in (i.partition(".") for i in spec)}
    with guard(name):
        pending = ledger.pending_holds(name)
        dropped = {k: pending[k] for k in sorted(named & pending.keys())}
        if dropped:
            ledger.drop_pending_holds(name, list(dropped))
    if dropped:
        log.info("hold.pending_cancelled", schedd=name, jobs=len(dropped), first=job_id(*next(iter(dropped))))
    return dropped


def restore_intent(ledger: Ledger, name: str, dropped: Mapping[Key, tuple[str, float]]) -> None:
    """The release that dropped these kept holds failed: keep them again, as they were."""
    by_ask: dict[tuple[str, float], list[Key]] = {}
    for key, ask in dropped.items():
        by_ask.setdefault(ask, []).append(key)
    with guard(name):
        for (reason, at), keys in by_ask.items():
            ledger.add_pending_holds(name, keys, reason, at)
    log.info("hold.pending_restored", schedd=name, jobs=len(dropped))


def _ids_constraint(ids: Sequence[str]) -> str:
    return ids_constraint([(int(c), int(p)) for c, _, p in (i.partition(".") for i in ids)])


class SpoolHolds:
    """The poll's side: the pending holds of one schedd, settled from the poll's own query."""

    def __init__(self, ledger: Ledger, schedd: Schedd) -> None:
        self.ledger = ledger
        self.schedd = schedd
        self.applied = 0  # holds sent once spooling ended, for `rsub daemon status`

    def pending(self) -> dict[Key, tuple[str, float]]:
        return self.ledger.pending_holds(self.schedd.name)

    def settle(self, pending: Mapping[Key, tuple[str, float]], ads: Mapping[Key, JobAd]) -> list[Change]:
        """Hold the pending jobs whose spool hold is over (one act per reason); drop what is settled.

        Returns the ledger changes of the jobs held (the schedd said success): held by the user,
        as the next poll will also see them.
        """
        with guard(self.schedd.name):  # a release cancelling one of these waits until the holds are sent
            return self._settle(self.ledger.pending_holds(self.schedd.name).keys() & pending.keys(), pending, ads)

    def _settle(self, still: set[Key], pending: Mapping[Key, tuple[str, float]],
                ads: Mapping[Key, JobAd]) -> list[Change]:
        by_reason: dict[str, list[Key]] = {}
        settled: list[Key] = []
        for key, (reason, _) in pending.items():
            if key not in still:  # cancelled by a release since the poll read it
                continue
            ad = ads.get(key)
            if ad is not None and spooling(ad):
                continue  # still spooling: looked at again next poll
            settled.append(key)
            if ad is not None and ad.get("JobStatus") in (JobStatus.IDLE, JobStatus.RUNNING):
                by_reason.setdefault(reason, []).append(key)
            else:  # gone, finished or held by now: nothing left to hold
                log.info("hold.pending_dropped", schedd=self.schedd.name, job=job_id(*key),
                         status=None if ad is None else ad.get("JobStatus"))
        held: list[Change] = []
        for reason, keys in by_reason.items():
            try:
                result = self.schedd.act(Action.HOLD, [job_id(*k) for k in keys], reason)
            except ScheddError as e:
                log.warning("hold.after_spool_failed", schedd=self.schedd.name, jobs=len(keys), error=str(e))
                settled = [k for k in settled if k not in set(keys)]  # tried again next poll
                continue
            if result.success == len(keys):  # else the next poll learns which
                held.extend((c, p, {"state": "held", "job_status": int(JobStatus.HELD), "hold_reason": reason,
                                    "hold_code": int(HoldCode.USER_REQUEST)}) for c, p in keys)
            log.info("hold.after_spool", schedd=self.schedd.name, jobs=len(keys), held=result.success,
                     first=job_id(*keys[0]))
        if settled:
            self.ledger.drop_pending_holds(self.schedd.name, settled)
        self.applied += len(held)
        return held
