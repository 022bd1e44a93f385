"""What the ledger learns from a schedd's ads: a queue ad's view of a job, and history's last word on it.

The job state itself comes from `backends.schedd.status_state`, the one derivation of
rsub's state from HTCondor's JobStatus; these functions add the fields around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rsubd.backends.schedd import AdValue, JobStatus, state_of, status_state
from rsubd.ledger.store import TrackedJob

# What a queue ad says, the fields of a TrackedJob from state to completed_at; the rest is rsub's own.
OBSERVED = TrackedJob._fields[2:TrackedJob._fields.index("marked_at")]
OBSERVED_END = 2 + len(OBSERVED)  # a TrackedJob's observed fields are job[2:OBSERVED_END]
_HELD, _REMOVED, _COMPLETED = int(JobStatus.HELD), int(JobStatus.REMOVED), int(JobStatus.COMPLETED)
# An exit code or signal means something only in the ad of a completed job: a real schedd keeps
# ExitBySignal/ExitSignal from a hold's eviction (SIGTERM) while the released job runs again, and
# after its removal.


# The ad attribute of each ledger column of what a job used (ledger.schema.USAGE_FIELDS), in HTCondor's
# units: seconds (RemoteWallClockTime, the CPU times), MB (MemoryUsage, RequestMemory), KiB
# (ResidentSetSize, DiskUsage, RequestDisk), and JobCurrentStartDate, when its current run began.
USAGE = {"RemoteWallClockTime": "wall_time", "RemoteUserCpu": "user_cpu", "RemoteSysCpu": "sys_cpu",
         "MemoryUsage": "memory_mb", "ResidentSetSize": "rss_kb", "DiskUsage": "disk_kb", "NumJobStarts": "job_starts",
         "NumShadowStarts": "shadow_starts", "RequestMemory": "request_memory", "RequestDisk": "request_disk",
         "RequestCpus": "request_cpus", "JobCurrentStartDate": "run_start"}
_INTEGRAL = {"memory_mb", "rss_kb", "disk_kb", "job_starts", "shadow_starts", "request_memory", "request_disk",
             "request_cpus"}

_USAGE_PLAN = tuple((attr, column, column in _INTEGRAL) for attr, column in USAGE.items())


def usage_of(ad: Mapping[str, AdValue]) -> dict[str, Any]:
    """The usage columns an ad gives a value for (a number; an expression's text or undefined is left out).

    Read only for a job whose state changes, so a poll of 100,000 unchanged jobs pays nothing for it.
    """
    out: dict[str, Any] = {}
    get = ad.get
    for attr, column, integral in _USAGE_PLAN:
        value = get(attr)
        if isinstance(value, (int, float)) and value.__class__ is not bool:
            out[column] = int(value) if integral else float(value)
    return out


def fields_from_ad(ad: Mapping[str, AdValue]) -> dict[str, Any]:
    """The ledger's view of a queue or history ad."""
    state = state_of(ad)
    held = ad.get("JobStatus") == JobStatus.HELD
    completed = ad.get("JobStatus") == JobStatus.COMPLETED
    fields: dict[str, Any] = {
        "state": state,
        "job_status": ad.get("JobStatus"),
        "hold_reason": ad.get("HoldReason") if held else None,
        "hold_code": ad.get("HoldReasonCode") if held else None,
        "exit_code": ad.get("ExitCode") if completed and isinstance(ad.get("ExitCode"), int) else None,
        "exit_signal": ad.get("ExitSignal") if completed and ad.get("ExitBySignal") is True else None,
    }
    if ad.get("JobStatus") == JobStatus.REMOVED:
        fields["remove_reason"] = ad.get("RemoveReason")
    completion = ad.get("CompletionDate")
    if isinstance(completion, (int, float)) and completion > 0:
        fields["completed_at"] = float(completion)
    fields.update(usage_of(ad))
    return fields


def observe(ad: Mapping[str, AdValue], row: TrackedJob) -> tuple[Any, ...]:
    """`fields_from_ad` as a tuple in OBSERVED order, keeping the row's value where the ad is silent.

    The hot loop of a poll: it runs once per queued job, so it reads the ad
    directly instead of building a dict.
    """
    status = ad.get("JobStatus")
    held = status == _HELD
    hold_code = ad.get("HoldReasonCode") if held else None
    exit_code = ad.get("ExitCode")
    completion = ad.get("CompletionDate")
    return (
        status_state(status, hold_code),
        status,
        ad.get("HoldReason") if held else None,
        hold_code,
        exit_code if status == _COMPLETED and isinstance(exit_code, int) else None,
        ad.get("ExitSignal") if status == _COMPLETED and ad.get("ExitBySignal") is True else None,
        ad.get("RemoveReason") if status == _REMOVED else row.remove_reason,
        float(completion) if isinstance(completion, (int, float)) and completion > 0 else row.completed_at,
    )


# A JobStatus that says nothing beside itself (no hold, exit or removal), and the state it gives.
_QUIET = {int(code): status_state(int(code), None) for code in JobStatus if code not in (_HELD, _REMOVED, _COMPLETED)}
_NONE4 = (None, None, None, None)


def quiet(ad: Mapping[str, AdValue], row: TrackedJob) -> bool:
    """Whether `observe(ad, row)` is the row's own view, told from two of the ad's values.

    True only where that is certain: the same plain JobStatus (idle, running, ...), the row
    has no hold, exit code or signal, and the ad no new CompletionDate. Most of a poll's
    100,000 ads are so; `observe` builds the view of the rest.
    """
    status = ad.get("JobStatus")
    if status != row[3] or status.__class__ is not int or _QUIET.get(status) != row[2] or row[4:8] != _NONE4:
        return False
    completion = ad.get("CompletionDate")
    return completion is None or completion == 0 or completion == row[9]


def diff(row: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that change; a field the row does not carry (retrieved_at) is always written."""
    return {k: v for k, v in fields.items() if k not in row or row[k] != v}


def fate(ad: Mapping[str, AdValue], row: TrackedJob, now: float) -> dict[str, Any]:
    """The ledger's final word on a job from its history record."""
    status = ad.get("JobStatus")
    if row.state == "retrieved":
        if row.marked_at is None and status != JobStatus.COMPLETED and not ad.get("StageOutFinish"):
            # Removed between a poll's query and its retrieve, which passed quietly over it.
            return {**fields_from_ad(ad), "retrieved_at": None,
                    "error": "removed before its output could be retrieved"}
        # rsub has its output; the job left because the mark landed, or because a 25.8+
        # schedd drops a spooled job once its output is fetched (the edit then found no job).
        return {"marked_at": row.marked_at or now}
    if status == JobStatus.COMPLETED and ad.get("StageOutFinish"):
        # The output was fetched from the spool, and a fetch writes it into the job's
        # submit-time Iwd, which is where rsub would have put it: by rsub's own retrieve
        # before a restart (on 25.8+ the schedd dropped the job at once, so the ledger
        # never heard), or by condor_transfer_data. Either way the output is home.
        return {**fields_from_ad(ad), "state": "retrieved", "error": None,
                "retrieved_at": float(ad["StageOutFinish"]),  # type: ignore[arg-type]  # a time, when set
                "marked_at": now}
    if status == JobStatus.COMPLETED and ad.get("RETRIEVED") is True:
        # Marked retrieved by someone else without a fetch: the schedd let the job go
        # and deleted its spool, so the output is gone.
        return {**fields_from_ad(ad), "state": "failed", "error": "the job was marked RETRIEVED outside rsub"
                " before its output was fetched; the output is lost"}
    if status == JobStatus.COMPLETED:
        # leave_in_queue let it go unretrieved (its age limit passed): the output is gone.
        return {**fields_from_ad(ad), "state": "failed",
                "error": "the job left the queue before rsub could retrieve its output"}
    if status == JobStatus.REMOVED:
        return fields_from_ad(ad)  # removed by someone else: state removed, with their reason
    # A job leaves the queue only completed or removed; anything else is final all the same.
    return {**fields_from_ad(ad), "state": "failed",
            "error": f"the job left the queue without completing (JobStatus {status})"}
