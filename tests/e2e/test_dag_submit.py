"""DAGs through a real rsubd on the embedded scheduler: rsub submit work.dag, tracking, every node's output home."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until

pytestmark = pytest.mark.e2e
DIAMOND = Path(__file__).resolve().parents[1] / "data" / "dag" / "diamond"
OUTPUTS = {"out_A.txt", "out_A.stdout", "out_A.stderr", "out_B.txt", "out_B.stdout", "out_B.stderr",
           "out_C.try0.stdout", "out_C.try0.stderr", "out_C.try1.stdout", "out_C.try1.stderr", "out_C.txt",
           "out_D.txt", "out_D.stdout", "out_D.stderr", "probe.dag.dagman.out", "probe.dag.nodes.log",
           "probe.dag.metrics", "probe.dag.lib.out", "probe.dag.lib.err", "probe.dag.dagman.log"}


def diamond(workdir: Path) -> Path:
    dag = workdir / "dag"
    shutil.copytree(DIAMOND, dag)
    return dag


def submit(rsubd: Rsubd, where: Path, *args: str) -> int:
    result = rsubd.rsub("submit", "--json", *args, cwd=where)
    assert result.returncode == 0, result.stderr
    import json

    cluster: int = json.loads(result.stdout)["cluster"]
    return cluster


def dag_of(rsubd: Rsubd, ident: str) -> dict[str, Any]:
    jobs = rsubd.json("status", ident, "--nodes")["jobs"]
    assert len(jobs) == 1 and "dag" in jobs[0], jobs
    dag: dict[str, Any] = jobs[0]["dag"]
    return dag


def test_the_diamond_with_a_flaky_node_comes_home_node_by_node(rsubd: Rsubd, workdir: Path) -> None:
    dag = diamond(workdir)
    before = {p.name for p in dag.iterdir()}
    cluster = submit(rsubd, dag, "probe.dag")
    waited = rsubd.rsub("wait", str(cluster), timeout=120)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert f"output in {dag}" in waited.stdout  # the DAG's directory, not rsub's staging one
    home = {p.name for p in dag.iterdir()} - before
    assert home == OUTPUTS  # every attempt of C, DAGMan's own files; no lock file, nothing of rsub's
    assert "upstream out_B.txt" in (dag / "out_D.txt").read_text()  # D read B's output in the one spool dir
    # The staging directory goes once the DAGMan job is marked (a repeated retrieve would write into it).
    wait_until(lambda: not any((rsubd.state_dir / "dags").iterdir()), 30, "the staging directory gone")
    info = dag_of(rsubd, f"{cluster}")
    assert info["nodes"] == {"total": 4, "done": 4, "running": 0, "idle": 0, "held": 0, "failed": 0, "futile": 0}
    assert info["dag_status"] == 0 and info["home"]
    nodes = {n["name"]: n for n in info["node_list"]}
    assert [a["exit_code"] for a in nodes["C"]["attempts"]] == [7, 0]  # RETRY C 2: failed once, then done
    assert {n: v["state"] for n, v in nodes.items()} == dict.fromkeys("ABCD", "done")
    shown = rsubd.rsub("status", f"{cluster}@local:C")
    assert shown.returncode == 0 and "exit 7; " in shown.stdout and "C " in shown.stdout, shown.stdout
    assert "4 nodes: 4 done, 0 running" in shown.stdout
    import json

    lines = [line for line in rsubd.log.read_text().splitlines() if line.startswith("{")]
    polls = [e for e in map(json.loads, lines) if e.get("event") == "poll"]
    assert polls and all(e["poll_queries"] == 1 for e in polls)  # the nodes ride in the poll's one query
    assert sum(e["poll_history_calls"] for e in polls) <= len(polls)


def test_a_missing_input_is_refused_before_anything_is_sent(rsubd: Rsubd, workdir: Path) -> None:
    dag = diamond(workdir)
    (dag / "input_A.txt").unlink()
    result = rsubd.rsub("submit", "probe.dag", cwd=dag)
    assert result.returncode == 5
    assert "input_A.txt does not exist" in result.stderr
    assert rsubd.json("status")["jobs"] == []
    assert not (rsubd.state_dir / "dags").exists() or not any((rsubd.state_dir / "dags").iterdir())


def test_a_failed_dag_brings_its_rescue_home_and_the_rescue_reruns_only_what_is_not_done(
        rsubd: Rsubd, workdir: Path) -> None:
    dag = diamond(workdir)
    flaky = (dag / "flaky.sub").read_text()
    (dag / "flaky.sub").write_text(flaky.replace("$(node) $(RETRY) $(greeting)", "$(node) 0 $(greeting)"))
    cluster = submit(rsubd, dag, "probe.dag")
    waited = rsubd.rsub("wait", str(cluster), timeout=120)
    assert waited.returncode == 13, waited.stdout + waited.stderr  # DAGMan exited 1: the DAG failed
    info = dag_of(rsubd, str(cluster))
    assert info["dag_status"] == 2 and info["nodes"]["done"] == 2 and info["nodes"]["failed"] == 1
    assert info["nodes"]["futile"] == 1
    assert {n["name"]: n["state"] for n in info["node_list"]} == {"A": "done", "B": "done", "C": "failed",
                                                                  "D": "not run"}
    rescue = (dag / "probe.dag.rescue001").read_text()
    assert "DONE A" in rescue and "DONE B" in rescue and not (dag / "out_D.txt").exists()
    (dag / "flaky.sub").write_text(flaky)  # the fix
    (dag / "out_B.txt").write_text("B's output, as the first run left it\n")
    # `rsub resubmit` of a DAG's id runs its rescue DAG, as `rsub submit --rescue` does.
    for args in ([str(cluster), "--failed"], [f"{cluster}.0"]):
        mixed = rsubd.rsub("resubmit", *args)
        assert mixed.returncode == 2 and "a DAG is resubmitted alone and whole" in mixed.stderr, mixed.stderr
    # A selector passes over the DAGMan job (it exited 1): it is never run again as a plain job.
    selected = rsubd.rsub("resubmit", "--failed")
    assert selected.returncode == 4 and "no job to resubmit" in selected.stderr, selected.stderr
    import json

    resubmitted = rsubd.rsub("resubmit", "--json", str(cluster), cwd=dag)
    assert resubmitted.returncode == 0, resubmitted.stderr
    made = json.loads(resubmitted.stdout)["clusters"]
    assert len(made) == 1 and made[0]["rescue_of"] == cluster
    again = int(made[0]["cluster"])
    assert rsubd.rsub("wait", str(again), timeout=120).returncode == 0
    second = dag_of(rsubd, str(again))
    assert second["dag_status"] == 0 and second["nodes"]["done"] == 4 and second["rescue_of"] == cluster
    ran = {n["name"] for n in second["node_list"] if n["attempts"]}
    assert ran == {"C", "D"}  # A and B were DONE in the rescue file
    assert "upstream out_B.txt: B's output, as the first run left it" in (dag / "out_D.txt").read_text()
    refused = rsubd.rsub("submit", "--rescue", str(again), cwd=dag)
    assert refused.returncode == 2 and f"DAG {again} succeeded: nothing to rerun" in refused.stderr


def slow(dag: Path, seconds: int) -> None:
    (dag / "node.sh").write_text((dag / "node.sh").read_text().replace("exit 0", f"sleep {seconds}\nexit 0"))


def test_removing_a_running_dag_removes_its_nodes_and_brings_home_what_it_did(rsubd: Rsubd, workdir: Path) -> None:
    dag = diamond(workdir)
    slow(dag, 30)
    cluster = submit(rsubd, dag, "probe.dag")
    wait_until(lambda: dag_of(rsubd, str(cluster))["nodes"]["running"], 60, "node A running")
    watched = rsubd.rsub("watch", str(cluster), "--timeout", "1")
    assert "DAG 4 nodes: 0 done, 1 running" in watched.stdout, watched.stdout  # one row, with node progress
    why = rsubd.json("why", f"{cluster}.0")["jobs"][0]["says"]  # the DAGMan job needs no slot: its nodes do
    assert why[0].startswith("running: the DAGMan job of ") and "--nodes" in why[0], why
    assert rsubd.rsub("rm", str(cluster)).returncode == 0
    assert rsubd.rsub("wait", str(cluster), timeout=60).returncode == 12  # removed: the wait ends once it is home
    info = dag_of(rsubd, str(cluster))
    assert info["home"] and info["nodes"]["running"] == 0 and info["dag_status"] == 4
    assert (dag / "probe.dag.rescue001").exists() and (dag / "probe.dag.dagman.out").exists()
    assert not (dag / "probe.dag.lock").exists()
    with sqlite3.connect(rsubd.state_dir / "ledger.db") as db:
        assert db.execute("SELECT state FROM jobs WHERE cluster = ?", (cluster,)).fetchone()[0] == "removed"


def test_hold_and_release_of_a_running_dag(rsubd: Rsubd, workdir: Path) -> None:
    dag = diamond(workdir)
    slow(dag, 1)
    cluster = submit(rsubd, dag, "probe.dag")
    wait_until(lambda: dag_of(rsubd, str(cluster))["nodes"]["running"], 60, "a node running")
    assert rsubd.rsub("hold", str(cluster)).returncode == 0
    wait_until(lambda: rsubd.states(str(cluster)) == {f"{cluster}.0@local": "held"}, 30, "the DAG held")
    assert rsubd.rsub("release", str(cluster)).returncode == 0
    assert rsubd.rsub("wait", str(cluster), timeout=120).returncode == 0
    info = dag_of(rsubd, str(cluster))
    assert info["dag_status"] == 0 and info["nodes"]["done"] == 4
    assert OUTPUTS - {p.name for p in dag.iterdir()} == set()


NABBIT = Path(__file__).resolve().parents[1] / "data" / "dag" / "dagnabbit"


def test_a_dagnabbit_file_runs_its_stages_in_order_with_scripts_and_inputs(rsubd: Rsubd, workdir: Path) -> None:
    """jobsub_lite's own dagTest8 shape: serial, serial inside parallel, prescript/postscript, -f and --tar."""
    work = workdir / "nab"
    shutil.copytree(NABBIT, work)
    rsubd.env["SUBMIT_FLAGS"] = "--memory 100MB"
    result = rsubd.rsub("submit", "--dag", "--maxConcurrent", "2", f"file://{work}/dagTest8.dagnabbit", cwd=work)
    assert result.returncode == 0, result.stderr
    cluster = int(result.stdout.split(" as cluster ")[1].split()[0])
    assert rsubd.rsub("wait", str(cluster), timeout=120).returncode == 0
    info = dag_of(rsubd, str(cluster))
    assert info["nodes"]["done"] == 6 and info["dag_status"] == 0
    home = Path(info["dir"])
    assert home.parent == rsubd.state_dir / "jobs"
    outs = {p.parent.name: p.read_text() for p in home.glob("stage_*/stage_*.out")}
    assert outs["stage_1"].startswith("job A: first") and outs["stage_6"].startswith("job E")
    assert outs["stage_3"].startswith("job C: the data from the tarball")  # -f and --tar, in a DAG node
    assert outs["stage_5"].startswith("job C: the data from the tarball")
    done = {n["name"]: n["attempts"][-1]["completed"] for n in info["node_list"]}
    started = {n["name"]: n["attempts"][-1]["started"] for n in info["node_list"]}
    for parent, child in [("stage_1", "stage_2"), ("stage_2", "stage_3"), ("stage_3", "stage_4"),
                          ("stage_2", "stage_5"), ("stage_4", "stage_6"), ("stage_5", "stage_6")]:
        assert done[parent] <= started[child], (parent, child)
    assert (home / "pre.log").read_text().split("\n")[:2] == ["stage_1 init", "stage_2 init"]
    assert sorted((home / "post.log").read_text().split("\n")[:-1]) == sorted(
        f"{s} post returned 0" for s in ("stage_1", "stage_2", "stage_3", "stage_5", "stage_6"))
    dag = (home / "dagTest8.dag").read_text()
    assert "PARENT stage_4 stage_5 CHILD stage_6" in dag and "SCRIPT PRE stage_1" in dag


def test_a_dry_run_shows_the_dagman_job_and_sends_nothing(rsubd: Rsubd, workdir: Path) -> None:
    dag = diamond(workdir)
    result = rsubd.rsub("submit", "--dry-run", "--maxConcurrent", "2", "probe.dag", cwd=dag)
    assert result.returncode == 0, result.stderr
    assert "universe = scheduler" in result.stdout and "-MaxJobs 2" in result.stdout
    assert "JobStatus == 3 && RETRIEVED =!= true" in result.stdout  # a removed DAG stays until its files are home
    assert "4 node(s) and 11 file(s) would be spooled" in result.stderr
    assert rsubd.json("status")["jobs"] == []
    assert not any((rsubd.state_dir / "dags").iterdir())
    plain = rsubd.rsub("submit", "--maxConcurrent", "2", "node.sub", cwd=dag)
    assert plain.returncode == 2 and "--maxConcurrent limits a DAG's node jobs" in plain.stderr


def test_a_dag_submit_cut_after_the_spool_still_brings_every_file_home(short_tmp: Path, workdir: Path) -> None:
    """rsubd killed after the schedd has the DAG but before the DAG's record: the retry and the poll adopt it."""
    import subprocess

    from rsubd.platform.crash import ENV
    from tests.support.daemon import BIN

    dag = diamond(workdir)
    daemon = Rsubd(short_tmp)
    daemon.env[ENV] = "submit.after_spooled"
    daemon.start()
    client = subprocess.Popen([str(BIN / "rsub"), "submit", "--json", "probe.dag"], cwd=dag, env=daemon.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert daemon.proc is not None
    daemon.proc.wait(timeout=30)
    daemon.env.pop(ENV)
    daemon.start()
    try:
        out, err = client.communicate(timeout=90)
        assert client.returncode == 0, err
        import json

        cluster = json.loads(out)["cluster"]
        assert daemon.rsub("wait", str(cluster), timeout=120).returncode == 0
        assert {p.name for p in dag.iterdir()} >= OUTPUTS
        assert dag_of(daemon, str(cluster))["nodes"]["done"] == 4
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()
