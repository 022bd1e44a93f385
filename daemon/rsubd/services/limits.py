"""A schedd's submission limits, met before anything is sent: a submit that would pass one is refused.

A real schedd refuses a submit of more than MAX_JOBS_PER_SUBMISSION jobs (20,000 by
default), and one that would take its owner past MAX_JOBS_PER_OWNER jobs in the queue
(100,000), with "Number of submitted jobs would exceed MAX_JOBS_PER_SUBMISSION" (or
_OWNER). rsub refuses such a submit itself, before the ledger records an intent,
naming the limit. It does not split it into several clusters: each cluster numbers
its procs from 0, so `$(Process)` (in arguments, output names) would repeat from one
cluster to the next and outputs would overwrite each other; and the schedd may accept
the first clusters and refuse the rest, leaving half a submit made.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsub.wire.vocabulary import ErrorCode, RequestError


@dataclass(frozen=True)
class SubmitLimits:
    """One schedd's limits, from its [[schedd]] table (max_jobs_per_submission, max_jobs_per_owner)."""

    per_submission: int = 20_000
    per_owner: int = 100_000


def check(name: str, limits: SubmitLimits, procs: int, queued: int) -> None:
    """Refuse (exit 5, nothing sent) a submit of `procs` jobs to schedd `name`, where rsub has `queued` jobs."""
    if procs > limits.per_submission:
        raise RequestError(ErrorCode.BAD_SUBMIT, (
            f"this submit makes {procs:,} jobs and schedd {name} takes at most {limits.per_submission:,} in one"
            f" submit (its MAX_JOBS_PER_SUBMISSION); nothing was sent. Split it into submits of at most"
            f" {limits.per_submission:,} jobs (each is a cluster numbering its procs from 0), or, if the"
            " schedd's admin raised the limit, set max_jobs_per_submission in its [[schedd]] table"))
    if queued + procs > limits.per_owner:
        raise RequestError(ErrorCode.BAD_SUBMIT, (
            f"schedd {name} holds at most {limits.per_owner:,} of your jobs (its MAX_JOBS_PER_OWNER); rsub has"
            f" {queued:,} there and this submit makes {procs:,}; nothing was sent. Wait for some to finish"
            " and leave the queue, or, if the schedd's admin raised the limit, set max_jobs_per_owner in its"
            " [[schedd]] table"))
