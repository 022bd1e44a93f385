"""Polling at scale against the embedded scheduler in fake mode: calls per poll, reconciliation, transactions."""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from rsub.wire.vocabulary import FINAL_STATES
from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import (
    Action,
    JobAd,
    JobSpec,
    JobStatus,
    state_of,
)
from rsubd.backends.wrappers import DelegatingSchedd
from rsubd.ledger.store import JobSelector, Ledger
from rsubd.polling.poller import Poller, PollReport
from rsubd.services.submission import prepare

Key = tuple[int, int]
CALLS = ("query", "history", "retrieve", "edit")


class Counting(DelegatingSchedd[LocalSchedd]):
    """The schedd boundary with every call counted and noted in order."""

    def __init__(self, inner: LocalSchedd) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.timeline: list[str] = []
        self.on_retrieve: list[Any] = []  # callbacks run after a retrieve, as a newer schedd would act

    def before_call(self, op: str) -> None:
        if op in CALLS:
            self._note(op)

    def _note(self, op: str) -> None:
        self.calls[op] += 1
        self.timeline.append(op)

    def retrieve(self, jobs: JobSpec) -> None:
        super().retrieve(jobs)
        for hook in self.on_retrieve:
            hook(jobs)

    def take(self) -> dict[str, int]:
        out = {op: self.calls[op] for op in CALLS}
        self.calls.clear()
        return out


@dataclass
class Scale:
    root: Path
    ledger: Ledger
    local: LocalSchedd
    schedd: Counting
    poller: Poller
    keys: list[Key] = field(default_factory=list)

    def submit(self, procs: int, *, max_age: int = 864000) -> int:
        work = self.root / "work"
        work.mkdir(exist_ok=True)
        (work / "job.sh").write_text("#!/bin/sh\necho hi\n")
        (work / "job.sh").chmod(0o755)
        text = f"executable = job.sh\narguments = $(Process)\nqueue {procs}\n"
        p = prepare(text, cwd=str(work), instance_id=self.ledger.instance_id, max_age_seconds=max_age)
        row = self.ledger.add_submit_intent(
            request_id=uuid.uuid4().hex, schedd="local", tag=p.tag, description=text,
            submitted_description=p.request.text, submit_dir=str(work), submit_file=None,
        )
        result = self.local.submit(p.request)
        self.ledger.record_submitted(row, result.cluster, list(zip(result.procs, p.iwds, strict=True)))
        self.local.spool(result)
        self.ledger.record_spooled(row)
        self.keys.extend((result.cluster, proc) for proc in result.procs)
        return result.cluster

    def poll(self) -> tuple[PollReport, dict[str, int]]:
        self.schedd.take()
        report = self.poller.poll_once()
        calls = self.schedd.take()
        assert calls["query"] == (0 if report.outcome == "idle" else 1)
        assert max(calls.values()) <= 1, calls
        assert self.disagreements() == []
        return report, calls

    def job(self, key: Key) -> dict[str, Any]:
        rows = self.ledger.jobs([JobSelector(key[0], key[1], "local")])
        assert len(rows) == 1
        return rows[0]

    def disagreements(self) -> list[str]:
        """The ledger and the schedd agree after every poll."""
        queue = {(ad["ClusterId"], ad["ProcId"]): ad for ad in self.local.query(
            f'RsubInstance == "{self.ledger.instance_id}"', ["ClusterId", "ProcId", "JobStatus", "HoldReasonCode",
                                                            "RETRIEVED"])}
        out = []
        for row in self.ledger.jobs(limit=100_000):
            ad = queue.get((row["cluster"], row["proc"]))
            if ad is None:
                if row["state"] not in FINAL_STATES:
                    out.append(f"{row['cluster']}.{row['proc']} gone but {row['state']}")
            elif ad.get("RETRIEVED") is True or row["state"] == "retrieved":
                if row["state"] != "retrieved" or state_of(ad) != "completed":
                    out.append(f"{row['cluster']}.{row['proc']} {state_of(ad)} retrieved={ad.get('RETRIEVED')} "
                               f"but {row['state']}")
            elif state_of(ad) != row["state"]:
                out.append(f"{row['cluster']}.{row['proc']} {state_of(ad)} but {row['state']}")
        return out


@pytest.fixture
def scale(tmp_path: Path) -> Iterator[Scale]:
    ledger = Ledger(tmp_path / "state" / "ledger.db")
    local = LocalSchedd("local", tmp_path / "schedd", autostart=False, execute="fake")
    schedd = Counting(local)
    try:
        yield Scale(tmp_path, ledger, local, schedd, Poller(ledger, schedd))  # type: ignore[arg-type]
    finally:
        local.close()
        ledger.close()


def ids(keys: Sequence[Key]) -> list[str]:
    return [f"{c}.{p}" for c, p in keys]


# -- calls per poll ----------------------------------------------------------------


@pytest.mark.parametrize(("jobs", "clusters"), [(10, 1), (10, 10), (1000, 1), (1000, 100), (3000, 1), (3000, 30)])
def test_calls_per_poll_whatever_the_number_of_jobs_and_clusters(scale: Scale, jobs: int, clusters: int) -> None:
    for _ in range(clusters):
        scale.submit(jobs // clusters)

    report, calls = scale.poll()  # spooling -> idle, every job
    assert calls == {"query": 1, "history": 0, "retrieve": 0, "edit": 0}
    assert (report.tracked, report.changed) == (jobs, jobs)

    report, calls = scale.poll()  # nothing happened
    assert calls == {"query": 1, "history": 0, "retrieve": 0, "edit": 0}
    assert report.changed == 0

    chosen = random.Random(jobs + clusters).sample(scale.keys, max(4, jobs // 10))
    done, running, held, removed = chosen[0::4], chosen[1::4], chosen[2::4], chosen[3::4]
    scale.local.fake_advance(ids(done), JobStatus.COMPLETED)
    scale.local.fake_advance(ids(running), JobStatus.RUNNING)
    scale.local.fake_advance(ids(held), JobStatus.HELD, hold_reason="over quota")
    scale.local.act(Action.REMOVE, ids(removed), reason="cleanup")
    per_poll = {"query": "poll_queries", "history": "poll_history_calls", "retrieve": "poll_retrieve_calls",
                "edit": "poll_edit_calls"}
    with structlog.testing.capture_logs() as logs:
        report, calls = scale.poll()
    assert calls == {"query": 1, "history": 1, "retrieve": 1, "edit": 0}  # the marks wait for the next poll
    assert (report.changed, report.vanished, report.retrieved, report.marked) == (
        len(chosen), len(removed), len(done), 0)
    poll_events = [e for e in logs if e["event"] == "poll"]
    assert len(poll_events) == 1
    assert {k: poll_events[0][name] for k, name in per_poll.items()} == calls
    assert {k: poll_events[0][k] for k in ("polls", "queries", "history_calls", "retrieve_calls", "edit_calls",
                                           "errors")} == {"polls": 3, "queries": 3, "history_calls": 1,
                                                          "retrieve_calls": 1, "edit_calls": 0, "errors": 0}
    assert {scale.job(k)["state"] for k in done} == {"retrieved"}
    assert {scale.job(k)["marked_at"] for k in done} == {None}
    assert {scale.job(k)["state"] for k in running} == {"running"}
    assert {scale.job(k)["hold_reason"] for k in held} == {"over quota"}
    assert {scale.job(k)["remove_reason"] for k in removed} == {"cleanup (by user " + scale.local._owner + ")"}

    with structlog.testing.capture_logs() as logs:
        report, calls = scale.poll()  # the query shows the output fetched: one edit marks them all
    assert calls == {"query": 1, "history": 0, "retrieve": 0, "edit": 1}
    assert (report.tracked, report.changed, report.retrieved, report.marked) == (
        jobs - len(removed), 0, 0, len(done))
    poll_events = [e for e in logs if e["event"] == "poll"]
    assert len(poll_events) == 1
    assert {k: poll_events[0][name] for k, name in per_poll.items()} == calls
    assert (poll_events[0]["edit_calls"], poll_events[0]["errors"]) == (1, 0)
    assert None not in {scale.job(k)["marked_at"] for k in done}

    report, calls = scale.poll()  # retrieved, marked and removed jobs are never asked about again
    assert calls == {"query": 1, "history": 0, "retrieve": 0, "edit": 0}
    assert report.tracked == jobs - len(done) - len(removed)


# -- reconciliation ------------------------------------------------------------------


def test_jobs_removed_outside_rsub_are_removed_with_the_reason(scale: Scale) -> None:
    cluster = scale.submit(20)
    scale.poll()
    gone = [(cluster, p) for p in (2, 3, 4, 11)]
    scale.local.fake_advance(ids(gone[:2]), JobStatus.RUNNING)
    scale.local.fake_advance(ids(gone[2:3]), JobStatus.HELD)
    scale.poll()
    result = scale.local.act(Action.REMOVE, ids(gone), reason="the admin needed the slots")
    assert result.success == 4
    report, calls = scale.poll()
    assert calls["history"] == 1 and report.vanished == 4
    for key in gone:
        row = scale.job(key)
        assert (row["state"], row["job_status"]) == ("removed", JobStatus.REMOVED)
        assert row["remove_reason"].startswith("the admin needed the slots")
        last = scale.ledger.events("local", *key)[-1]
        assert (last["to_state"], last["detail"]) == ("removed", row["remove_reason"])
    assert {r["state"] for r in scale.ledger.jobs()} == {"idle", "removed"}
    _, calls = scale.poll()
    assert calls == {"query": 1, "history": 0, "retrieve": 0, "edit": 0}


@pytest.mark.parametrize("drops", ["at once", "after the next query"])
def test_a_schedd_that_drops_jobs_once_their_output_is_fetched(scale: Scale, drops: str) -> None:
    """HTCondor >= 25.8 drops a spooled job from the queue once its output is fetched.

    At once: the next poll's query no longer sees the jobs, and history confirms
    they left. After the next query: that query still sees them (fetched), but the
    edit that would mark them finds no job: deferred, not an error, and the poll
    after that learns from history.
    """
    cluster = scale.submit(6)
    fetched = [(cluster, p) for p in range(3)]
    pending: list[JobSpec] = []

    def drop(jobs: JobSpec) -> None:
        scale.local.edit(jobs, "LeaveJobInQueue", "false")
        scale.local.tick()

    if drops == "at once":
        scale.schedd.on_retrieve.append(drop)
    else:
        scale.schedd.on_retrieve.append(pending.append)
        real_query = scale.schedd.query  # the poller's query, not the one that checks the ledger

        def query(constraint: str, projection: Sequence[str]) -> list[JobAd]:
            ads = real_query(constraint, projection)
            while pending:  # the schedd gets round to it just after answering the next query
                drop(pending.pop())
            return ads

        scale.schedd.query = query  # type: ignore[method-assign]

    scale.poll()
    scale.local.fake_advance(ids(fetched), JobStatus.COMPLETED)

    report, calls = scale.poll()  # retrieved; the mark waits for the next poll
    assert calls == {"query": 1, "history": 0, "retrieve": 1, "edit": 0}
    assert (report.retrieved, report.marked) == (3, 0)
    assert [scale.job(k)["state"] for k in fetched] == ["retrieved"] * 3
    assert [scale.job(k)["marked_at"] for k in fetched] == [None] * 3

    if drops == "after the next query":
        report, calls = scale.poll()  # the query sees them fetched; the edit finds no job
        assert calls == {"query": 1, "history": 0, "retrieve": 0, "edit": 1}
        assert report.marked == 0
        assert [scale.job(k)["marked_at"] for k in fetched] == [None] * 3

    report, calls = scale.poll()  # history confirms they left: nothing more to send
    assert calls == {"query": 1, "history": 1, "retrieve": 0, "edit": 0}
    assert report.vanished == 3
    assert scale.poller.stats.totals["errors"] == 0
    assert [scale.job(k)["state"] for k in fetched] == ["retrieved"] * 3
    assert all(scale.job(k)["marked_at"] is not None for k in fetched)
    assert all(scale.job(k)["retrieved_at"] is not None for k in fetched)
    _, calls = scale.poll()
    assert calls == {"query": 1, "history": 0, "retrieve": 0, "edit": 0}


def test_a_job_removed_between_the_query_and_the_retrieve_is_removed_and_never_marked(scale: Scale) -> None:
    """A schedd's retrieve passes quietly over a job that stopped being completed."""
    cluster = scale.submit(3)
    raced, other = (cluster, 0), (cluster, 1)
    scale.poll()
    scale.local.fake_advance(ids([raced, other]), JobStatus.COMPLETED)
    real_retrieve, real_edit = scale.local.retrieve, scale.local.edit
    edits: list[tuple[list[str], str, str]] = []

    def retrieve(jobs: JobSpec) -> None:
        # Someone removes the job after the query saw it completed, before the retrieve reaches it.
        assert scale.local.act(Action.REMOVE, ids([raced]), reason="changed my mind").success == 1
        real_retrieve(jobs)  # passes quietly over the removed job

    def edit(jobs: JobSpec, attr: str, value: str) -> int:
        edits.append((sorted(jobs) if isinstance(jobs, list) else jobs, attr, value))  # type: ignore[arg-type]
        return real_edit(jobs, attr, value)

    scale.local.retrieve, scale.local.edit = retrieve, edit  # type: ignore[method-assign]

    report, calls = scale.poll()
    assert calls == {"query": 1, "history": 0, "retrieve": 1, "edit": 0}
    assert report.retrieved == 2
    assert edits == []

    report, calls = scale.poll()
    assert calls["retrieve"] == 0 and calls["edit"] == 1
    row = scale.job(raced)
    assert (row["state"], row["error"]) == ("removed", "removed before its output could be retrieved")
    assert row["job_status"] == JobStatus.REMOVED
    assert row["retrieved_at"] is None and row["marked_at"] is None
    assert scale.ledger.events("local", *raced)[-1]["to_state"] == "removed"
    # Only the job whose output came home is marked.
    assert edits == [([f"{other[0]}.{other[1]}"], "RETRIEVED", "true")]
    done = scale.job(other)
    assert (done["state"], done["error"]) == ("retrieved", None) and done["marked_at"] is not None

    _, calls = scale.poll()  # neither is asked about again, and the removed one is never marked
    assert calls == {"query": 1, "history": 0, "retrieve": 0, "edit": 0}
    assert [e for e in edits if f"{raced[0]}.{raced[1]}" in e[0]] == []
    assert scale.job(raced)["marked_at"] is None


def test_vanished_jobs_learn_their_fate_from_one_history_call(scale: Scale) -> None:
    cluster = scale.submit(8)
    old = scale.submit(2, max_age=0)  # leave_in_queue lets these go as soon as they complete
    scale.poll()
    key = {name: (cluster, p) for p, name in enumerate(
        ["fetched_elsewhere", "marked_elsewhere", "removed", "kept"])}
    # Someone fetched the output (condor_transfer_data), and the schedd let the job go.
    scale.local.fake_advance(ids([key["fetched_elsewhere"]]), JobStatus.COMPLETED)
    scale.local.retrieve(ids([key["fetched_elsewhere"]]))
    scale.local.edit(ids([key["fetched_elsewhere"]]), "LeaveJobInQueue", "false")
    # Someone marked it retrieved without fetching: the output went with the job.
    scale.local.fake_advance(ids([key["marked_elsewhere"]]), JobStatus.COMPLETED)
    scale.local.edit(ids([key["marked_elsewhere"]]), "RETRIEVED", "true")
    scale.local.act(Action.REMOVE, ids([key["removed"]]), reason="not needed")
    scale.local.fake_advance(ids([(old, 0), (old, 1)]), JobStatus.COMPLETED)
    scale.local.tick()

    report, calls = scale.poll()
    assert calls == {"query": 1, "history": 1, "retrieve": 0, "edit": 0}
    assert report.vanished == 5
    fetched = scale.job(key["fetched_elsewhere"])
    assert (fetched["state"], fetched["error"]) == ("retrieved", None)
    assert fetched["retrieved_at"] is not None and fetched["marked_at"] is not None
    marked = scale.job(key["marked_elsewhere"])
    assert marked["state"] == "failed" and "output is lost" in marked["error"]
    assert scale.job(key["removed"])["state"] == "removed"
    for p in (0, 1):
        row = scale.job((old, p))
        assert (row["state"], row["error"]) == ("failed", "the job left the queue before rsub could retrieve its output")
    assert scale.job(key["kept"])["state"] == "idle"


# -- the ledger's side of a poll -----------------------------------------------------


def statements(ledger: Ledger) -> list[str]:
    seen: list[str] = []
    ledger._conn.set_trace_callback(seen.append)
    return seen


def test_a_poll_writes_its_news_in_one_transaction_touching_only_changed_rows(scale: Scale) -> None:
    for _ in range(4):
        scale.submit(250)
    scale.poll()
    before = {(r["cluster"], r["proc"]): r["updated_at"] for r in scale.ledger.jobs(limit=100_000)}
    moved = random.Random(3).sample(scale.keys, 25)
    scale.local.fake_advance(ids(moved[:20]), JobStatus.RUNNING)
    scale.local.fake_advance(ids(moved[20:]), JobStatus.HELD)
    seen = statements(scale.ledger)
    changes = scale.ledger._conn.total_changes
    report, _ = scale.poll()
    scale.ledger._conn.set_trace_callback(None)
    assert report.changed == 25
    writes = [s for s in seen if s.startswith(("BEGIN", "UPDATE", "INSERT", "DELETE", "COMMIT"))]
    assert sum(s.startswith("BEGIN") for s in writes) == 1
    # Distinct statements: the trace repeats a statement's text for each step of the triggers it fires.
    assert len({s for s in writes if s.startswith("UPDATE jobs")}) == 25
    # 25 rows updated and 25 events, and each state change's two counts in job_counts: nothing else was touched.
    assert scale.ledger._conn.total_changes - changes == 50 + 2 * 25
    after = {(r["cluster"], r["proc"]): r["updated_at"] for r in scale.ledger.jobs(limit=100_000)}
    assert {k for k in after if after[k] != before[k]} == set(moved)


def test_output_is_home_before_the_ledger_says_so_and_the_mark_comes_last(scale: Scale, tmp_path: Path) -> None:
    cluster = scale.submit(3)
    scale.poll()
    scale.local.fake_advance(ids([(cluster, 0), (cluster, 1)]), JobStatus.COMPLETED)
    reader = sqlite3.connect(f"file:{scale.ledger.path}?mode=ro", uri=True)
    committed: dict[str, list[str]] = {}

    def states() -> list[str]:
        return [s for (s,) in reader.execute("SELECT state FROM jobs WHERE cluster = ? AND proc < 2 ORDER BY proc",
                                             (cluster,))]

    real_retrieve, real_edit = scale.local.retrieve, scale.local.edit

    def retrieve(jobs: JobSpec) -> None:
        committed["at retrieve"] = states()
        real_retrieve(jobs)
        committed["after retrieve"] = states()  # the output is home; the ledger has not said so yet

    def edit(jobs: JobSpec, attr: str, value: str) -> int:
        committed["at edit"] = states()
        return real_edit(jobs, attr, value)

    scale.local.retrieve, scale.local.edit = retrieve, edit  # type: ignore[method-assign]
    seen = statements(scale.ledger)
    scale.schedd.timeline.clear()
    scale.poll()  # the retrieve, recorded once the output is home; no mark yet
    assert committed == {"at retrieve": ["completed"] * 2, "after retrieve": ["completed"] * 2}
    assert states() == ["retrieved"] * 2
    assert scale.schedd.timeline == ["query", "retrieve"]
    assert sum(s.startswith("BEGIN") for s in seen) == 2  # the news, the retrieve
    seen.clear()
    scale.schedd.timeline.clear()
    scale.poll()  # the mark, in the next poll, once the ledger durably says retrieved
    reader.close()
    assert committed["at edit"] == ["retrieved"] * 2
    assert scale.schedd.timeline == ["query", "edit"]
    assert sum(s.startswith("BEGIN") for s in seen) == 1  # the mark


def test_a_failing_history_call_does_not_hold_back_the_rest_of_the_poll(
    scale: Scale, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rsubd.backends.schedd import ErrorKind, ScheddError

    cluster = scale.submit(6)
    scale.poll()
    scale.local.act(Action.REMOVE, [f"{cluster}.0"], reason="elsewhere")
    scale.local.fake_advance([f"{cluster}.1"], JobStatus.COMPLETED)
    scale.local.fake_advance([f"{cluster}.2"], JobStatus.RUNNING)

    def history(*args: Any, **kwargs: Any) -> list[JobAd]:
        raise ScheddError(ErrorKind.TIMEOUT, "history timed out")

    monkeypatch.setattr(scale.local, "history", history)
    report = scale.poller.poll_once()
    assert report.outcome == "ok" and scale.poller.stats.totals["errors"] == 1
    assert scale.job((cluster, 1))["state"] == "retrieved"
    assert scale.job((cluster, 2))["state"] == "running"
    assert scale.job((cluster, 0))["state"] == "idle"  # not known yet: asked again next poll
    monkeypatch.undo()
    scale.poll()
    assert scale.job((cluster, 0))["state"] == "removed"


def test_many_jobs_missing_everywhere_make_one_event(scale: Scale) -> None:
    row = scale.ledger.add_submit_intent(
        request_id="lost", schedd="local", tag="t", description="queue\n", submitted_description="queue\n",
        submit_dir=str(scale.root), submit_file=None,
    )
    scale.ledger.record_submitted(row, 777, [(p, str(scale.root)) for p in range(500)])
    with structlog.testing.capture_logs() as logs:
        scale.poller.poll_once()
    events = [e for e in logs if e["event"] in ("job.vanished", "jobs.vanished")]
    assert [(e["event"], e["count"], len(e["first"])) for e in events] == [("jobs.vanished", 500, 20)]
