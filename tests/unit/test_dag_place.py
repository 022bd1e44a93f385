"""A DAG's files home from its staging directory, without clobbering; DAGMan that cannot start, said."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from rsubd.backends.schedd import Action, JobStatus
from rsubd.dag import discover, stage
from rsubd.polling.dagpoll import DagWatch
from rsubd.services import dagretrieve

DIAMOND = Path(__file__).resolve().parents[1] / "data" / "dag" / "diamond"


def staged(tmp_path: Path, *, b_dir: bool = False) -> tuple[Path, Path]:
    dag = tmp_path / "d"
    shutil.copytree(DIAMOND, dag)
    if b_dir:
        (dag / "b").mkdir()
        (dag / "b.sub").write_text((dag / "node.sub").read_text().replace(
            "queue", "initialdir = b\nqueue").replace("input_$(node).txt", "../input_$(node).txt"))
        (dag / "probe.dag").write_text((dag / "probe.dag").read_text().replace("JOB B node.sub", "JOB B b.sub"))
    plan = discover.plan(dag / "probe.dag")
    written = stage.write(plan, tmp_path / "stage", dagman="/usr/bin/condor_dagman", submitted_at=time.time())
    return dag, written.directory


def test_each_file_goes_to_its_nodes_home_and_the_lock_and_unchanged_inputs_stay_behind(tmp_path: Path) -> None:
    dag, where = staged(tmp_path, b_dir=True)
    for name in ("out_A.stdout", "out_B.stdout", "out_C.try0.stdout", "probe.dag.dagman.out", "probe.dag.rescue001",
                 "made_by_a_node.txt", "probe.dag.lock"):
        (where / name).write_text(name)
    (where / "probe.dag.dagman.log.rsub-1.0").write_text("a per-proc log, merged already")
    kept = dagretrieve.place(where)
    assert kept == []
    assert (dag / "b" / "out_B.stdout").read_text() == "out_B.stdout"  # B's initialdir
    for name in ("out_A.stdout", "out_C.try0.stdout", "probe.dag.dagman.out", "probe.dag.rescue001",
                 "made_by_a_node.txt"):
        assert (dag / name).read_text() == name
    assert not (dag / "probe.dag.lock").exists() and not (dag / "probe.dag.dagman.log.rsub-1.0").exists()
    assert (dag / "node.sh").read_bytes() == (DIAMOND / "node.sh").read_bytes()  # the staged copy stayed behind
    assert (where / "node.sh").exists()
    dagretrieve.finish(where)
    assert not where.exists()


def test_a_users_edit_since_the_submit_keeps_its_name_and_an_old_output_is_replaced(tmp_path: Path) -> None:
    dag, where = staged(tmp_path)
    (dag / "out_A.txt").write_text("the user's edit, after the submit")
    old = dag / "out_B.txt"
    old.write_text("last week's output")
    os.utime(old, (time.time() - 86400, time.time() - 86400))
    (dag / "out_D.txt").write_text("same")
    for name, text in (("out_A.txt", "the DAG's"), ("out_B.txt", "the DAG's B"), ("out_D.txt", "same")):
        (where / name).write_text(text)
    kept = dagretrieve.place(where)
    assert (dag / "out_A.txt").read_text() == "the user's edit, after the submit"
    assert len(kept) == 1 and Path(kept[0]).name.startswith("out_A.txt.rsub-refetched-")
    assert Path(kept[0]).read_text() == "the DAG's"
    assert (dag / "out_B.txt").read_text() == "the DAG's B"
    assert (dag / "out_D.txt").read_text() == "same" and not (where / "out_D.txt").exists()
    assert dagretrieve.place(where) == []  # a repeat (after a crash) finds everything home


class Schedd:
    name = "local"

    def __init__(self) -> None:
        self.acts: list[tuple[Action, list[str], str | None]] = []

    def act(self, action: Action, jobs: list[str], reason: str | None = None) -> Any:
        self.acts.append((action, jobs, reason))


def test_dagman_that_never_starts_is_said_and_held(tmp_path: Path) -> None:
    schedd = Schedd()
    watch = DagWatch(None, schedd, count=lambda *_: None, clock=time.time)  # type: ignore[arg-type]
    ad = {"ClusterId": 7, "JobStatus": JobStatus.IDLE, "NumJobStarts": 3}
    message = watch._start_failure(7, ad)
    assert message is not None and "cannot run the condor_dagman of [[schedd]] dagman (exit 127" in message
    assert "[[schedd]] dagman" in message and schedd.acts[0][:2] == (Action.HOLD, ["7.0"])
    running = {**ad, "JobStatus": JobStatus.RUNNING, "DAG_NodesTotal": 4}  # DAGMan reported: it runs
    assert watch._start_failure(7, running) is None
    assert watch._start_failure(7, {**ad, "NumJobStarts": 1}) is None


def test_the_newest_rescue_file_is_the_one_rerun(tmp_path: Path) -> None:
    from rsubd.services.dagrescue import latest_rescue

    dag = tmp_path / "work.dag"
    dag.write_text("JOB A a.sub\n")
    assert latest_rescue(dag) is None
    for n in ("001", "002", "010"):
        (tmp_path / f"work.dag.rescue{n}").write_text("DONE A\n")
    (tmp_path / "work.dag.rescue011.rsub-refetched-1").write_text("not a rescue file")
    (tmp_path / "other.dag.rescue099").write_text("another DAG's")
    assert latest_rescue(dag) == tmp_path / "work.dag.rescue010"


def test_a_file_that_cannot_go_home_stays_in_staging_and_the_others_go(tmp_path: Path) -> None:
    import pytest

    dag, where = staged(tmp_path, b_dir=True)
    (where / "out_A.txt").write_text("A")
    (where / "out_B.stdout").write_text("B")
    shutil.rmtree(dag / "b")
    (dag / "b").write_text("a file where B's initialdir was")
    with pytest.raises(OSError, match=r"1 file\(s\) could not be moved home: out_B.stdout"):
        dagretrieve.place(where)
    assert (dag / "out_A.txt").read_text() == "A" and (where / "out_B.stdout").read_text() == "B"


def test_files_that_could_not_go_home_are_tried_again_at_each_poll_until_they_are(
    tmp_path: Path,
) -> None:
    from rsubd.ledger.store import Ledger

    dag, where = staged(tmp_path, b_dir=True)
    (where / "out_B.stdout").write_text("B")
    shutil.rmtree(dag / "b")
    (dag / "b").write_text("a file where B's initialdir was")
    ledger = Ledger(tmp_path / "state" / "ledger.db")
    try:
        row = ledger.add_submit_intent(request_id="r", schedd="local", tag="t", description="queue\n",
                                       submitted_description="queue\n", submit_dir=str(dag), submit_file="probe.dag")
        ledger.record_submitted(row, 7, [(0, str(where))])
        ledger.add_dag(row, schedd="local", cluster=7, dag_file=str(dag / "probe.dag"), staging_dir=str(where),
                       nodes=[])
        now = [1000.0]
        watch = DagWatch(ledger, Schedd(), count=lambda *_: None, clock=lambda: now[0])  # type: ignore[arg-type]
        from rsubd.polling import dagpoll

        assert dagpoll._place(ledger, ledger.active_dags("local")[7]) is False
        error = ledger.dag_by_cluster("local", 7)["error"]  # type: ignore[index]
        assert "could not all be moved home" in error and "tried again" in error
        generation = ledger.generation()
        watch.clean()  # the directory is still in the way: kept, and the error with it, and nothing written
        assert (where / "out_B.stdout").exists() and ledger.dag_by_cluster("local", 7)["error"] == error  # type: ignore[index]
        assert ledger.generation() == generation  # the kept tracked jobs and pages stay good
        (dag / "b").unlink()
        (dag / "b").mkdir()  # the user moves the file out of the way
        watch.clean()  # not yet: the next try is a minute after the last
        assert not (dag / "b" / "out_B.stdout").exists()
        now[0] += dagpoll.PLACE_RETRY_FIRST
        watch.clean()
        assert (dag / "b" / "out_B.stdout").read_text() == "B"
        assert ledger.dag_by_cluster("local", 7)["error"] is None  # type: ignore[index]
    finally:
        ledger.close()
