"""What the benchmarks share: datasets of fake jobs, a call-counting schedd, the ledger-vs-schedd check.

A dataset is an rsubd state directory (`ledger.db` and the embedded scheduler's
queue under `local/local/`) holding N jobs in K clusters, all idle on a
LocalSchedd in fake-execution mode, and a ledger that agrees with it. Building
100,000 jobs takes a while, so it is built once and copied for each use.
"""

from __future__ import annotations

import inspect
import json
import logging
import random
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from bench.light import JOB_SH, description, workdir
from rsub.wire.vocabulary import FINAL_STATES
from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import Action, JobStatus, Schedd, state_of
from rsubd.backends.wrappers import DelegatingSchedd
from rsubd.ledger.store import Ledger
from rsubd.polling.poller import Poller
from rsubd.services.submission import prepare

__all__ = ["JOB_SH", "description", "workdir"]  # the jobs' files, from bench.light; the rest below

SCHEDD = "local"
Key = tuple[int, int]


def quiet() -> None:
    """Only warnings from structlog: a bench prints its own figures, not the daemon's events."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def emit(figures: dict[str, Any]) -> None:
    json.dump(figures, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def schedd_root(state: Path) -> Path:
    """Where rsubd's app puts the embedded scheduler named "local" under its state_dir."""
    return state / "local" / SCHEDD


def open_schedd(state: Path, **kwargs: Any) -> LocalSchedd:
    # A dataset of 100,000 jobs in one cluster is past a schedd's MAX_JOBS_PER_SUBMISSION: the benches
    # measure the poll's side, not the limits (tests/unit/test_submit_limits.py does).
    if "max_jobs_per_owner" in inspect.signature(LocalSchedd).parameters:  # not in an older rsubd (before/after runs)
        kwargs.setdefault("max_jobs_per_submission", 10**9)
        kwargs.setdefault("max_jobs_per_owner", 10**9)
    return LocalSchedd(SCHEDD, schedd_root(state), execute="fake", autostart=False, **kwargs)


def split(jobs: int, clusters: int) -> list[int]:
    """Proc counts of `clusters` clusters holding `jobs` jobs between them."""
    clusters = max(1, min(clusters, jobs))
    base, extra = divmod(jobs, clusters)
    return [base + (1 if i < extra else 0) for i in range(clusters)]


def build(state: Path, jobs: int, clusters: int) -> dict[str, Any]:
    """A dataset in `state`: the jobs submitted, spooled, recorded, and one poll to agree."""
    quiet()
    started = time.perf_counter()
    work = workdir(state.parent)
    ledger = Ledger(state / "ledger.db")
    # Setup only, not measured: a commit per cluster need not wait for the disk here.
    ledger._conn.execute("PRAGMA synchronous=OFF")
    schedd = open_schedd(state)
    try:
        prepared: dict[int, Any] = {}
        for procs in split(jobs, clusters):
            if procs not in prepared:
                prepared[procs] = prepare(description(procs), cwd=str(work), instance_id=ledger.instance_id,
                                          max_age_seconds=864000)
            p = prepared[procs]
            row = ledger.add_submit_intent(
                request_id=uuid.uuid4().hex, schedd=SCHEDD, tag=p.tag, description=description(procs),
                submitted_description=p.request.text, submit_dir=str(work), submit_file=None,
            )
            result = schedd.submit(p.request)
            ledger.record_submitted(row, result.cluster, list(zip(result.procs, p.iwds, strict=False)))
            schedd.spool(result)
            ledger.record_spooled(row)
        Poller(ledger, schedd).poll_once()  # spooling -> idle, so the ledger agrees with the queue
        ledger._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        schedd.close()
        ledger.close()
    return {"jobs": jobs, "clusters": len(split(jobs, clusters)),
            "build_seconds": round(time.perf_counter() - started, 2)}


def copy(src: Path, dest: Path) -> None:
    """A private copy of a dataset (its work directory beside it, for the jobs' Iwd)."""
    shutil.copytree(src, dest, symlinks=True)
    work_src, work_dest = src.parent / "work", dest.parent / "work"
    if not work_dest.exists():
        shutil.copytree(work_src, work_dest)


def dataset(cache: Path, jobs: int, clusters: int) -> Path:
    """The state directory of a dataset of this size, built on first use under `cache`."""
    state = cache / f"jobs{jobs}-clusters{clusters}" / "state"
    if not (state / "ready").exists():
        shutil.rmtree(state.parent, ignore_errors=True)
        state.mkdir(parents=True)
        (state / "ready").write_text(json.dumps(build(state, jobs, clusters)))
    return state


def ids(keys: Sequence[Key]) -> list[str]:
    return [f"{c}.{p}" for c, p in keys]


def change_some(schedd: LocalSchedd, keys: Sequence[Key], fraction: float, seed: int = 1) -> dict[str, int]:
    """Change the state of `fraction` of the jobs: half complete, a fifth start, a tenth are held,
    a fifth are removed by someone else (so they leave the queue and need history)."""
    chosen = random.Random(seed).sample(list(keys), round(len(keys) * fraction))
    n = len(chosen)
    cuts = [0, n // 2, n // 2 + n // 5, n // 2 + n // 5 + n // 10, n]
    names = ("completed", "running", "held", "removed")
    groups = {name: chosen[a:b] for name, a, b in zip(names, cuts, cuts[1:], strict=False)}
    if groups["completed"]:
        schedd.fake_advance(ids(groups["completed"]), JobStatus.COMPLETED)
    if groups["running"]:
        schedd.fake_advance(ids(groups["running"]), JobStatus.RUNNING)
    if groups["held"]:
        schedd.fake_advance(ids(groups["held"]), JobStatus.HELD, hold_reason="held by the benchmark")
    if groups["removed"]:
        schedd.act(Action.REMOVE, ids(groups["removed"]), reason="removed by the benchmark")
    return {name: len(group) for name, group in groups.items()}


class CountingSchedd(DelegatingSchedd[Schedd]):
    """A Schedd that counts the calls made to it, by operation."""

    def __init__(self, inner: Schedd) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()

    def before_call(self, op: str) -> None:
        self.calls[op] += 1

    def take(self) -> dict[str, int]:
        """The counts since the last take, every operation named."""
        out = {op: self.calls[op] for op in ("query", "history", "retrieve", "edit", "act", "submit", "spool")}
        self.calls.clear()
        return out


def disagreements(ledger: Ledger, schedd: LocalSchedd, instance: str) -> list[str]:
    """Where the ledger and the schedd disagree about rsub's jobs; empty after every poll."""
    queue = {(ad["ClusterId"], ad["ProcId"]): ad for ad in schedd.query(
        f'RsubInstance == "{instance}"', ["ClusterId", "ProcId", "JobStatus", "HoldReasonCode", "RETRIEVED"])}
    out: list[str] = []
    offset = 0
    while True:
        rows = ledger.jobs(limit=10000, offset=offset)
        if not rows:
            return out
        offset += len(rows)
        for row in rows:
            key = (row["cluster"], row["proc"])
            ad = queue.get(key)
            state = row["state"]
            if ad is None:
                if state not in FINAL_STATES:
                    out.append(f"{key}: gone from the queue but {state} in the ledger")
            elif ad.get("RETRIEVED") is True:
                if state != "retrieved":
                    out.append(f"{key}: marked retrieved on the schedd but {state} in the ledger")
            elif state_of(ad) != state and not (state == "retrieved" and state_of(ad) == "completed"):
                out.append(f"{key}: {state_of(ad)} on the schedd, {state} in the ledger")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value
