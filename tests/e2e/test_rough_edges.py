"""Issue 14's rough edges, through real rsub command lines: pages cut short say so, exit codes show wherever
states do, submit prints condor_submit's line, and the small ones (fetchlog, hold on a finished job, default
reasons, daemon status, a binary given as a submit file, the modes of the state directory)."""

from __future__ import annotations

import json
import os
import pty
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import BIN, Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e

CONFIG = """\
[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.3
"""


def on_terminal(daemon: Rsubd, *args: str, cwd: Path | None = None) -> str:
    """What rsub prints when its stdout is a terminal (a pty), colours on; CRLF made LF."""
    master, slave = pty.openpty()
    env = {**daemon.env, "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([str(BIN / "rsub"), *args], env=env, cwd=cwd, stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    out = bytearray()
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert proc.wait(timeout=60) == 0
    return out.decode().replace("\r\n", "\n")


def plain(text: str) -> str:
    return re.sub(r"\033\[[0-9;]*m", "", text)


@pytest.fixture
def fake(short_tmp: Path) -> Iterator[Rsubd]:
    """An rsubd whose embedded scheduler runs nothing: a thousand jobs stay idle."""
    daemon = Rsubd(short_tmp, CONFIG)
    daemon.start(extra_env={"RSUB_LOCAL_EXECUTE": "fake"})
    yield daemon
    daemon.stop()


@pytest.fixture
def real(short_tmp: Path) -> Iterator[Rsubd]:
    daemon = Rsubd(short_tmp, CONFIG)
    daemon.start()
    yield daemon
    daemon.stop()
    daemon.kill_leftover_jobs()


# -- 1 and 5: a page cut short says so and keeps the newest; submit prints one line ------------------------


def test_a_cut_page_keeps_the_newest_and_says_so_and_submit_prints_one_line(fake: Rsubd, workdir: Path) -> None:
    write_job(workdir, "job.sh", "true\n")
    for name, n in (("a.sub", 572), ("b.sub", 500), ("c.sub", 3)):
        (workdir / name).write_text(f"executable = job.sh\nqueue {n}\n")
    a = fake.rsub("submit", "a.sub", cwd=workdir)
    assert a.returncode == 0, a.stderr
    m = re.fullmatch(r"572 job\(s\) submitted to cluster (\d+) on schedd local\.\n", a.stdout)
    assert m, a.stdout
    ca = int(m.group(1))
    b = fake.rsub("submit", "-v", "b.sub", cwd=workdir)
    lines = b.stdout.splitlines()
    cb = ca + 1
    assert lines == [f"500 job(s) submitted to cluster {cb} on schedd local.",
                     *(f"{cb}.{p}@local" for p in range(500))]
    c = fake.json("submit", "c.sub", cwd=workdir)
    assert c["version"] == 1 and set(c) == {"version", "cluster", "schedd", "jobs", "replaced"}
    assert c["jobs"] == [f"{c['cluster']}.{p}@local" for p in range(3)]
    assert fake.json("submit", "--dry-run", "c.sub", cwd=workdir)["version"] == 1
    newest = f"{c['cluster']}.2@local"

    for view in ("status", "q"):
        cut = fake.rsub(view)
        assert cut.returncode == 0 and cut.stderr == "rsub: showing 1,000 of 1,075 (--limit 0 for all)\n", cut.stderr
        ids = [line.split("\t")[0] for line in cut.stdout.splitlines()[1:]]
        # The 75 oldest are left out, never the newest; shown as condor_q shows them, newest last.
        assert ids == [f"{ca}.{p}@local" for p in range(75, 572)] + [f"{cb}.{p}@local" for p in range(500)] + [
            f"{c['cluster']}.{p}@local" for p in range(3)]
        assert ids[-1] == newest and f"{cb}.499@local" in ids
        page = fake.rsub(view, "--json")
        assert page.stderr == cut.stderr
        shown = json.loads(page.stdout)
        assert (shown["total"], shown["truncated"], len(shown["jobs"])) == (1075, True, 1000)
        everything = fake.rsub(view, "--limit", "0", "--json")
        assert everything.stderr == ""
        whole = json.loads(everything.stdout)
        assert (whole["total"], whole["truncated"], len(whole["jobs"])) == (1075, False, 1075)
    small = fake.json("status", "--limit", "5")
    assert [j["id"] for j in small["jobs"]][-1] == newest and small["truncated"] is True
    assert fake.rsub("q", "--limit", "-1").returncode == 2

    # rm with no reason records who did it, with what.
    for cluster in (ca, cb, c["cluster"]):
        assert fake.rsub("rm", str(cluster)).returncode == 0
    wait_until(lambda: fake.json("history", "--limit", "0")["total"] == 1075, 30, "every job to be removed")
    owner = fake.json("history", "--limit", "1")["jobs"][0]["jobsub"]["owner"]
    assert fake.json("status", newest)["jobs"][0]["remove_reason"].startswith(f"removed with rsub rm by {owner}")
    history = fake.rsub("history")
    assert history.stderr == "rsub: showing 1,000 of 1,075 (--limit 0 for all)\n"
    full = [line.split("\t")[0] for line in fake.rsub("history", "--limit", "0").stdout.splitlines()[1:]]
    # History is newest first (as the README says): the cut leaves out the end, the longest done.
    assert [line.split("\t")[0] for line in history.stdout.splitlines()[1:]] == full[:1000]
    # Nothing left to track: daemon status says idle, not a poll time that looks stuck.
    status = fake.rsub("daemon", "status").stdout
    assert "local (local): idle: nothing to track" in status and "None" not in status, status


# -- 3: the exit code wherever the state is shown; summaries per big cluster --------------------------------


EXIT_SH = 'case "$1" in 0|5) exit 3;; esac\necho "out $1"\n'


def test_exit_codes_show_in_every_view_and_big_clusters_are_summed_up(real: Rsubd, workdir: Path) -> None:
    write_job(workdir, "exit.sh", EXIT_SH)
    (workdir / "e.sub").write_text("executable = exit.sh\narguments = $(Process)\noutput = out.$(Process)\n"
                                   "queue 12\n")
    e = real.json("submit", "e.sub", cwd=workdir)["cluster"]
    wait_until(lambda: {j["state"] for j in real.json("status", str(e))["jobs"]} == {"retrieved"}, 60,
               "cluster E to be retrieved")
    jobs = real.json("status", str(e))["jobs"]
    assert [j["exit_code"] for j in jobs] == [3, 0, 0, 0, 0, 3] + [0] * 6
    bad = {f"{e}.0@local", f"{e}.5@local"}

    rows = [line.split("\t") for line in real.rsub("status", str(e)).stdout.splitlines()[1:]]
    assert {r[0] for r in rows if r[2] == "3"} == bad
    assert all(r[4].startswith("exit code 3; output in ") for r in rows if r[0] in bad)
    for view in ("q", "history"):
        rows = [line.split("\t") for line in real.rsub(view, str(e)).stdout.splitlines()]
        assert rows[0][-1] == "EXIT"
        assert {r[0] for r in rows[1:] if r[-1] == "3"} == bad and {r[-1] for r in rows[1:]} == {"0", "3"}

    for view in ("q", "history", "status"):
        shown = on_terminal(real, view, str(e), cwd=workdir)
        text = plain(shown)
        assert f"\n{e}@local: 10 done, 2 exit!=0\n" in text, text
        assert text.endswith("\n12 jobs; 10 retrieved, 2 exit!=0\n"), text
        red = [line for line in shown.splitlines() if "\033[31m" in line]
        assert sorted(plain(line).split()[0] for line in red) == sorted(bad), shown  # not green
    small = plain(on_terminal(real, "history", f"{e}.0", cwd=workdir))
    assert "@local:" not in small and small.endswith("\n1 job; 1 exit!=0\n")

    # Holding a job that is done says so, not "0 matched; 1 not found".
    held = real.rsub("hold", f"{e}.0")
    assert held.returncode == 0 and held.stdout == f"local: hold: nothing to do: {e}.0 is already retrieved\n"
    assert real.json("hold", f"{e}.0")["schedds"]["local"]["finished"] == {"retrieved": [f"{e}.0"]}


# -- 7: the small ones ----------------------------------------------------------------------------------------


def test_default_reasons_fetchlog_of_a_removed_job_and_a_dest_that_cannot_be(real: Rsubd, workdir: Path) -> None:
    write_job(workdir, "sleep.sh", "sleep 120\n")
    (workdir / "r.sub").write_text("executable = sleep.sh\noutput = r.out\nqueue\n")
    r = f"{real.json('submit', 'r.sub', cwd=workdir)['cluster']}.0@local"
    wait_until(lambda: real.states(r)[r] == "running", 30, "the job to run")
    owner = real.json("status", r)["jobs"][0]["jobsub"]["owner"]
    assert real.rsub("hold", r).returncode == 0
    wait_until(lambda: real.states(r)[r] == "held", 15, "the hold")
    assert real.json("status", r)["jobs"][0]["hold_reason"].startswith(f"held with rsub hold by {owner}")
    assert real.rsub("release", r).returncode == 0
    wait_until(lambda: real.states(r)[r] != "held", 15, "the release")
    assert real.rsub("rm", r).returncode == 0
    wait_until(lambda: real.states(r)[r] == "removed", 15, "the removal")
    assert real.json("status", r)["jobs"][0]["remove_reason"].startswith(f"removed with rsub rm by {owner}")

    fetched = real.rsub("fetchlog", r, cwd=workdir)
    assert fetched.returncode == 0
    assert f"{workdir / 'r.out'} (the job was removed: its output will never come home)" in fetched.stderr
    assert "not home yet" not in fetched.stderr
    nowhere = real.rsub("fetchlog", r, "--dest", "/proc/nope", cwd=workdir)
    assert nowhere.returncode == 2, nowhere.stderr  # the command line's fault, not an rsubd bug (1)
    assert nowhere.stderr.startswith("rsub: --dest /proc/nope: cannot write the archive there: ")


def test_a_program_is_not_a_submit_description(real: Rsubd, workdir: Path) -> None:
    result = real.rsub("submit", "/bin/true", cwd=workdir)
    assert result.returncode == 5
    assert result.stderr.startswith("rsub: /bin/true is not a submit description (it is a program, not text)")
    assert "codec" not in result.stderr and "executable = /bin/true" in result.stderr
    assert real.json("status")["jobs"] == []


def test_the_state_directory_is_private_all_the_way_down(real: Rsubd, workdir: Path) -> None:
    write_job(workdir, "job.sh", "true\n")
    (workdir / "job.sub").write_text("executable = job.sh\nqueue\n")
    cluster = real.json("submit", "job.sub", cwd=workdir)["cluster"]
    wait_until(lambda: real.states(str(cluster)) == {f"{cluster}.0@local": "retrieved"}, 30, "the job to finish")
    state = real.state_dir

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    for d in (state, state / "local", state / "local" / "local", state / "local" / "local" / "spool",
              state / "local" / "local" / "execute"):
        assert mode(d) == 0o700, (d, oct(mode(d)))
    files = [state / "rsubd.lock", *state.glob("ledger.db*"), *(state / "local" / "local").glob("queue.db*")]
    assert len(files) >= 4
    for f in files:
        assert mode(f) == 0o600, (f, oct(mode(f)))
