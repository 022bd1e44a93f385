"""The schedd boundary contract: what every `rsubd.backends.schedd.Schedd` backend must do.

Each expectation is one a real HTCondor 25 schedd was seen to meet when driven
through remote submission (submit with spooling, spool, query, retrieve, edit,
act, history). The same tests run against the embedded scheduler and, when a
pool is configured, against a real schedd, so they poll with deadlines, never
assume the order of results and select jobs by their RsubInstance tag.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import pytest

from rsubd.backends.schedd import POLL_PROJECTION, Action, ErrorKind, Schedd, ScheddError, ids_constraint
from rsubd.handlers.act import storable_reason
from rsubd.polling.observing import fields_from_ad
from rsubd.services import retrieval
from tests.support.deadlines import holds_for, wait_until

from .contract_kit import PROJECTION, STATE_TIMEOUT, JobKit, as_int, quote

SPOOL_HOLD_REASON = "Spooling input data files"
RUNNING, IDLE, HELD, COMPLETED, REMOVED = 2, 1, 5, 4, 3


def assert_spool_held(ad: Mapping[str, object]) -> None:
    """A proc as a schedd holds it between submit and spool."""
    assert ad["JobStatus"] == HELD
    assert ad["HoldReasonCode"] == 16
    assert ad["HoldReason"] == SPOOL_HOLD_REASON
    assert "ExitCode" not in ad
    assert "CompletionDate" not in ad


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# -- the stages of one job ------------------------------------------------------


def test_spooled_job_lifecycle(
    schedd: Schedd, kit: JobKit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Submit, spool, run, complete and stay, retrieve, mark retrieved, leave for history."""
    python_cwd = tmp_path / "python-cwd"
    python_cwd.mkdir()
    monkeypatch.chdir(python_cwd)  # retrieve must write into initialdir, not the caller's cwd
    job = kit.submit_job(
        """
        echo "stdout line"
        echo "stderr line" >&2
        cat input.txt > result.txt
        echo "kept as is" > kept.txt
        sleep 2
        """,
        commands={
            "transfer_input_files": "input.txt",
            "transfer_output_files": "result.txt, kept.txt",
            "transfer_output_remaps": '"result.txt=sub/renamed_result.txt"',
        },
        inputs={"input.txt": "input payload\n"},
    )
    assert (job.result.first_proc, job.result.num_procs) == (0, 1)

    # Right after submit: held for spooling, nothing about an exit yet.
    ads = kit.ads(job)
    assert set(ads) == {0}
    assert_spool_held(ads[0])
    assert ads[0]["RETRIEVED"] is False
    assert ads[0]["RsubInstance"] == kit.tag

    # After spool: released by the schedd (a real one takes about a second).
    schedd.spool(job.result)
    ad = kit.wait_status(job, IDLE, RUNNING)[0]
    assert ad["HoldReasonCode"] is None  # present as undefined, not absent
    assert ad["LastHoldReasonCode"] == 16
    assert ad["LastHoldReason"] == SPOOL_HOLD_REASON
    assert ad["ReleaseReason"] == "Data files spooled"
    assert isinstance(ad["StageInFinish"], int)
    assert "ExitCode" not in ad and "CompletionDate" not in ad

    ad = kit.wait_status(job, RUNNING)[0]
    assert isinstance(ad["JobCurrentStartDate"], int)
    assert "ExitCode" not in ad and "CompletionDate" not in ad

    # Completed, and kept in the queue by LeaveJobInQueue.
    ad = kit.wait_status(job, COMPLETED)[0]
    assert ad["ExitCode"] == 0
    assert ad["ExitBySignal"] is False
    assert isinstance(ad["CompletionDate"], int)
    assert as_int(ad["CompletionDate"]) >= as_int(ad["JobCurrentStartDate"])
    assert ad["LeaveJobInQueue"] is True
    assert ad["RETRIEVED"] is False
    holds_for(
        lambda: kit.ads(job).get(0, {}).get("JobStatus") == COMPLETED,
        1.0,
        "completed job kept in the queue",
    )

    # Retrieve: output lands in the submit-time initialdir, remaps honoured.
    schedd.retrieve(job.constraint)
    assert job.read("out.txt") == "stdout line\n"
    assert job.read("err.txt") == "stderr line\n"
    assert job.read("kept.txt") == "kept as is\n"
    assert job.read("sub/renamed_result.txt") == "input payload\n"
    assert not (job.initialdir / "result.txt").exists()
    assert listing(python_cwd) == []
    assert listing(kit.cwd) == []
    ad = kit.wait_for(
        job, lambda a: isinstance(a.get("StageOutFinish"), int), "StageOutFinish after retrieve"
    )[0]
    assert ad["JobStatus"] == COMPLETED  # retrieving alone does not release the job: RETRIEVED does

    # Marked retrieved: the job leaves the queue for history.
    assert schedd.edit(job.constraint, "RETRIEVED", "true") == 1
    for ad in kit.ads(job).values():  # the schedd may already have let it go
        assert ad["RETRIEVED"] is True
        assert ad["LeaveJobInQueue"] is False
    kit.wait_gone(job)
    record = kit.history(job)[0]
    assert record["JobStatus"] == COMPLETED
    assert record["RETRIEVED"] is True
    assert record["ExitCode"] == 0
    assert record["RsubInstance"] == kit.tag
    assert job.read("sub/renamed_result.txt") == "input payload\n"


def test_cluster_of_three_procs_from_items(schedd: Schedd, kit: JobKit) -> None:
    job = kit.submit_job(
        """
        echo "out $1"
        echo "err $1" >&2
        echo "result $1" > "result_$1.txt"
        sleep 1
        """,
        commands={
            "arguments": "$(item)",
            "output": "out_$(item).txt",
            "error": "err_$(item).txt",
            "transfer_output_files": "result_$(item).txt",
        },
        queue="queue item from (\nalpha\nbeta\ngamma\n)",
    )
    assert (job.result.first_proc, job.result.num_procs) == (0, 3)
    ads = kit.ads(job)
    assert set(ads) == {0, 1, 2}
    for ad in ads.values():
        assert_spool_held(ad)
    assert {p: ad["Args"] for p, ad in ads.items()} == {0: "alpha", 1: "beta", 2: "gamma"}

    schedd.spool(job.result)  # one call uploads for every proc
    ads = kit.wait_status(job, COMPLETED)
    assert {p: ad["ExitCode"] for p, ad in ads.items()} == {0: 0, 1: 0, 2: 0}

    schedd.retrieve(job.constraint)
    for item in ("alpha", "beta", "gamma"):
        assert job.read(f"out_{item}.txt") == f"out {item}\n"
        assert job.read(f"err_{item}.txt") == f"err {item}\n"
        assert job.read(f"result_{item}.txt") == f"result {item}\n"

    assert schedd.edit(job.constraint, "RETRIEVED", "true") == 3
    kit.wait_gone(job)
    records = kit.history(job)
    assert set(records) == {0, 1, 2}
    assert all(r["JobStatus"] == COMPLETED and r["RETRIEVED"] is True for r in records.values())


def test_several_queue_statements_make_one_cluster(schedd: Schedd, kit: JobKit) -> None:
    """condor_submit's numbering on (HTCondor 25.13), sent as one queue statement with item data."""
    job = kit.submit_job(
        'echo "$@"',
        commands={"arguments": "a", "N": "2", "output": "out_$(Process).txt", "My.Tag": '"t$(ClusterId)"'},
        queue="queue $(N)\narguments = b c, d\nqueue 1\narguments = $(Step)$(Row)\nqueue 1",
    )
    assert (job.result.first_proc, job.result.num_procs) == (0, 4)
    ads = kit.ads(job, (*PROJECTION, "Tag"))
    assert {p: ad["Args"] for p, ad in ads.items()} == {0: "a", 1: "a", 2: "b c, d", 3: "00"}
    assert {ad["Tag"] for ad in ads.values()} == {f"t{job.id}"}  # the schedd numbered the cluster
    schedd.spool(job.result)
    kit.wait_status(job, COMPLETED)
    schedd.retrieve(job.constraint)
    assert [job.read(f"out_{p}.txt") for p in range(4)] == ["a\n", "a\n", "b c, d\n", "00\n"]
    assert schedd.edit(job.constraint, "RETRIEVED", "true") == 4


def test_an_executable_changed_between_queue_statements_runs_in_its_own_procs(schedd: Schedd, kit: JobKit) -> None:
    """condor_submit would start a second cluster at the change; rsub sends one, each proc with its executable."""
    second = kit.base / "second.sh"
    second.write_text('#!/bin/sh\necho "second $@"\n', encoding="utf-8")
    second.chmod(0o755)
    job = kit.submit_job('echo "first $@"', commands={"arguments": "$(Process)", "output": "out_$(Process).txt"},
                         queue=f"queue 1\nexecutable = {second}\nqueue 2")
    assert (job.result.first_proc, job.result.num_procs) == (0, 3)
    schedd.spool(job.result)
    kit.wait_status(job, COMPLETED)
    schedd.retrieve(job.constraint)
    assert [job.read(f"out_{p}.txt") for p in range(3)] == ["first 0\n", "second 1\n", "second 2\n"]
    assert schedd.edit(job.constraint, "RETRIEVED", "true") == 3


def test_a_blank_item_line_is_a_job_with_empty_variables(schedd: Schedd, kit: JobKit) -> None:
    """As condor_submit and the bindings read an item list (Submit.itemdata() of 25.14): a blank line is an item."""
    job = kit.submit_job("true", commands={"arguments": "[$(x)] [$(y)]"}, queue="queue x, y from (\na, b\n\nc\n)")
    assert job.result.num_procs == 3
    ads = kit.ads(job)
    assert {p: ad["Args"] for p, ad in ads.items()} == {0: "[a] [b]", 1: "[] []", 2: "[c] []"}
    schedd.act(Action.REMOVE, job.constraint)


def test_a_command_first_given_after_a_queue_statement_is_unset_for_the_procs_before_it(
    schedd: Schedd, kit: JobKit
) -> None:
    """Made one queue statement, such a command reads an empty value for the earlier procs: the schedd's
    submit code takes an empty command as not given (submit_param) and an empty My.X as X = undefined."""
    job = kit.submit_job("true", commands={"arguments": "a"},
                         queue="queue 1\narguments = b\nMy.Later = 7\npriority = 3\nqueue 1")
    ads = kit.ads(job, (*PROJECTION, "Later", "JobPrio"))
    assert {p: (ad["Args"], ad.get("Later"), ad["JobPrio"]) for p, ad in ads.items()} == {
        0: ("a", None, 0), 1: ("b", 7, 3)}
    schedd.act(Action.REMOVE, job.constraint)


def test_each_procs_event_log_comes_home_under_its_own_name(schedd: Schedd, kit: JobKit) -> None:
    """What rsub's log merge rests on: a relative `log` is written in each proc's spool and retrieved."""
    job = kit.submit_job("true", commands={"log": "job.log.$(ProcId)"}, queue="queue 2")
    schedd.spool(job.result)
    kit.wait_status(job, COMPLETED)
    schedd.retrieve(job.constraint)
    for proc in (0, 1):
        text = job.read(f"job.log.{proc}")
        assert f"005 ({job.id:03d}.{proc:03d}.000) " in text, text
        assert f".{1 - proc:03d}.000) " not in text  # only its own proc's events
    assert schedd.edit(job.constraint, "RETRIEVED", "true") == 2


def test_an_absolute_event_log_is_written_in_the_spool_and_comes_home_too(
    schedd: Schedd, kit: JobKit, tmp_path: Path
) -> None:
    """What rsub's merge of an absolute `log` rests on: spooling rewrites UserLog to its basename (dag/README:
    UserLog "probe.dag.dagman.log", SUBMIT_UserLog the client's path), so each proc's copy is written in its
    spool and the retrieve brings it back, into the initialdir under that basename (or to the path named)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    job = kit.submit_job("true", commands={"log": f"{logs}/job.log.$(ProcId)"}, queue="queue 2")
    schedd.spool(job.result)
    kit.wait_status(job, COMPLETED)
    schedd.retrieve(job.constraint)
    for proc in (0, 1):
        copies = [p for p in (job.initialdir / f"job.log.{proc}", logs / f"job.log.{proc}")
                  if p.exists() and f"005 ({job.id:03d}.{proc:03d}.000) " in p.read_text()]
        assert copies, listing(job.initialdir) + listing(logs)
    assert schedd.edit(job.constraint, "RETRIEVED", "true") == 2


# -- how jobs end -----------------------------------------------------------------


def test_nonzero_exit_code_is_an_ordinary_completion(schedd: Schedd, kit: JobKit) -> None:
    job = kit.submit_job(
        """
        echo "stdout line from exit3"
        echo "stderr line from exit3" >&2
        echo produced > result.txt
        exit 3
        """
    )
    schedd.spool(job.result)
    ad = kit.wait_finished(job)[0]
    assert ad["JobStatus"] == COMPLETED
    assert ad["ExitCode"] == 3
    assert ad["ExitBySignal"] is False
    assert "ExitSignal" not in ad
    assert isinstance(ad["CompletionDate"], int)
    assert ad["LeaveJobInQueue"] is True
    holds_for(
        lambda: kit.ads(job).get(0, {}).get("JobStatus") == COMPLETED,
        1.0,
        "exit 3 job kept in the queue",
    )

    schedd.retrieve(job.constraint)
    # With transfer_output_files unset, new top-level files come back.
    assert job.read("out.txt") == "stdout line from exit3\n"
    assert job.read("err.txt") == "stderr line from exit3\n"
    assert job.read("result.txt") == "produced\n"


def test_killed_by_signal_completes_with_exit_signal(schedd: Schedd, kit: JobKit) -> None:
    job = kit.submit_job(
        """
        echo "before kill"
        echo "stderr before kill" >&2
        echo partial > partial.txt
        kill -9 $$
        """
    )
    schedd.spool(job.result)
    ad = kit.wait_finished(job)[0]
    assert ad["JobStatus"] == COMPLETED
    assert ad["ExitBySignal"] is True
    assert ad["ExitSignal"] == 9
    assert "ExitCode" not in ad
    assert isinstance(ad["CompletionDate"], int)
    assert ad["LeaveJobInQueue"] is True

    schedd.retrieve(job.constraint)
    assert job.read("out.txt") == "before kill\n"
    assert job.read("err.txt") == "stderr before kill\n"
    assert job.read("partial.txt") == "partial\n"


def test_missing_output_file_holds_the_job(schedd: Schedd, kit: JobKit) -> None:
    job = kit.submit_job(
        """
        echo "out"
        echo other > other.txt
        """,
        commands={"transfer_output_files": "never_created.txt"},
    )
    schedd.spool(job.result)
    ad = kit.wait_finished(job)[0]
    assert ad["JobStatus"] == HELD
    assert ad["HoldReasonCode"] == 12
    assert "never_created.txt" in str(ad["HoldReason"])
    assert "CompletionDate" not in ad
    assert ad["LeaveJobInQueue"] is False
    holds_for(
        lambda: kit.ads(job).get(0, {}).get("HoldReasonCode") == 12, 0.5, "the output-transfer hold"
    )

    result = schedd.act(Action.REMOVE, job.constraint, "removed after output hold")
    assert result.success == 1
    kit.wait_gone(job)
    record = kit.history(job)[0]
    assert record["JobStatus"] == REMOVED
    assert record["LastHoldReasonCode"] == 12
    assert "removed after output hold" in str(record["RemoveReason"])


def test_missing_input_file_fails_spool_and_the_schedd_removes_the_job(
    schedd: Schedd, kit: JobKit
) -> None:
    job = kit.submit_job(
        "cat does_not_exist.txt", commands={"transfer_input_files": "does_not_exist.txt"}
    )
    assert_spool_held(kit.ads(job)[0])  # submit does not look at input files

    with pytest.raises(ScheddError) as failure:
        schedd.spool(job.result)
    assert failure.value.kind is ErrorKind.INPUT_MISSING
    assert "does_not_exist.txt" in failure.value.message

    kit.wait_gone(job)
    record = kit.history(job)[0]
    assert record["JobStatus"] == REMOVED
    assert record["RemoveReason"] == "Staging of job files failed"
    assert record["LastHoldReasonCode"] == 16
    assert "StageInFinish" not in record


# -- acting on jobs ---------------------------------------------------------------


def test_hold_release_remove_a_running_job(schedd: Schedd, kit: JobKit) -> None:
    # The only long job of the suite: it must still be running through hold and release, and
    # the test removes it (the kit's cleanup would too), so it never costs its full length.
    job = kit.submit_job("sleep 20")
    schedd.spool(job.result)
    kit.wait_status(job, RUNNING)

    held = schedd.act(Action.HOLD, job.constraint, "contract hold reason")
    assert (held.success, held.not_found) == (1, 0)
    ad = kit.wait_status(job, HELD)[0]
    assert ad["HoldReasonCode"] == 1
    assert "contract hold reason" in str(ad["HoldReason"])
    assert ad["LastJobStatus"] == RUNNING
    again = schedd.act(Action.HOLD, job.constraint, "contract hold reason")
    assert again.success == 0

    released = schedd.act(Action.RELEASE, job.constraint, "contract release reason")
    assert released.success == 1
    ad = kit.wait_status(job, IDLE, RUNNING)[0]
    assert ad["HoldReasonCode"] is None
    assert ad["LastHoldReasonCode"] == 1
    assert isinstance(ad["ReleaseReason"], str) and ad["ReleaseReason"] != "Data files spooled"
    running = kit.wait_status(job, RUNNING)[0]  # it runs again
    # The hold evicted it (a real schedd keeps ExitBySignal/ExitSignal 15 from that): rsub's view of a
    # job that is not completed has no exit code or signal, whatever the ad carries.
    view = fields_from_ad(schedd.query(job.constraint, POLL_PROJECTION)[0])
    assert (view["state"], view["exit_code"], view["exit_signal"]) == ("running", None, None), running

    removed = schedd.act(Action.REMOVE, job.constraint, "contract remove reason")
    assert removed.success == 1
    kit.wait_gone(job)
    record = kit.history(job)[0]
    assert record["JobStatus"] == REMOVED
    assert "contract remove reason" in str(record["RemoveReason"])
    assert "ExitCode" not in record and "CompletionDate" not in record
    view = fields_from_ad(record)
    assert (view["state"], view["exit_code"], view["exit_signal"]) == ("removed", None, None)


def test_hold_of_a_spool_held_job_changes_nothing(schedd: Schedd, kit: JobKit) -> None:
    job = kit.submit_job("true")
    result = schedd.act(Action.HOLD, job.constraint, "hold while spooling")
    assert (result.success, result.not_found, result.already_done) == (0, 0, 1)
    assert_spool_held(kit.ads(job)[0])


def test_a_hold_while_spooling_is_lost_at_the_spool_release_and_works_after_it(schedd: Schedd, kit: JobKit) -> None:
    """What rsub keeps the user's hold for (issue 18, 5): the schedd releases the job once spooled, hold or not;
    a hold sent after that release holds it (code 1)."""
    job = kit.submit_job("sleep 30")
    assert schedd.act(Action.HOLD, job.constraint, "hold while spooling").already_done == 1
    schedd.spool(job.result)
    kit.wait_status(job, IDLE, RUNNING)  # released: the hold asked for while spooling is gone
    held = schedd.act(Action.HOLD, job.constraint, "hold once spooled")
    assert held.success == 1
    ad = kit.wait_status(job, HELD)[0]
    assert ad["HoldReasonCode"] == 1
    assert "hold once spooled" in str(ad["HoldReason"])


@pytest.mark.parametrize("form", ["list", "string"])
@pytest.mark.parametrize("action", list(Action))
def test_act_on_a_nonexistent_job_counts_it_not_found(
    schedd: Schedd, kit: JobKit, action: Action, form: str
) -> None:
    job = kit.submit_job("true")  # a cluster that exists, so only the proc is missing
    missing = f"{job.id}.7"
    result = schedd.act(action, [missing] if form == "list" else missing, "no such job")
    assert result.not_found == 1
    assert result.success == 0
    assert_spool_held(kit.ads(job)[0])  # proc 0 untouched


@pytest.mark.parametrize("form", ["list", "string"])
def test_edit_of_a_nonexistent_job_raises(schedd: Schedd, kit: JobKit, form: str) -> None:
    job = kit.submit_job("true")
    missing = f"{job.id}.7"
    with pytest.raises(ScheddError) as failure:
        schedd.edit([missing] if form == "list" else missing, "RsubNote", '"x"')
    assert failure.value.kind is ErrorKind.NOT_FOUND
    assert missing in failure.value.message


def test_edit_sets_values_and_counts_ads(schedd: Schedd, kit: JobKit) -> None:
    job = kit.submit_job("true", queue="queue 2")
    assert schedd.edit(job.constraint, "RsubNote", '"edited note"') == 2
    assert schedd.edit(job.job_ids()[:1], "RsubNum", "42") == 1
    ads = kit.ads(job, ["ClusterId", "ProcId", "RsubNote", "RsubNum"])
    assert {p: ad["RsubNote"] for p, ad in ads.items()} == {0: "edited note", 1: "edited note"}
    assert ads[0]["RsubNum"] == 42
    assert "RsubNum" not in ads[1]


# -- query and history ----------------------------------------------------------


def test_query_projection_omits_absent_attributes_and_adds_server_time(
    schedd: Schedd, kit: JobKit
) -> None:
    first = kit.submit_job("true")
    second = kit.submit_job("true")
    projection = [
        "ClusterId",
        "ProcId",
        "JobStatus",
        "RsubInstance",
        "HoldReasonCode",
        "ExitCode",
        "CompletionDate",
    ]
    ads = schedd.query(kit.constraint, projection)
    found = sorted((as_int(ad["ClusterId"]), as_int(ad["ProcId"])) for ad in ads)
    assert found == [(first.id, 0), (second.id, 0)]
    for ad in ads:
        assert set(ad) == {
            "ClusterId",
            "ProcId",
            "JobStatus",
            "RsubInstance",
            "HoldReasonCode",
            "ServerTime",
        }
        assert isinstance(ad["ServerTime"], int)

    narrow = schedd.query(first.constraint, ["ClusterId", "NoSuchAttr"])
    assert narrow == [{"ClusterId": first.id, "ServerTime": narrow[0]["ServerTime"]}]
    assert schedd.query(f"{kit.constraint} && ClusterId == -1", ["ClusterId"]) == []
    assert schedd.query(f"RsubInstance == {quote(kit.tag + '-other')}", ["ClusterId"]) == []


MALFORMED: dict[str, Callable[[Schedd], object]] = {
    "query": lambda s: s.query("JobStatus ==", ["ClusterId"]),
    "act": lambda s: s.act(Action.HOLD, "ClusterId ===", "bad constraint"),
    "edit": lambda s: s.edit("ClusterId ==", "RsubNote", '"x"'),
    "retrieve": lambda s: s.retrieve("ClusterId =="),
    "history": lambda s: s.history("ClusterId ==", ["ClusterId"]),
}


@pytest.mark.parametrize("operation", sorted(MALFORMED))
def test_malformed_constraint_is_invalid(schedd: Schedd, operation: str) -> None:
    with pytest.raises(ScheddError) as failure:
        MALFORMED[operation](schedd)
    assert failure.value.kind is ErrorKind.INVALID


def test_history_since_stops_at_the_newest_record_of_a_job(schedd: Schedd, kit: JobKit) -> None:
    """`since` scans newest first and stops before the first record it matches (write order)."""
    h1 = kit.submit_job("true", queue="queue 2")
    h2 = kit.submit_job("true")
    h3 = kit.submit_job("true")
    order = [(h1, 0), (h2, 0), (h1, 1), (h3, 0)]  # spool-held jobs, removed one by one
    for cluster, proc in order:
        assert (
            schedd.act(Action.REMOVE, [f"{cluster.id}.{proc}"], "history order test").success == 1
        )
        one = f"{cluster.constraint} && ProcId == {proc}"
        wait_until(partial(schedd.history, one, ["ProcId"]), STATE_TIMEOUT, f"{one} in history")

    def ids(
        constraint: str = kit.constraint, since: int | str | None = None, match: int | None = None
    ) -> list[tuple[int, int]]:
        records = schedd.history(constraint, ["ClusterId", "ProcId"], match=match, since=since)
        return [(as_int(a["ClusterId"]), as_int(a["ProcId"])) for a in records]

    H10, H11, H20, H30 = (h1.id, 0), (h1.id, 1), (h2.id, 0), (h3.id, 0)
    assert ids() == [H30, H11, H20, H10]
    assert ids(since=h1.id) == [H30]  # H2.0 is newer by number but was written before H1.1
    assert ids(since=h2.id) == [H30, H11]
    assert ids(since=h3.id) == []
    assert ids(since=f"{h1.id}.0") == [H30, H11, H20]
    assert ids(since=f"{h1.id}.1") == [H30]
    assert ids(since=str(h2.id)) == [H30, H11]
    assert ids(since=f"ClusterId == {h2.id}") == [H30, H11]
    assert ids(f"{kit.constraint} && ClusterId == {h1.id}", since=h2.id) == [
        H11
    ]  # the stop record need not match
    assert ids(since=h2.id, match=1) == [H30]
    assert ids(match=2) == [H30, H11]


def test_history_records_have_only_the_projection(schedd: Schedd, kit: JobKit) -> None:
    job = kit.submit_job("true")
    schedd.act(Action.REMOVE, job.constraint, "projection test")
    records = wait_until(
        lambda: schedd.history(job.constraint, ["ClusterId", "JobStatus", "NoSuchAttr"]),
        STATE_TIMEOUT,
        "history",
    )
    assert records == [{"ClusterId": job.id, "JobStatus": REMOVED}]


def test_full_queue_ad_has_attributes_rsub_polls(schedd: Schedd, kit: JobKit) -> None:
    job = kit.submit_job("true")
    ad = kit.ads(job, [])[0]  # an empty projection is the whole ad
    for attr in (
        "ClusterId",
        "ProcId",
        "JobStatus",
        "EnteredCurrentStatus",
        "HoldReasonCode",
        "RETRIEVED",
        "RsubInstance",
    ):
        assert attr in ad, attr
    assert ad["ServerTime"] is not None
    assert os.path.isabs(str(ad["Iwd"]))


def test_history_by_many_ids_finds_exactly_those_jobs(schedd: Schedd, kit: JobKit) -> None:
    """The poller's history lookup: scattered procs (a member() list), runs (ranges), several clusters."""
    first = kit.submit_job("true", queue="queue 40")
    second = kit.submit_job("true", queue="queue 5")
    wanted = sorted({(first.id, p) for p in (*range(0, 40, 3), 20, 21, 22, 23)} | {(second.id, 4)})
    assert schedd.act(Action.REMOVE, [f"{c}.{p}" for c, p in wanted], "ids test").success == len(wanted)
    constraint = f"{kit.constraint} && ({ids_constraint(wanted)})"

    def found() -> list[tuple[int, int]] | None:
        records = schedd.history(constraint, ["ClusterId", "ProcId"], match=len(wanted) * 2)
        keys = sorted((as_int(a["ClusterId"]), as_int(a["ProcId"])) for a in records)
        return keys if len(keys) >= len(wanted) else None

    assert wait_until(found, STATE_TIMEOUT, "the removed jobs in history") == wanted


def test_edit_of_many_ids_with_one_gone_changes_none(schedd: Schedd, kit: JobKit) -> None:
    """Why a poll's batched mark can fail whole: a job left the queue (a 25.8+ schedd drops
    one once its output is fetched) and the schedd refuses the edit of every job in it."""
    job = kit.submit_job("true", queue="queue 3")
    schedd.act(Action.REMOVE, [f"{job.id}.2"], "gone before the edit")
    wait_until(lambda: len(kit.ads(job, ["ProcId"])) == 2, STATE_TIMEOUT, "job 2 to leave the queue")
    with pytest.raises(ScheddError) as failure:
        schedd.edit(job.job_ids(), "RsubNote", '"marked"')
    assert failure.value.kind is ErrorKind.NOT_FOUND
    assert all("RsubNote" not in ad for ad in kit.ads(job, ["ProcId", "RsubNote"]).values())


def test_retrieve_writes_where_submit_iwd_and_out_are_edited_to(
    schedd: Schedd, kit: JobKit, tmp_path: Path
) -> None:
    """`rsub retrieve --dest`: a spooled job's output follows an edited SUBMIT_Iwd, and an edited Out."""
    gone = tmp_path / "gone"  # where the output was to go, absolute and outside the initialdir
    gone.mkdir()
    job = kit.submit_job(
        """
        echo "to stdout"
        echo "to stderr" >&2
        echo made > result.txt
        """,
        commands={"output": str(gone / "abs_out.txt"), "transfer_output_files": "result.txt",
                  "transfer_output_remaps": f'"result.txt={gone}/result_abs.txt"'},
    )
    schedd.spool(job.result)
    kit.wait_status(job, COMPLETED)
    ad = schedd.query(job.constraint, ["ClusterId", "ProcId", "SUBMIT_Iwd", "Out", "Err",
                                       "SUBMIT_TransferOutputRemaps"])[0]
    assert ad["SUBMIT_Iwd"] == str(job.initialdir)
    dest = tmp_path / "dest"
    dest.mkdir()
    edits = retrieval.redirected(ad, str(dest))
    assert edits["SUBMIT_Iwd"] == quote(str(dest))
    for attr, value in edits.items():
        assert schedd.edit(job.job_ids(), attr, value) == 1
    schedd.retrieve(job.job_ids())
    assert (dest / "abs_out.txt").read_text() == "to stdout\n"
    assert (dest / "err.txt").read_text() == "to stderr\n"
    assert (dest / "result_abs.txt").read_text() == "made\n"
    assert listing(gone) == [] and not (job.initialdir / "err.txt").exists()


def test_request_sizes_with_units_are_stored_in_mb_and_kb(schedd: Schedd, kit: JobKit) -> None:
    """`request_memory = 1GB` is RequestMemory = 1024 (MB); `request_disk = 2G` is RequestDisk = 2097152 (KB)."""
    job = kit.submit_job("true", commands={"request_memory": "1GB", "request_disk": "2G"})
    ad = schedd.query(job.constraint, ["ClusterId", "ProcId", "RequestMemory", "RequestDisk"])[0]
    assert (ad["RequestMemory"], ad["RequestDisk"]) == (1024, 2097152)
    schedd.act(Action.REMOVE, job.constraint)


def test_act_counts_what_matched_not_the_whole_queue(schedd: Schedd, kit: JobKit) -> None:
    """A schedd's TotalJobAds is its whole queue (every user's); rsub's `matched` is the jobs the act found."""
    other = kit.submit_job("sleep 30")
    mine = kit.submit_job("sleep 30", queue="queue 2")
    for job in (other, mine):
        schedd.spool(job.result)
        kit.wait_status(job, IDLE, RUNNING)
    held = schedd.act(Action.HOLD, mine.constraint, "contract matched")
    assert (held.success, held.matched) == (2, 2)
    assert held.as_dict()["job_ads"] == 2
    again = schedd.act(Action.HOLD, [f"{mine.id}.0", f"{mine.id}.7"], "contract matched")
    assert (again.already_done, again.not_found, again.matched) == (1, 1, 1)
    for job in (other, mine):
        schedd.act(Action.REMOVE, job.constraint)


def test_a_reason_with_backslashes_and_other_marks_arrives_as_given(schedd: Schedd, kit: JobKit) -> None:
    """What storable_reason leaves alone must reach the ad unchanged: a Windows path, a regex, tabs, non-ASCII.

    rsub also checks each hold's reason on the ads (reason_missing); this says whether a schedd keeps them.
    """
    job = kit.submit_job("sleep 30")
    schedd.spool(job.result)
    kit.wait_status(job, IDLE, RUNNING)
    given = storable_reason("C:\\data\\new\\t1 \\d+ it's 50% done ü, (ok) [x] {y} $(z)")
    assert given is not None and "\\n" in given  # a backslash before n stays two characters
    assert schedd.act(Action.HOLD, job.constraint, given).success == 1
    ad = wait_until(lambda: (a := kit.ads(job).get(0)) is not None and a.get("JobStatus") == HELD and a,
                    STATE_TIMEOUT, "held")
    assert str(ad.get("HoldReason")).startswith(given)  # a schedd may add " (by user NAME)"
    schedd.act(Action.REMOVE, job.constraint)


def test_a_reason_with_a_double_quote_is_lost_by_the_schedd_and_arrives_once_made_storable(
    schedd: Schedd, kit: JobKit
) -> None:
    """HTCondor leaves HoldReason undefined for a reason with a `"` (condor_hold too), yet reports success."""
    job = kit.submit_job("sleep 30", queue="queue 2")
    schedd.spool(job.result)
    kit.wait_status(job, IDLE, RUNNING)
    given = 'input "run7" is bad'
    held = schedd.act(Action.HOLD, [f"{job.id}.0"], given)
    assert held.success == 1
    ad = wait_until(lambda: (a := kit.ads(job).get(0)) is not None and a.get("JobStatus") == HELD and a,
                    STATE_TIMEOUT, "proc 0 held")
    assert not str(ad.get("HoldReason") or "").startswith("input")  # lost, as on a real schedd
    stored = storable_reason(given)
    assert stored == "input 'run7' is bad"
    assert schedd.act(Action.HOLD, [f"{job.id}.1"], stored).success == 1
    shown = {as_int(a["ProcId"]): a.get("HoldReason") for a in schedd.query(job.constraint, ["ClusterId", "ProcId",
                                                                                               "HoldReason"])}
    assert stored in str(shown[1])
    schedd.act(Action.REMOVE, job.constraint)
