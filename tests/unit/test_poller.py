"""Unit tests for rsubd.polling.poller against the real embedded scheduler, driven by `tick()`."""

from __future__ import annotations

import io
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import Action, ErrorKind, JobStatus, ScheddError, SubmitResult
from rsubd.ledger.store import JobSelector, Ledger
from rsubd.platform import logs as rsubd_logs
from rsubd.polling.poller import Poller, PollReport
from rsubd.services.submission import Prepared, prepare

DEADLINE = 20.0
MAX_AGE = 864000

JOB_SH = """#!/bin/sh
echo "hello $1"
echo "oops $1" >&2
echo "result $1" > "result_$1.txt"
"""
SLEEP_SH = "#!/bin/sh\nexec sleep 60\n"


@dataclass
class Env:
    root: Path
    ledger: Ledger
    schedd: LocalSchedd
    poller: Poller

    def job_dir(self, name: str, script: str = JOB_SH) -> Path:
        d = self.root / "jobs" / name
        d.mkdir(parents=True)
        (d / "job.sh").write_text(script)
        (d / "job.sh").chmod(0o755)
        return d

    def submit(self, cwd: Path, text: str, *, max_age: int = MAX_AGE) -> tuple[SubmitResult, Prepared]:
        """What the submit handler does: prepare, intent, submit, record, spool."""
        prepared = prepare(text, cwd=str(cwd), instance_id=self.ledger.instance_id, max_age_seconds=max_age)
        row = self.ledger.add_submit_intent(
            request_id=uuid.uuid4().hex, schedd=self.schedd.name, tag=prepared.tag, description=text,
            submitted_description=prepared.request.text, submit_dir=str(cwd), submit_file=None,
        )
        result = self.schedd.submit(prepared.request)
        self.ledger.record_submitted(row, result.cluster, list(zip(result.procs, prepared.iwds, strict=True)))
        self.schedd.spool(result)
        self.ledger.record_spooled(row)
        return result, prepared

    def job(self, cluster: int, proc: int = 0) -> dict[str, Any]:
        rows = self.ledger.jobs([JobSelector(cluster, proc, self.schedd.name)])
        assert len(rows) == 1
        return rows[0]

    def totals(self) -> dict[str, int]:
        return dict(self.poller.stats.totals)

    def poll(self) -> PollReport:
        """One poll; every poll that tracks something makes exactly one query."""
        before = self.totals()
        report = self.poller.poll_once()
        after = self.totals()
        if report.outcome == "idle":
            assert after == before
        else:
            assert after["polls"] - before["polls"] == 1
            assert after["queries"] - before["queries"] == 1
            assert after["retrieve_calls"] - before["retrieve_calls"] <= 1
            assert after["edit_calls"] - before["edit_calls"] <= 1
            assert after["history_calls"] - before["history_calls"] <= 1
        return report

    def poll_until(self, done: Callable[[], bool], what: str) -> PollReport:
        deadline = time.monotonic() + DEADLINE
        while True:
            self.schedd.tick()
            report = self.poll()
            if done():
                return report
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} within {DEADLINE} s; last poll: {report}")
            time.sleep(0.02)

    def tick_until(self, done: Callable[[], bool], what: str) -> None:
        """Run the schedd alone, without polling."""
        deadline = time.monotonic() + DEADLINE
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} within {DEADLINE} s")
            self.schedd.tick()
            time.sleep(0.02)

    def queue(self, constraint: str = "true") -> list[dict[str, Any]]:
        return self.schedd.query(constraint, ["ClusterId", "ProcId", "JobStatus", "RETRIEVED"])


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    ledger = Ledger(tmp_path / "state" / "ledger.db")
    schedd = LocalSchedd("local", tmp_path / "schedd", slots=4, autostart=False)
    try:
        yield Env(tmp_path, ledger, schedd, Poller(ledger, schedd))
    finally:
        schedd.act(Action.REMOVE, "true")  # stops any starter still running
        schedd.close()
        ledger.close()


def simple(arg: str, extra: str = "") -> str:
    return f"executable = job.sh\narguments = {arg}\noutput = out_{arg}.txt\nerror = err_{arg}.txt\n{extra}queue\n"


# -- what a poll asks ------------------------------------------------------


def test_nothing_tracked_means_no_query(env: Env) -> None:
    report = env.poll()
    assert report == PollReport(outcome="idle")
    assert env.totals() == dict.fromkeys(env.totals(), 0)
    assert env.poller.stats.last_poll_at is None


def test_one_query_per_poll_for_one_or_several_clusters(env: Env) -> None:
    d = env.job_dir("many", SLEEP_SH)
    env.submit(d, simple("a"))
    env.poll()
    assert env.totals()["queries"] == 1
    for arg in ("b", "c", "d"):
        env.submit(d, simple(arg, "") .replace("queue\n", "queue 2\n"))
    report = env.poll()
    assert report.tracked == 7
    assert env.totals()["queries"] == 2
    assert env.totals()["polls"] == 2
    assert env.poller.stats.last_outcome == "ok"


# -- the life of a job -------------------------------------------------------


def test_completed_job_is_retrieved_then_marked_and_leaves_the_queue(env: Env) -> None:
    d = env.job_dir("one")
    (d / "outdir").mkdir()
    result, _ = env.submit(d, simple("x", "initialdir = outdir\n"))
    cluster = result.cluster
    assert env.job(cluster)["iwd"] == str(d / "outdir")

    report = env.poll_until(lambda: env.job(cluster)["state"] == "retrieved", "retrieved")
    assert (report.retrieved, report.marked) == (1, 0)
    row = env.job(cluster)
    assert row["retrieved_at"] is not None
    assert row["marked_at"] is None  # marked in the next poll, not in the one that retrieved
    assert (row["exit_code"], row["job_status"]) == (0, JobStatus.COMPLETED)
    assert row["completed_at"] is not None
    assert (d / "outdir" / "out_x.txt").read_text() == "hello x\n"
    assert (d / "outdir" / "err_x.txt").read_text() == "oops x\n"
    assert (d / "outdir" / "result_x.txt").read_text() == "result x\n"
    assert not (d / "out_x.txt").exists()
    # Nothing sent yet: the job stays in the queue, not marked.
    assert env.totals()["edit_calls"] == 0
    assert [ad["RETRIEVED"] for ad in env.queue()] == [False]

    # The next poll's query shows the schedd fetched the output (StageOutFinish): now the mark.
    report = env.poll()
    assert (report.retrieved, report.marked) == (0, 1)
    row = env.job(cluster)
    assert row["marked_at"] is not None and row["marked_at"] >= row["retrieved_at"]
    assert env.totals()["edit_calls"] == 1

    # The mark reached the schedd: RETRIEVED is true, so the job may leave the queue.
    assert [ad["RETRIEVED"] for ad in env.queue()] in ([True], [])
    env.tick_until(lambda: env.queue() == [], "gone from the queue")
    history = env.schedd.history(f"ClusterId == {cluster}", ["ClusterId", "RETRIEVED", "JobStatus"])
    assert history == [{"ClusterId": cluster, "RETRIEVED": True, "JobStatus": JobStatus.COMPLETED}]

    states = [e["to_state"] for e in env.ledger.events("local", cluster, 0)]
    assert states[0] == "spooling"
    assert states[-2:] == ["completed", "retrieved"]
    assert len(states) == len(set(states))

    totals = env.totals()
    assert (totals["retrieve_calls"], totals["edit_calls"], totals["errors"]) == (1, 1, 0)
    assert env.ledger.tracked_jobs("local") == []
    assert env.poll().outcome == "idle"
    assert env.totals() == totals


def test_several_completed_jobs_take_one_retrieve_and_one_edit(env: Env) -> None:
    d = env.job_dir("batch")
    first, _ = env.submit(d, "executable = job.sh\narguments = p$(Process)\noutput = o$(Process).txt\nqueue 2\n")
    second, _ = env.submit(d, simple("s"))
    env.poll()
    env.tick_until(lambda: len(env.queue("JobStatus == 4")) == 3, "all three completed")

    before = env.totals()
    report = env.poll()
    after = env.totals()
    assert (report.retrieved, report.marked) == (3, 0)
    assert after["retrieve_calls"] - before["retrieve_calls"] == 1
    assert after["edit_calls"] - before["edit_calls"] == 0
    assert after["queries"] - before["queries"] == 1
    assert [r["state"] for r in env.ledger.jobs()] == ["retrieved"] * 3
    assert all(r["marked_at"] is None for r in env.ledger.jobs())
    assert (d / "o0.txt").read_text() == "hello p0\n"
    assert (d / "o1.txt").read_text() == "hello p1\n"
    assert (d / "out_s.txt").read_text() == "hello s\n"
    assert [ad["RETRIEVED"] for ad in env.queue()] == [False] * 3

    before = env.totals()
    report = env.poll()  # the three marks, in one edit
    after = env.totals()
    assert (report.retrieved, report.marked) == (0, 3)
    assert after["retrieve_calls"] - before["retrieve_calls"] == 0
    assert after["edit_calls"] - before["edit_calls"] == 1
    assert after["queries"] - before["queries"] == 1
    assert all(r["marked_at"] is not None for r in env.ledger.jobs())
    queued = env.queue()
    assert {ad["ClusterId"] for ad in queued} <= {first.cluster, second.cluster}
    assert all(ad["RETRIEVED"] is True for ad in queued)


def test_a_retrieve_that_cannot_succeed_pauses_until_asked_and_is_never_marked(env: Env) -> None:
    d = env.job_dir("retry")
    (d / "outdir").mkdir()
    result, _ = env.submit(d, simple("r", "initialdir = outdir\n"))
    env.poll()
    env.tick_until(lambda: len(env.queue("JobStatus == 4")) == 1, "completed")
    (d / "outdir").rmdir()
    (d / "outdir").write_text("now a file, so nothing can be written under it")

    report = env.poll()
    row = env.job(result.cluster)
    assert report.retrieved == 0 and report.marked == 0
    assert row["state"] == "completed"
    assert row["error"].startswith("retrieve failed: ") and row["error"].endswith("needs attention")
    assert row["retrieve_paused"] == 1 and row["retrieve_failures"] == 1
    assert f"cannot write {d / 'outdir'}: (errno 20) Not a directory" in row["attention"]
    assert f"rsub retrieve {result.cluster}.0@local" in row["attention"]
    assert row["retrieved_at"] is None and row["marked_at"] is None
    assert env.totals()["errors"] == 1 and env.totals()["retrieve_calls"] == 1

    # Paused: later polls do not try again, even once the path is fixed; the schedd keeps the job.
    (d / "outdir").unlink()
    (d / "outdir").mkdir()
    for _ in range(3):
        assert env.poll().retrieved == 0
    assert env.totals()["retrieve_calls"] == 1 and env.totals()["edit_calls"] == 0
    assert [ad["RETRIEVED"] for ad in env.queue()] == [False]

    # `rsub retrieve` fetches it on demand; the next poll marks it.
    assert env.poller.retrieve_now([(result.cluster, 0)]) == {"retrieved": [(result.cluster, 0)], "failed": []}
    row = env.job(result.cluster)
    assert (row["state"], row["error"], row["attention"], row["retrieve_paused"]) == ("retrieved", None, None, 0)
    assert (d / "outdir" / "out_r.txt").read_text() == "hello r\n"
    report = env.poll()
    assert report.marked == 1 and env.job(result.cluster)["marked_at"] is not None
    assert [ad["RETRIEVED"] for ad in env.queue()] in ([True], [])


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_retrieve_that_may_heal_is_retried_with_a_doubling_backoff_then_asks_for_a_person(env: Env) -> None:
    clock = Clock()
    env.poller = Poller(env.ledger, env.schedd, clock=clock, retry_base=2.0, retry_max=8.0, attention_after=20.0)
    d = env.job_dir("heal")
    result, _ = env.submit(d, simple("h"))
    env.poll()
    env.tick_until(lambda: len(env.queue("JobStatus == 4")) == 1, "completed")
    real_retrieve, failing = env.schedd.retrieve, [True]

    def retrieve(jobs: Any) -> None:
        if failing[0]:
            raise ScheddError(ErrorKind.TRANSFER, f"DCSchedd::receiveJobSandbox:7003:File transfer failed for target"
                              f" job {result.cluster}.0: writing to file {d}/out_h.txt:"
                              f" (errno 28) No space left on device")
        real_retrieve(jobs)

    env.schedd.retrieve = retrieve  # type: ignore[method-assign]
    tried_at = []
    for _ in range(40):  # one poll a second for 40 s
        before = env.totals()["retrieve_calls"]
        env.poll()
        if env.totals()["retrieve_calls"] > before:
            tried_at.append(clock.now - 1_000_000.0)
        clock.now += 1.0
    # Tries at 0, then 2, 4 and 8 s apart, capped at 8 s: never every poll.
    assert tried_at[:5] == [0.0, 2.0, 6.0, 14.0, 22.0], tried_at
    assert all(b - a == 8.0 for a, b in itertools.pairwise(tried_at[3:])), tried_at
    row = env.job(result.cluster)
    assert row["state"] == "completed" and row["retrieve_paused"] == 0
    assert "(errno 28) No space left on device" in row["error"] and "retrying in 8 s" in row["error"]
    assert row["attention"] is not None and "rsubd keeps trying" in row["attention"]  # failing for over 20 s
    assert row["marked_at"] is None and [ad["RETRIEVED"] for ad in env.queue()] == [False]

    failing[0] = False  # space again: the next try after the backoff brings it home and clears it all
    clock.now += 8.0
    report = env.poll()
    row = env.job(result.cluster)
    assert report.retrieved == 1
    assert (row["state"], row["error"], row["attention"], row["retrieve_failures"]) == ("retrieved", None, None, 0)
    assert (d / "out_h.txt").read_text() == "hello h\n"


def test_retrieve_now_into_another_directory_moves_absolute_outputs_there(env: Env) -> None:
    d = env.job_dir("dest")
    mount = env.root / "mnt"  # a mount point, say, that is gone by the time the job ends
    mount.mkdir()
    result, _ = env.submit(d, simple("x").replace("output = out_x.txt", f"output = {mount}/out_x.txt"))
    env.poll()
    env.tick_until(lambda: len(env.queue("JobStatus == 4")) == 1, "completed")
    mount.rmdir()
    mount.write_text("not a directory any more")
    env.poll()
    row = env.job(result.cluster)
    assert row["retrieve_paused"] == 1 and str(mount) in row["attention"]
    dest = env.root / "elsewhere"
    dest.mkdir()
    done = env.poller.retrieve_now([(result.cluster, 0)], dest=str(dest))
    assert done["retrieved"] == [(result.cluster, 0)]
    assert (dest / "out_x.txt").read_text() == "hello x\n"
    assert (dest / "err_x.txt").read_text() == "oops x\n"
    row = env.job(result.cluster)
    assert (row["state"], row["retrieved_to"]) == ("retrieved", str(dest))
    assert not (d / "err_x.txt").exists()


# -- jobs changed or gone outside rsub -----------------------------------------


def test_jobs_removed_outside_rsub_take_one_history_call(env: Env) -> None:
    d = env.job_dir("sleepers", SLEEP_SH)
    a, _ = env.submit(d, simple("a"))
    b, _ = env.submit(d, simple("b"))
    env.poll_until(lambda: {r["state"] for r in env.ledger.jobs()} == {"running"}, "running")
    assert env.totals()["history_calls"] == 0

    env.schedd.act(Action.REMOVE, [f"{a.cluster}.0", f"{b.cluster}.0"], reason="cleaning up")
    assert env.queue() == []  # removed jobs leave the queue at once
    report = env.poll()
    assert env.totals()["history_calls"] == 1
    assert report.changed == 2
    for cluster in (a.cluster, b.cluster):
        row = env.job(cluster)
        assert row["state"] == "removed"
        assert row["job_status"] == JobStatus.REMOVED
        assert row["remove_reason"].startswith("cleaning up")
        last = env.ledger.events("local", cluster, 0)[-1]
        assert (last["from_state"], last["to_state"]) == ("running", "removed")
        assert last["detail"].startswith("cleaning up")
    assert env.ledger.tracked_jobs("local") == []
    assert env.poll().outcome == "idle"


def test_job_unknown_to_the_schedd_is_looked_up_once_per_poll_and_kept(env: Env) -> None:
    row = env.ledger.add_submit_intent(
        request_id="lost", schedd="local", tag="t", description="queue\n", submitted_description="queue\n",
        submit_dir=str(env.root), submit_file=None,
    )
    env.ledger.record_submitted(row, 4242, [(0, str(env.root))])
    before = env.job(4242)
    with structlog.testing.capture_logs() as logs:
        env.poll()
        env.poll()
    assert env.totals()["history_calls"] == 2
    assert env.job(4242) == before
    vanished = [e for e in logs if e["event"] == "job.vanished"]
    assert [(e["job"], e["log_level"]) for e in vanished] == [("4242.0", "warning")] * 2


def test_completed_job_that_left_unretrieved_is_failed(env: Env) -> None:
    # max_age 0: leave_in_queue lets the job go as soon as it completes, before any retrieve.
    d = env.job_dir("too-old")
    result, _ = env.submit(d, simple("o"), max_age=0)
    env.poll_until(lambda: env.job(result.cluster)["state"] == "failed", "failed")
    row = env.job(result.cluster)
    assert row["error"] == "the job left the queue before rsub could retrieve its output"
    assert row["job_status"] == JobStatus.COMPLETED
    assert row["retrieved_at"] is None
    assert not (d / "out_o.txt").exists()
    assert env.totals()["retrieve_calls"] == 0


def test_job_retrieved_by_someone_else_counts_as_retrieved(env: Env) -> None:
    d = env.job_dir("elsewhere")
    result, _ = env.submit(d, simple("e"))
    env.poll()
    env.tick_until(lambda: len(env.queue("JobStatus == 4")) == 1, "completed")
    job = f"{result.cluster}.0"
    env.schedd.retrieve([job])
    env.schedd.edit([job], "RETRIEVED", "true")
    env.tick_until(lambda: env.queue() == [], "gone from the queue")

    env.poll()
    row = env.job(result.cluster)
    assert row["state"] == "retrieved"
    assert row["retrieved_at"] is not None and row["marked_at"] is not None
    assert env.totals()["history_calls"] == 1
    assert env.totals()["retrieve_calls"] == 0
    assert (d / "out_e.txt").read_text() == "hello e\n"


def test_held_job_shows_reason_and_code_until_released(env: Env) -> None:
    d = env.job_dir("hold", SLEEP_SH)
    result, _ = env.submit(d, simple("h"))
    env.poll_until(lambda: env.job(result.cluster)["state"] == "running", "running")

    env.schedd.act(Action.HOLD, [f"{result.cluster}.0"], reason="wait for me")
    env.poll()
    row = env.job(result.cluster)
    assert row["state"] == "held"
    assert row["hold_reason"].startswith("wait for me")
    assert row["hold_code"] == 1
    assert env.ledger.events("local", result.cluster, 0)[-1]["detail"].startswith("wait for me")

    env.schedd.act(Action.RELEASE, [f"{result.cluster}.0"])
    env.poll()
    row = env.job(result.cluster)
    assert row["state"] in ("idle", "running")
    assert (row["hold_reason"], row["hold_code"]) == (None, None)


def test_job_held_by_the_schedd_for_missing_output(env: Env) -> None:
    d = env.job_dir("nooutput")
    result, _ = env.submit(d, simple("n", "transfer_output_files = never_written.txt\n"))
    env.poll_until(lambda: env.job(result.cluster)["state"] == "held", "held")
    row = env.job(result.cluster)
    assert row["hold_code"] == 12
    assert "never_written.txt" in row["hold_reason"]
    assert row["retrieved_at"] is None


def test_spooling_job_is_reported_as_spooling(env: Env) -> None:
    d = env.job_dir("unspooled")
    prepared = prepare(simple("u"), cwd=str(d), instance_id=env.ledger.instance_id, max_age_seconds=MAX_AGE)
    row = env.ledger.add_submit_intent(
        request_id="u", schedd="local", tag=prepared.tag, description="", submitted_description=prepared.request.text,
        submit_dir=str(d), submit_file=None,
    )
    result = env.schedd.submit(prepared.request)
    env.ledger.record_submitted(row, result.cluster, list(zip(result.procs, prepared.iwds, strict=True)))
    env.poll()
    assert env.job(result.cluster)["state"] == "spooling"
    assert len(env.ledger.events("local", result.cluster)) == 1
    env.schedd.spool(result)  # so teardown finds nothing half made


# -- a failing schedd ----------------------------------------------------------


def test_failing_query_counts_an_error_and_changes_nothing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    d = env.job_dir("err")
    result, _ = env.submit(d, simple("q"))
    env.tick_until(lambda: len(env.queue("JobStatus == 4")) == 1, "completed")
    rows = env.ledger.jobs()
    events = env.ledger.events("local", result.cluster)

    def unreachable(constraint: str, projection: Any) -> list[dict[str, Any]]:
        raise ScheddError(ErrorKind.UNREACHABLE, "Failed to connect to schedd")

    monkeypatch.setattr(env.schedd, "query", unreachable)
    report = env.poll()
    assert report.outcome == "error"
    assert report.error == "schedd_unreachable: Failed to connect to schedd"
    assert env.totals()["errors"] == 1
    assert env.poller.stats.last_outcome == "error"
    assert env.poller.stats.last_error == report.error
    assert env.poller.stats.last_ok_at is None
    assert env.ledger.jobs() == rows
    assert env.ledger.events("local", result.cluster) == events
    assert not (d / "out_q.txt").exists()

    monkeypatch.undo()
    report = env.poll()
    assert report.outcome == "ok" and report.retrieved == 1
    assert env.poller.stats.last_error is None
    assert env.poller.stats.last_ok_at is not None
    assert env.poller.stats.last_hour(time.time())["errors"] == 1


def test_a_poll_that_finds_nothing_new_is_logged_at_debug(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    rsubd_logs.configure("debug", io.StringIO())  # capture_logs sees only what the configured level lets through
    try:
        d = env.job_dir("levels", SLEEP_SH)
        env.submit(d, simple("a"))
        env.tick_until(lambda: len(env.queue("JobStatus == 2")) == 1, "running")  # and it runs a minute

        def levels() -> list[str]:
            with structlog.testing.capture_logs() as captured:
                env.poll()
            return [e["log_level"] for e in captured if e["event"] == "poll"]

        assert levels() == ["info"]  # the first poll, which sees the job running
        assert levels() == ["debug"]  # nothing new: the job is still running

        def unreachable(constraint: str, projection: Any) -> list[dict[str, Any]]:
            raise ScheddError(ErrorKind.UNREACHABLE, "Failed to connect to schedd")

        monkeypatch.setattr(env.schedd, "query", unreachable)
        assert levels() == ["warning"]
        monkeypatch.undo()
        assert levels() == ["info"]  # the first poll after errors: the backoff ends
        assert levels() == ["debug"]
    finally:
        rsubd_logs.configure("info")
