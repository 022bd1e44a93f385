"""Looking at jobs the way jobsub users do: q, status and history with their filters, fetchlog,
hold/release/rm by cluster and by constraint, completion scripts and help, through a real rsubd.

One rsubd with two embedded schedds serves the whole module; the tests run in order on its jobs:
A, a jobsub-style cluster of two short jobs on `local` (retrieved before the first test),
B, two long jobs on `other` (priority 7, +RsubTest = "b"), and C, two long jobs on `local`.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import BIN, Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e

CONFIG = """\
[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.2

[[schedd]]
name = "other"
backend = "local"
poll_interval = 0.2
"""
JOBSUB_HEADER = ["JOBID", "OWNER", "SUBMITTED", "RUN_TIME", "ST", "PRI", "SIZE", "CMD", "EXIT"]
VIEW_KEYS = {"id", "cluster", "proc", "schedd", "state", "job_status", "exit_code", "exit_signal", "hold_reason",
             "hold_code", "hold_hint", "remove_reason", "error", "iwd", "submitted_at", "completed_at",
             "retrieved_at", "needs_attention", "attention", "retrieve_failures", "retrieve_retry_at",
             "retrieved_to", "jobsub", "usage", "replaces", "replaced_by", "auto_releases"}
JOBSUB_KEYS = {"owner", "status", "run_time", "command", "priority", "size", "group"}


class World:
    def __init__(self, daemon: Rsubd, work: Path) -> None:
        self.daemon, self.work = daemon, work
        self.a = self.b = self.c = 0
        self.a_dir = Path()

    def rsub(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.daemon.rsub(*args, cwd=self.work)

    def json(self, *args: str) -> Any:
        return self.daemon.json(*args, cwd=self.work)

    def ids(self, *args: str) -> list[str]:
        return [j["id"] for j in self.json(*args)["jobs"]]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = Path(tempfile.mkdtemp(prefix="rsub-jv-", dir="/tmp"))
    daemon = Rsubd(root, CONFIG)
    daemon.start()
    try:
        work = root / "work"
        work.mkdir()
        w = World(daemon, work)
        write_job(work, "run.sh", 'sleep 1\necho "out $PROCESS $1"\necho "err $PROCESS" >&2\n')
        write_job(work, "sleep.sh", "sleep 120\n")
        (work / "b.sub").write_text('executable = sleep.sh\npriority = 7\n+RsubTest = "b"\nqueue 2\n')
        (work / "c.sub").write_text("executable = sleep.sh\nrequest_memory = 512\nqueue 2\n")
        a = w.rsub("submit", "-N", "2", "--memory", "2GB", f"file://{work}/run.sh", "hello")
        assert a.returncode == 0, a.stderr
        w.a = int(re.search(r"to cluster (\d+)", a.stdout).group(1))  # type: ignore[union-attr]
        w.a_dir = Path(re.search(r"^output will be in (.+)$", a.stdout, re.MULTILINE).group(1))  # type: ignore[union-attr]
        w.b = w.json("submit", "--schedd", "other", "b.sub")["cluster"]
        w.c = w.json("submit", "c.sub")["cluster"]
        waited = w.rsub("wait", "--timeout", "30", f"{w.a}@local")
        assert waited.returncode == 0, waited.stderr
        wait_until(lambda: {j["state"] for j in w.json("q")["jobs"]} == {"running"}
                   and len(w.json("q")["jobs"]) == 4, 20, "B and C to run")
        yield w
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()
        shutil.rmtree(root, ignore_errors=True)


def plain_rows(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    assert result.returncode == 0, result.stderr
    assert "\033[" not in result.stdout  # no colour off a terminal
    return [line.split("\t") for line in result.stdout.splitlines()]


# -- rsub q ------------------------------------------------------------------------------------


def test_q_prints_jobsub_columns(world: World) -> None:
    rows = plain_rows(world.rsub("q"))
    assert rows[0] == JOBSUB_HEADER
    by_id = {r[0]: r for r in rows[1:]}
    assert set(by_id) == {f"{world.b}.{p}@other" for p in (0, 1)} | {f"{world.c}.{p}@local" for p in (0, 1)}
    owner = world.json("q")["jobs"][0]["jobsub"]["owner"]
    for p in (0, 1):
        b = by_id[f"{world.b}.{p}@other"]
        assert b[1] == owner and re.fullmatch(r"\d\d/\d\d \d\d:\d\d", b[2])
        assert re.fullmatch(r"\d+\+\d\d:\d\d:\d\d", b[3])
        assert b[4:] == ["R", "7", "-", "sleep.sh", "-"]
        assert by_id[f"{world.c}.{p}@local"][4:] == ["R", "0", "512", "sleep.sh", "-"]


def test_q_json_shape(world: World) -> None:
    result = world.json("q")
    assert result["version"] == 1 and set(result) == {"version", "jobs", "total", "truncated", "schedds"}
    assert result["total"] == 4 and result["truncated"] is False
    assert set(result["schedds"]) == {"local", "other"}
    for job in result["jobs"]:
        assert set(job) == VIEW_KEYS and set(job["jobsub"]) == JOBSUB_KEYS
        js = job["jobsub"]
        assert js["status"] == "R" and js["command"] == "sleep.sh"
        assert isinstance(js["run_time"], float) and js["run_time"] >= 0
        assert js["priority"] == (7 if job["schedd"] == "other" else 0)


def test_q_and_status_filters(world: World) -> None:
    b = [f"{world.b}.{p}@other" for p in (0, 1)]
    c = [f"{world.c}.{p}@local" for p in (0, 1)]
    a = [f"{world.a}.{p}@local" for p in (0, 1)]
    assert world.ids("q", "--schedd", "other") == b
    assert world.ids("q", "--schedd", "local", "--cluster", str(world.c)) == c
    assert world.ids("q", "--state", "idle") == []
    assert world.ids("q", "--state", "running", "--state", "held") == c + b
    assert world.ids("q", "--state", "retrieved") == []  # q shows active jobs only
    assert world.ids("q", "--since", "1h") == c + b
    assert world.ids("q", "--older-than", "1h") == []
    assert world.ids("q", "--limit", "1") == [c[1]]  # a page cut short keeps the newest job
    assert world.ids("status", "--state", "retrieved") == a
    assert world.ids("status", "--schedd", "local", "--state", "retrieved", "--state", "running") == a + c
    assert world.ids("status", f"{world.c}@local", "--state", "held") == []  # known job, filtered out: no error
    assert world.rsub("status", "999", "--state", "held").returncode == 4
    assert world.rsub("q", "--schedd", "nowhere").returncode == 4
    bad = world.rsub("q", "--since", "2x")
    assert bad.returncode == 2 and "not an age" in bad.stderr
    assert world.rsub("q", "--state", "sleeping").returncode == 2
    # rsub status keeps its own columns.
    rows = plain_rows(world.rsub("status", str(world.a) + "@local"))
    assert rows[0] == ["JOB", "STATE", "EXIT", "SUBMITTED", "NOTE"]
    assert [r[:3] for r in rows[1:]] == [[i, "retrieved", "0"] for i in a]


# -- hold, release and rm: by cluster and by constraint -----------------------------------------


def test_rm_a_cluster_reports_counts(world: World) -> None:
    removed = world.rsub("rm", "--reason", "not needed", str(world.c), "--schedd", "local")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "local: remove: 2 job(s) matched; 2 success"
    assert world.rsub("wait", "--timeout", "20", f"{world.c}@local").returncode == 12  # removed


def test_act_by_constraint(world: World) -> None:
    b = [f"{world.b}.{p}@other" for p in (0, 1)]
    held = world.rsub("hold", "--constraint", 'RsubTest == "b"', "--schedd", "other", "--reason", "by constraint")
    assert held.returncode == 0, held.stderr
    assert held.stdout.strip() == "other: hold: 2 job(s) matched; 2 success"
    wait_until(lambda: world.ids("q", "--state", "held") == b, 15, "B to be held")
    assert "by constraint" in world.json("status", b[0])["jobs"][0]["hold_reason"]
    again = world.rsub("hold", "--constraint", "JobPrio == 7", "--schedd", "other")
    assert again.stdout.strip() == "other: hold: 2 job(s) matched; 2 already done"
    # The default schedd is the first, `local`, where no job of B is.
    elsewhere = world.rsub("hold", "--constraint", 'RsubTest == "b"')
    assert elsewhere.stdout.strip() == "local: hold: 0 job(s) matched; nothing to do"

    released = world.json("release", "--constraint", "true", "--schedd", "other")
    assert set(released) == {"version", "action", "constraint", "schedds"} and released["version"] == 1
    assert re.fullmatch(r'\(RsubInstance == "[0-9a-f]{32}"\) && \(true\)', released["constraint"])
    assert released["schedds"]["other"] == {"success": 2, "not_found": 0, "already_done": 0, "bad_status": 0,
                                            "error": 0, "permission_denied": 0, "job_ads": 2}

    for expr, words in (("true) || (true", "unbalanced"), ("x ==== 1", "invalid constraint"),
                        ("JobStatus ==", "'JobStatus ==': the ClassAd parser says: Unable to parse"),
                        ("  ", "needs a ClassAd expression"), ("a /* ) */", "comments")):
        refused = world.rsub("rm", "--constraint", expr, "--schedd", "other")
        assert refused.returncode == 2 and words in refused.stderr, (expr, refused.stderr)
    both = world.rsub("rm", "--constraint", "true", b[0])
    assert both.returncode == 2 and "not both" in both.stderr
    assert world.rsub("rm").returncode == 2
    assert world.rsub("rm", "--constraint", "true", "--schedd", "nowhere").returncode == 4

    removed = world.rsub("rm", "--constraint", "ProcId >= 0", "--schedd", "other")
    assert removed.stdout.strip() == "other: remove: 2 job(s) matched; 2 success"
    assert world.rsub("wait", "--timeout", "20", f"{world.b}@other").returncode == 12  # removed


# -- rsub history ------------------------------------------------------------------------------


def test_history_newest_first_with_letters(world: World) -> None:
    result = world.json("history")
    assert result["version"] == 1
    jobs = result["jobs"]
    # B was removed last, then C; A was retrieved first. Within a cluster the order is each
    # proc's own finish time (A's two procs may be retrieved by different polls), so only the
    # clusters' order is fixed.
    ids = [j["id"] for j in jobs]
    assert [i.split(".")[0] + "@" + i.split("@")[1] for i in ids] == [
        f"{world.b}@other"] * 2 + [f"{world.c}@local"] * 2 + [f"{world.a}@local"] * 2
    assert sorted(ids) == sorted([f"{world.b}.{p}@other" for p in (0, 1)] + [f"{world.c}.{p}@local" for p in (0, 1)]
                                 + [f"{world.a}.{p}@local" for p in (0, 1)])
    assert [j["jobsub"]["status"] for j in jobs] == list("XXXXDD")
    a = jobs[4]["jobsub"]
    assert a["command"] == "run.sh" and a["size"] == "2048" and a["priority"] == 0
    assert a["run_time"] is not None and a["run_time"] >= 0.5  # the script sleeps 1 s
    # (A's two procs in either order, as above: each is placed by its own finish time)
    assert sorted(world.ids("history", "--state", "retrieved")) == [f"{world.a}.{p}@local" for p in (0, 1)]
    assert world.ids("history", "--schedd", "other", "--cluster", str(world.b)) == [f"{world.b}.{p}@other" for p in (0, 1)]
    assert world.ids("history", "--state", "running") == []
    rows = plain_rows(world.rsub("history", "--state", "retrieved"))
    assert rows[0] == JOBSUB_HEADER
    assert [r[4:] for r in rows[1:]] == [["D", "0", "2048", "run.sh", "0"]] * 2
    assert world.json("q")["jobs"] == []


# -- rsub fetchlog -----------------------------------------------------------------------------


def archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert all(m.isfile() and not m.name.startswith("/") and ".." not in m.name for m in members)
        return {m.name: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]


def submitted_description(world: World, schedd: str, cluster: int) -> bytes:
    with sqlite3.connect(f"file:{world.daemon.state_dir / 'ledger.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT submitted_description FROM clusters WHERE schedd = ? AND cluster = ?",
                         (schedd, cluster)).fetchone()
    return str(row[0]).encode()


def test_fetchlog_packs_a_jobs_files(world: World) -> None:
    a = world.a
    fetched = world.rsub("fetchlog", f"{a}.1@local")
    assert fetched.returncode == 0, fetched.stderr
    path = world.work / f"{a}.1@local.tgz"
    files = archive(path)
    assert files == {
        "job.sub": submitted_description(world, "local", a),
        f"{a}.1.out": (world.a_dir / f"{a}.1.out").read_bytes(),
        f"{a}.1.err": (world.a_dir / f"{a}.1.err").read_bytes(),
        f"{a}.log": (world.a_dir / f"{a}.log").read_bytes(),
    }
    assert files[f"{a}.1.out"] == b"out 1 hello\n" and files[f"{a}.1.err"] == b"err 1\n"
    assert b"rsub_wrapper.sh" in files["job.sub"] and b"queue 2" in files["job.sub"]
    # The job event log (`log = $(Cluster).log`) holds both procs' events, not only the last one retrieved.
    for proc in (0, 1):
        assert f"005 ({a:03d}.{proc:03d}.000) ".encode() in files[f"{a}.log"]
    assert not list(world.a_dir.glob(f"{a}.log.rsub-*"))
    assert f"wrote {path.name}" in fetched.stdout or f"wrote {path}" in fetched.stdout


def test_fetchlog_a_cluster_to_dest_with_json(world: World) -> None:
    a, dest = world.a, world.work / "logs" / "deep"
    result = world.json("fetchlog", f"{a}@local", "--dest", str(dest))
    path = dest / f"{a}@local.tgz"
    assert result == {"version": 1, "archive": str(path), "members": ["job.sub", f"{a}.0.out", f"{a}.0.err",
                                                                      f"{a}.log", f"{a}.1.out", f"{a}.1.err"],
                      "missing": []}
    files = archive(path)
    assert files[f"{a}.0.out"] == b"out 0 hello\n" and files[f"{a}.1.err"] == b"err 1\n"
    assert not list(dest.glob(".*partial"))


def test_fetchlog_errors(world: World) -> None:
    unknown = world.rsub("fetchlog", "999.0")
    assert unknown.returncode == 4 and "no job 999.0" in unknown.stderr
    assert world.rsub("fetchlog", "x.y").returncode == 2
    if world.a == world.b:  # the same cluster number on both schedds: the id must say which
        both = world.rsub("fetchlog", str(world.a))
        assert both.returncode == 2 and "several schedds" in both.stderr


# -- completion and help -----------------------------------------------------------------------

COMMANDS = ["ping", "poke", "submit", "q", "status", "history", "resubmit", "why", "wait", "watch", "retrieve",
            "fetchlog", "hold", "release", "rm", "daemon", "token", "completion"]


def rsub_plain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "rsub"), *args], capture_output=True, text=True, timeout=30, check=False)


def test_bash_completion() -> None:
    result = rsub_plain("completion", "bash")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0
    probe = script + """
t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _rsub; echo "${COMPREPLY[*]}"; }
t rsub ""
t rsub q --st
t rsub history --state re
t rsub --socket /x daemon ""
t rsub hold --
t rsub completion ""
"""
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].split() == COMMANDS
    assert out[1:] == ["--state", "retrieved removed", "status stop log install",
                       "--help --constraint --schedd --reason --json --jobid", "bash zsh"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion() -> None:
    script = rsub_plain("completion", "zsh").stdout
    assert script.startswith("#compdef rsub\n")
    assert subprocess.run(["zsh", "-n"], input=script, text=True, check=False).returncode == 0
    # The completion system's functions, stubbed to print what they were given.
    probe = """
compdef() { :; }
_describe() { local -a items; items=("${(@P)4}"); print -r -- "${(j: :)${(@)items%%:*}}"; }
compadd() { shift; print -r -- "$*"; }
_files() { print -r -- "files $*"; }
""" + script + """
t() { words=("$@"); CURRENT=${#words}; _rsub; }
t rsub ""
t rsub q --state ""
t rsub fetchlog 1 --dest ""
t rsub token ""
"""
    out = subprocess.run(["zsh", "-f", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].split() == COMMANDS
    assert out[1].split() == ["submitting", "spooling", "idle", "running", "held", "completed", "retrieved",
                              "removed", "failed"]
    assert out[2:] == ["files -/", "status refresh request"]


def test_help_has_examples_and_exit_codes() -> None:
    main = rsub_plain("--help")
    assert main.returncode == 0 and "examples:" in main.stdout and "4  no such job in the ledger" in main.stdout
    for command in ("q", "history", "fetchlog", "rm", "completion"):
        text = rsub_plain(command, "--help").stdout
        assert "examples:\n  rsub " + command in text, command


def test_ping_json() -> None:
    # No rsubd on this socket: exit 3, and the message says so.
    result = subprocess.run([str(BIN / "rsub"), "--socket", "/tmp/rsub-no-such.sock", "ping", "--json"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 3 and "not running" in result.stderr


def test_ping_json_shape(world: World) -> None:
    result = world.json("ping")
    assert set(result) == {"version", "rsubd_version", "pid"} and result["version"] == 1
