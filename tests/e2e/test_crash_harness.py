"""The kill harness (tools/crash_harness.py), short: rsubd SIGKILLed 20 times at named points, at random
and from outside, under a mixed workload; nothing lost, nothing twice, every output byte for byte.

Also here: minimal reproductions of what the harness found, with the crash sequence that triggered
each, kept as regression tests.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rsubd.platform.crash import ENV
from tests.support.daemon import BIN, Rsubd
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
ZEROS = ("lost", "duplicates", "outputs_missing_or_wrong", "marked_without_output", "schedd_held_spooling",
         "schedd_retrieved_not_marked", "leftover_files", "submits_unfinished", "unexpected_exits")
CONFIG = """
[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.3
early_poll_every = 0.2
"""


@pytest.mark.timeout(300)
def test_a_short_kill_run_loses_nothing_and_duplicates_nothing() -> None:
    seed = os.environ.get("RSUB_CRASH_SEED", "20")
    budget = os.environ.get("RSUB_CRASH_BUDGET", "240")
    # Its own session, so that a harness cut off by the timeout takes its rsubd and clients with it. The budget
    # makes the harness itself stop short of the timeout and say what it was waiting for; its progress lines
    # (stderr) are shown if anything fails.
    harness = subprocess.Popen([sys.executable, str(REPO / "tools" / "crash_harness.py"), "--kills", "20",
                                "--seed", seed, "--budget", budget], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = harness.communicate(timeout=280)
    except subprocess.TimeoutExpired:
        os.killpg(harness.pid, signal.SIGKILL)
        out, err = harness.communicate()
        pytest.fail(f"the harness overran its budget; its last progress lines:\n{err[-4000:]}")
    assert out, err[-4000:]
    report = json.loads(out)
    why = json.dumps({k: report[k] for k in ("seed", "targets_broken", "problems", "cut_short")}, indent=1)
    why += "\n" + "\n".join(err.splitlines()[-15:])
    # A slow machine may spend the crash phase's share of the budget before the 20th kill: fewer kills, still
    # audited. Anything else cut short (a job never final, a release never made) is a finding.
    slow = [line for line in report["cut_short"] if line.startswith("the crash phase: the budget's share")]
    assert report["cut_short"] == slow, why
    assert report["kills"] >= (10 if slow else 20), why
    assert len(report["kills_by_point"]) >= 5, report["kills_by_point"]  # several distinct named points
    assert report["restarts"] == report["runs"] - 1 >= report["kills"]
    assert report["clusters_submitted"] > 0 and report["jobs_seen_by_schedd"] >= report["jobs_submitted"]
    assert report["jobs_retrieved"] > 0 and report["outputs_verified"] == report["jobs_retrieved"]
    assert report["jobs_retrieved"] + report["jobs_removed"] == report["jobs_submitted"], why
    for figure in ZEROS:
        assert report[figure] == 0, f"{figure}: {why}"
    allowed = {"kills", "cut_short"} if slow else set()
    assert set(report["targets_broken"]) <= allowed, why
    assert harness.returncode == (1 if report["targets_broken"] else 0), why


# -- reproductions of what the harness found ------------------------------------------------------


def _start(root: Path, crash_at: str | None, wait: bool = False) -> Rsubd:
    """rsubd with a crash plan; by default not waiting for its socket: it may die in start-up recovery."""
    daemon = Rsubd(root, CONFIG)
    daemon.env.pop(ENV, None)
    if crash_at:
        daemon.env[ENV] = crash_at
    daemon.start(wait=wait)
    return daemon


def _queue(daemon: Rsubd) -> list[tuple[int, int, dict[str, object]]]:
    db = sqlite3.connect(f"file:{daemon.state_dir / 'local' / 'local' / 'queue.db'}?mode=ro", uri=True)
    try:
        clusters = {c: json.loads(a) for c, a in db.execute("SELECT cluster, ad FROM clusters")}
        return [(c, p, {**clusters.get(c, {}), **json.loads(a)}) for c, p, a in db.execute("SELECT cluster, proc, ad FROM jobs")]
    finally:
        db.close()


def _submit_then_crash(root: Path, work: Path, *plans: str) -> tuple[subprocess.Popen[str], Rsubd]:
    """`rsub submit` against rsubd crashing at each plan in turn; returns the client and a clean rsubd."""
    write_job(work, "job.sh", 'cat input.txt; echo "job $1"\n')
    (work / "input.txt").write_text("input\n")
    (work / "job.sub").write_text("executable = job.sh\narguments = $(Process)\ntransfer_input_files = input.txt\n"
                                  "output = out_$(Process).txt\nqueue 2\n")
    daemon = _start(root, plans[0], wait=True)  # the first plan is a submit point: up until the submit
    client = subprocess.Popen([str(BIN / "rsub"), "submit", "--json", "job.sub"], cwd=work, env=daemon.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for plan in plans[1:]:
            assert daemon.proc is not None
            assert daemon.proc.wait(timeout=30) == -9
            daemon = _start(root, plan)
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=30) == -9
        daemon = Rsubd(root, CONFIG)
        daemon.start()
    except BaseException:
        client.kill()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
        raise
    return client, daemon


# Found by the harness: killed between the recovery's remove of an unspooled cluster and the record
# of its replacement, the submit was lost. The replacement is now recorded first.
def test_repro_kill_between_removing_an_unspooled_cluster_and_replacing_it(short_tmp: Path) -> None:
    work = short_tmp / "work"
    work.mkdir()
    # 1: the cluster is recorded, never spooled. 2: recovery removes it (recover.after_schedd's second
    # passage is right after the remove) and dies before recording its replacement.
    client, daemon = _submit_then_crash(short_tmp, work, "submit.after_record", "recover.after_schedd:2")
    try:
        out, err = client.communicate(timeout=90)
        assert client.returncode == 0, err
        cluster = json.loads(out)["cluster"]
        assert daemon.rsub("wait", "--timeout", "60", str(cluster)).returncode == 0
        jobs = daemon.json("status", str(cluster))["jobs"]
        assert [j["state"] for j in jobs] == ["retrieved", "retrieved"], [(j["state"], j["remove_reason"]) for j in jobs]
        assert (work / "out_1.txt").read_text() == "input\njob 1\n"
    finally:
        daemon.stop()


# Found by the harness: a resubmission cut between its submit and its spool was reported and its jobs
# left held with code 16. It is now submitted again (up to three times, then removed and reported).
def test_repro_resubmission_cut_before_spool_fails_and_leaves_jobs_held(short_tmp: Path) -> None:
    work = short_tmp / "work"
    work.mkdir()
    # 1: the cluster is recorded, never spooled. 2: recovery replaces it, and the resubmission dies at the
    # same point (its first passage in that run: the client's retries are told to wait meanwhile).
    client, daemon = _submit_then_crash(short_tmp, work, "submit.after_record", "submit.after_record")
    try:
        _, err = client.communicate(timeout=90)
        # Never spooled (no StageInStart): a spooled job is still held for a second, as on a real schedd.
        held = [(c, p) for c, p, ad in _queue(daemon)
                if ad.get("JobStatus") == 5 and ad.get("HoldReasonCode") == 16 and ad.get("StageInStart") is None]
        assert held == [], f"left held with code 16: {held}; client exit {client.returncode}: {err.strip()}"
        assert client.returncode == 0, err
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()
