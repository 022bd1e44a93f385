"""Fake execution for the embedded scheduler: what a job's ad becomes when a bench or test moves it.

In fake mode nothing runs; `LocalSchedd.fake_advance` applies these attributes
at once, the same ones a real run would leave (a completed job has its exit
code, CompletionDate and an empty SpooledOutputFiles: there is nothing to fetch).
"""

from __future__ import annotations

from typing import Any

from rsubd.backends.schedd import HoldCode, JobStatus


def advance(status: JobStatus, *, now: int, last: int, starts: int, exit_code: int, hold_reason: str) -> dict[str, Any]:
    """The attributes of a job moved from JobStatus `last` to `status` at `now`."""
    common: dict[str, Any] = {"JobStatus": int(status), "LastJobStatus": last, "EnteredCurrentStatus": now}
    if status is JobStatus.RUNNING:
        return {**common, "JobCurrentStartDate": now, "JobStartDate": now, "NumJobStarts": starts + 1,
                "RemoteHost": "slot1@localhost"}
    if status is JobStatus.COMPLETED:
        return {**common, "CompletionDate": now, "ExitCode": exit_code, "ExitBySignal": False,
                "ExitReason": "Exited normally", "NumJobStarts": max(starts, 1), "NumJobCompletions": 1,
                "TerminationPending": True, "SpooledOutputFiles": "", "RemoteHost": None}
    if status is JobStatus.HELD:
        return {**common, "HoldReason": hold_reason, "HoldReasonCode": int(HoldCode.JOB_POLICY),
                "HoldReasonSubCode": 0, "RemoteHost": None}
    if status is JobStatus.IDLE:
        return {**common, "RemoteHost": None}
    raise ValueError(f"fake execution cannot make jobs {status.name}; use act() to remove them")
