"""What a real schedd does, and rsub brought in line with it (issue 13), through real rsub command lines."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until

pytestmark = pytest.mark.e2e


def _submit(rsubd: Rsubd, workdir: Path, queue: str) -> int:
    (workdir / "job.sub").write_text(f"executable = /bin/sleep\narguments = 30\n{queue}\n")
    result = rsubd.rsub("submit", "--json", "job.sub", cwd=workdir)
    assert result.returncode == 0, result.stderr
    cluster: int = json.loads(result.stdout)["cluster"]
    wait_until(lambda: set(rsubd.states(str(cluster)).values()) <= {"idle", "running"}, 30, "the jobs released")
    return cluster


def _retrieved(rsubd: Rsubd, workdir: Path, description: str) -> int:
    """Submit `description` as job.sub in `workdir`; its cluster, once every job is retrieved."""
    (workdir / "job.sub").write_text(description)
    result = rsubd.rsub("submit", "--json", "job.sub", cwd=workdir)
    assert result.returncode == 0, result.stderr
    cluster: int = json.loads(result.stdout)["cluster"]
    wait_until(lambda: set(rsubd.states(str(cluster)).values()) == {"retrieved"}, 60, "every job retrieved")
    return cluster


def test_a_hold_reason_with_a_double_quote_arrives_and_the_count_is_what_matched(rsubd: Rsubd, workdir: Path) -> None:
    other = _submit(rsubd, workdir, "queue 3")  # the queue holds more jobs than the hold names
    cluster = _submit(rsubd, workdir, "queue 1")
    held = rsubd.rsub("hold", "--reason", 'input "run7"\nis bad', f"{cluster}.0")
    assert held.returncode == 0, held.stderr
    assert "local: hold: 1 job(s) matched; 1 success" in held.stdout
    assert "the reason was sent as \"input 'run7' is bad\"" in held.stderr
    job = wait_until(lambda: (j := rsubd.json("status", f"{cluster}.0")["jobs"][0])["state"] == "held" and j, 30,
                     "the hold")
    assert job["hold_reason"].startswith("input 'run7' is bad")
    plain = rsubd.rsub("hold", "--reason", "plain", str(other), "--json")
    counts = json.loads(plain.stdout)["schedds"]["local"]
    assert counts["job_ads"] == 3 and counts["reason_missing"] == [] and "reason" not in json.loads(plain.stdout)
    assert rsubd.rsub("rm", str(other), str(cluster)).returncode == 0


def test_a_token_the_schedd_refuses_is_exit_8_at_the_first_submit_and_leaves_no_directory(short_tmp: Path) -> None:
    faults = short_tmp / "faults.json"
    # What a real schedd said (HTCondor 25.13): AUTHENTICATE:1004:Failed to authenticate using IDTOKENS.
    faults.write_text(json.dumps({"mode": "fail", "ops": ["submit"], "kind": "authentication_failed"}))
    daemon = Rsubd(short_tmp, f'[[schedd]]\nname = "local"\nbackend = "local"\nfaults_file = "{faults}"\n')
    daemon.start()
    try:
        script = short_tmp / "run.sh"
        script.write_text("#!/bin/sh\necho hi\n")
        script.chmod(0o755)
        jobs_dir = daemon.state_dir / "jobs"
        refused = daemon.rsub("submit", f"file://{script}")
        assert refused.returncode == 8, refused.stderr  # not 7, and not only from the second submit on
        assert "refused the token; nothing was submitted" in refused.stderr
        assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []  # the per-submit directory is gone
        (short_tmp / "job.sub").write_text("executable = /bin/true\nqueue\n")
        again = daemon.rsub("submit", "job.sub", cwd=short_tmp)
        assert again.returncode == 8, again.stderr
    finally:
        daemon.stop()


def test_dry_run_of_a_submit_file_prints_what_would_be_sent_and_sends_nothing(rsubd: Rsubd, workdir: Path) -> None:
    (workdir / "run.sh").write_text("#!/bin/sh\necho $1\n")
    (workdir / "run.sh").chmod(0o755)
    (workdir / "job.sub").write_text("executable = run.sh\narguments = $(Process)\noutput = out.$(Process)\nqueue 3\n")
    result = rsubd.rsub("submit", "--dry-run", "job.sub", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert f"executable = {workdir / 'run.sh'}" in result.stdout  # made absolute, as it would be sent
    assert "My.RsubId = " in result.stdout and "\nqueue 3\n" in result.stdout
    # Then each job's own values, as condor_submit -dry-run lists each job, as comments after the queue.
    assert result.stdout.split("queue 3\n")[1].splitlines() == [
        f"# job {n}: arguments = {n}; output = out.{n}" for n in range(3)]
    assert "3 job(s) would be submitted to schedd local as above; nothing was sent" in result.stderr
    checked = json.loads(rsubd.rsub("submit", "--dry-run", "--json", "job.sub", cwd=workdir).stdout)
    assert checked["num_procs"] == 3 and checked["initialdirs"] == [str(workdir)]
    assert checked["jobs"][2] == {"proc": 2, "commands": {"arguments": "2", "output": "out.2"}}
    assert rsubd.json("status")["jobs"] == []  # nothing was submitted, nothing recorded
    (workdir / "bad.sub").write_text("executable = missing.sh\nqueue\n")
    refused = rsubd.rsub("submit", "--dry-run", "bad.sub", cwd=workdir)
    assert refused.returncode == 5 and "missing.sh does not exist" in refused.stderr


def test_several_queue_statements_make_one_cluster_with_procs_numbered_on(rsubd: Rsubd, workdir: Path) -> None:
    for name in ("first.sh", "second.sh"):
        (workdir / name).write_text(f'#!/bin/sh\necho "{name} $@"\n')
        (workdir / name).chmod(0o755)
    (workdir / "job.sub").write_text(
        "executable = first.sh\narguments = a\noutput = out.$(Process)\nN = 2\nqueue $(N)\n"
        "arguments = b\nqueue 1\n"
        "executable = second.sh\narguments = $(x) $(Step)\nqueue 2 x in (p, q)\n")
    result = rsubd.rsub("submit", "--json", "job.sub", cwd=workdir)
    assert result.returncode == 0, result.stderr
    submitted = json.loads(result.stdout)
    cluster = submitted["cluster"]
    assert len(submitted["jobs"]) == 7 and {j.split("@")[0] for j in submitted["jobs"]} == {
        f"{cluster}.{p}" for p in range(7)}
    wait_until(lambda: set(rsubd.states(str(cluster)).values()) == {"retrieved"}, 60, "all seven retrieved")
    outputs = [(workdir / f"out.{p}").read_text() for p in range(7)]
    assert outputs == ["first.sh a\n", "first.sh a\n", "first.sh b\n", "second.sh p 0\n", "second.sh p 1\n",
                       "second.sh q 0\n", "second.sh q 1\n"]


def test_a_log_in_a_directory_or_absolute_is_whole_where_it_names(rsubd: Rsubd, workdir: Path, tmp_path: Path) -> None:
    # The schedd writes each proc's copy under its UserLog's basename and the retrieve brings it into
    # the initialdir: rsub still makes the log the description names whole, and leaves no copy behind.
    import htcondor2

    (workdir / "logs").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clusters = {}
    for name, log in (("sub.sub", "logs/job.log"), ("abs.sub", str(elsewhere / "job.log"))):
        (workdir / name).write_text("executable = /bin/true\ntransfer_executable = false\n"
                                    f"log = {log}\nqueue 2\n")
        result = rsubd.rsub("submit", "--json", name, cwd=workdir)
        assert result.returncode == 0, result.stderr
        clusters[log] = json.loads(result.stdout)["cluster"]
    for log, cluster in clusters.items():
        wait_until(lambda c=cluster: set(rsubd.states(str(c)).values()) == {"retrieved"}, 60, f"{log} retrieved")
        path = Path(log) if log.startswith("/") else workdir / log
        read = [(int(e.type), e.cluster, e.proc) for e in htcondor2.JobEventLog(str(path)).events(stop_after=0)]
        assert sorted(read) == sorted((t, cluster, p) for t in (0, 1, 5) for p in range(2)), (log, read)
    assert sorted(p.name for p in workdir.iterdir()) == ["abs.sub", "logs", "sub.sub"]  # no copy left behind
    assert [p.name for p in (workdir / "logs").iterdir()] == ["job.log"]
    assert [p.name for p in elsewhere.iterdir()] == ["job.log"]


def test_the_job_event_log_holds_every_procs_events_in_time_order(rsubd: Rsubd, workdir: Path) -> None:
    (workdir / "job.log").write_text("")  # a log file of the user's, as condor_submit would append to
    cluster = _retrieved(rsubd, workdir, "executable = /bin/sh\narguments = -c 'sleep 0.$(Process)'\n"
                                         "transfer_executable = false\nlog = job.log\nqueue 3\n")
    text = (workdir / "job.log").read_text()
    headers = [line for line in text.splitlines() if line[:3].isdigit()]
    for proc in range(3):
        mine = [h[:3] for h in headers if f"({cluster:03d}.{proc:03d}.000)" in h]
        assert mine == ["000", "001", "005"], (proc, text)
    stamps = [h.split(") ", 1)[1][:19] for h in headers]
    assert stamps == sorted(stamps)  # in time order, as a local condor_submit leaves it
    import htcondor2  # what condor_wait and the bindings read it with: every event, none torn

    read = [(int(e.type), e.proc) for e in htcondor2.JobEventLog(str(workdir / "job.log")).events(stop_after=0)]
    assert sorted(read) == sorted((t, p) for t in (0, 1, 5) for p in range(3))
    assert sorted(p.name for p in workdir.iterdir()) == ["job.log", "job.sub"]  # no per-proc copy left behind
    fetched = rsubd.rsub("fetchlog", f"{cluster}.0", "--dest", str(workdir / "logs"))
    assert fetched.returncode == 0, fetched.stderr
    with tarfile.open(workdir / "logs" / f"{cluster}.0@local.tgz") as tar:
        member = tar.extractfile("job.log")
        assert member is not None and f"({cluster:03d}.000.000)" in member.read().decode()


def test_a_queue_statement_with_no_log_leaves_the_others_logs_whole(rsubd: Rsubd, workdir: Path) -> None:
    """Procs 0 and 1 log to a.log and proc 2 to none: 0 and 1 each come home under a name of their own and join
    a.log (before, one proc without a log sent every log as written, and 1's copy overwrote 0's)."""
    import htcondor2

    _retrieved(rsubd, workdir, "executable = /bin/true\ntransfer_executable = false\nlog = a.log\nqueue 2\n"
                               "log =\nqueue 1\n")
    read = [(int(e.type), e.proc) for e in htcondor2.JobEventLog(str(workdir / "a.log")).events(stop_after=0)]
    assert sorted(read) == sorted((t, p) for t in (0, 1, 5) for p in range(2)), read
    assert sorted(p.name for p in workdir.iterdir()) == ["a.log", "job.sub"]  # no copy left, no log for proc 2
