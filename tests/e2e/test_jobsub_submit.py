"""`rsub submit [options] file:///script [args]`, the jobsub way, through a real rsubd and real rsub command lines."""

from __future__ import annotations

import json
import re
import sqlite3
import stat
import tarfile
from pathlib import Path

import pytest

from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e

JOB = """\
echo "args: $# [$1] [$2] [$3]"
echo "job $CLUSTER.$PROCESS"
cat "$CONDOR_DIR_INPUT/one.txt" "$CONDOR_DIR_INPUT/two.txt"
[ -f "$INPUT_TAR_FILE" ] && echo "tar0: $(basename "$INPUT_TAR_FILE") in $(basename "$INPUT_TAR_DIR_LOCAL")"
cat "$INPUT_TAR_DIR_LOCAL/top.txt" "$INPUT_TAR_DIR_LOCAL/sub/deep.txt"
[ -f "$INPUT_TAR_FILE_1" ] && echo "tar1: $(basename "$INPUT_TAR_FILE_1")"
cat "$(dirname "$INPUT_TAR_FILE_1")/packed.txt"
[ "$INPUT_TAR_DIR_LOCAL_1" = "$(dirname "$INPUT_TAR_FILE_1")" ] && echo "tar1 unpacked beside it"
echo "FOO=[$FOO] BAR=[$BAR]"
echo "stderr of $PROCESS" >&2
echo "made by $PROCESS" > "result_$PROCESS.txt"
exit "$PROCESS"
"""


def inputs(work: Path) -> None:
    write_job(work, "run.sh", JOB)
    (work / "one.txt").write_text("one\n")
    (work / "data").mkdir()
    (work / "data" / "two.txt").write_text("two\n")
    code = work / "code"
    (code / "sub").mkdir(parents=True)
    (code / "top.txt").write_text("top\n")
    (code / "sub" / "deep.txt").write_text("deep\n")
    (work / "packed.txt").write_text("packed\n")
    with tarfile.open(work / "packed.tgz", "w:gz") as tar:
        tar.add(work / "packed.txt", arcname="packed.txt")


def output_dir(stdout: str) -> Path:
    m = re.search(r"^output will be in (.+)$", stdout, re.MULTILINE)
    assert m, stdout
    return Path(m.group(1))


def jobs_dir(daemon: Rsubd) -> Path:
    return daemon.state_dir / "jobs"


def test_script_with_inputs_tarballs_and_environment(rsubd: Rsubd, workdir: Path) -> None:
    inputs(workdir)
    env_before = dict(rsubd.env)
    rsubd.env["FOO"] = "foo value"
    try:
        submitted = rsubd.rsub(
            "submit", "-N", "2", "-f", "one.txt", "-f", str(workdir / "data" / "two.txt"),
            "--tar", "code", "--tar", "packed.tgz", "-e", "FOO", "-e", "BAR=set=here",
            "--memory", "1.5GB", "--disk", "20MB", "--cpus", "1", "--expected-lifetime", "short",
            "-l", '+RsubTest = "jobsub"', f"file://{workdir}/run.sh", "-x", "two words", 'q"x', cwd=workdir,
        )
    finally:
        rsubd.env = env_before
    assert submitted.returncode == 0, submitted.stderr
    m = re.search(r"^2 job\(s\) submitted to cluster (\d+) on schedd local\.$", submitted.stdout, re.MULTILINE)
    assert m, submitted.stdout
    cluster = int(m.group(1))
    assert f"{cluster}.0@local" not in submitted.stdout  # the ids only with -v, as condor_submit
    out = output_dir(submitted.stdout)
    assert out.parent == jobs_dir(rsubd)
    assert re.fullmatch(r"\d{8}T\d{6}Z-run\.sh-[0-9a-f]{8}", out.name)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    with tarfile.open(out / "code.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["sub", "sub/deep.txt", "top.txt"]

    waited = rsubd.rsub("wait", "--timeout", "60", str(cluster))
    assert waited.returncode == 13, waited.stderr  # proc 1 exits 1
    for proc in (0, 1):
        assert (out / f"{cluster}.{proc}.out").read_bytes() == (
            f'args: 3 [-x] [two words] [q"x]\n'
            f"job {cluster}.{proc}\n"
            "one\ntwo\n"
            "tar0: code.tar.gz in .unwind_0\n"
            "top\ndeep\n"
            "tar1: packed.tgz\n"
            "packed\n"
            "tar1 unpacked beside it\n"
            "FOO=[foo value] BAR=[set=here]\n"
        ).encode()
        assert (out / f"{cluster}.{proc}.err").read_bytes() == f"stderr of {proc}\n".encode()
        assert (out / f"result_{proc}.txt").read_text() == f"made by {proc}\n"
    jobs = rsubd.json("status", str(cluster))["jobs"]
    assert [(j["state"], j["exit_code"], j["iwd"]) for j in jobs] == [
        ("retrieved", 0, str(out)), ("retrieved", 1, str(out))]
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "job.sub", "rsub_wrapper.sh", "code.tar.gz", f"{cluster}.log",  # the job event log, both procs merged
        *(f"{cluster}.{p}.{ext}" for p in (0, 1) for ext in ("out", "err")), "result_0.txt", "result_1.txt"])

    # What the schedd made of the description: the requests, the lifetime and the -l line.
    def history_ads() -> list[dict[str, object]]:
        db = sqlite3.connect(f"file:{rsubd.state_dir / 'local' / 'local' / 'queue.db'}?mode=ro", uri=True)
        with db:
            ads = [json.loads(a) for (a,) in db.execute("SELECT ad FROM history WHERE cluster = ?", (cluster,))]
        db.close()
        return ads if len(ads) == 2 else []

    for ad in wait_until(history_ads, 20, "the jobs to move to history"):
        assert (ad["RequestMemory"], ad["RequestDisk"], ad["RequestCpus"]) == (1536, 20480, 1)
        assert ad["JOB_EXPECTED_MAX_LIFETIME"] == 10800
        assert ad["RsubTest"] == "jobsub"


def test_options_after_the_script_are_its_arguments(rsubd: Rsubd, workdir: Path) -> None:
    write_job(workdir, "args.sh", 'for a in "$@"; do echo "[$a]"; done\n')
    submitted = rsubd.rsub("submit", "--json", "file://args.sh", "-N", "3", "--", "--json", "", cwd=workdir)
    assert submitted.returncode == 0, submitted.stderr
    result = json.loads(submitted.stdout)
    assert len(result["jobs"]) == 1
    assert rsubd.rsub("wait", "--timeout", "60", str(result["cluster"])).returncode == 0
    out = Path(result["output_dir"])
    assert (out / f"{result['cluster']}.0.out").read_text() == "[-N]\n[3]\n[--]\n[--json]\n[]\n"


def test_dry_run_prints_the_description_and_writes_nothing(rsubd: Rsubd, workdir: Path) -> None:
    inputs(workdir)
    result = rsubd.rsub("submit", "--dry-run", "-N", "4", "-f", "one.txt", "--tar", "code",
                        "--memory", "2000", "--expected-lifetime", "45m", "file://run.sh", "a b", cwd=workdir)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert re.search(r"^executable = .*/jobs/\d{8}T\d{6}Z-run\.sh-[0-9a-f]{8}/rsub_wrapper\.sh$", text, re.MULTILINE)
    assert "\narguments = \"'a b'\"\n" in text
    assert f"\ntransfer_input_files = {workdir}/run.sh, {workdir}/one.txt, " in text
    assert "\nrequest_memory = 2000\n" in text and "\n+JOB_EXPECTED_MAX_LIFETIME = 2700\n" in text
    assert text.endswith("\nqueue 4\n")
    assert not jobs_dir(rsubd).exists()
    assert rsubd.json("status")["jobs"] == []


@pytest.mark.parametrize(("argv", "message"), [
    (["file://missing.sh"], "missing.sh does not exist"),
    (["file://plain.sh"], "is not executable; run: chmod +x"),
    (["-f", "nope.txt", "file://run.sh"], "-f nope.txt:"),
    (["--tar", "nodir", "file://run.sh"], "--tar nodir:"),
    (["--tar", "one.txt", "file://run.sh"], "not named like a tarball"),
    (["--memory", "2XB", "file://run.sh"], "--memory '2XB'"),
    (["--disk", "0", "file://run.sh"], "must be more than 0"),
    (["--expected-lifetime", "forever", "file://run.sh"], "--expected-lifetime 'forever'"),
    (["-e", "RSUB_TEST_UNSET", "file://run.sh"], "RSUB_TEST_UNSET is not set here"),
    (["-l", "queue 3", "file://run.sh"], "rsub writes the queue statement itself"),
    (["-f", "one.txt", "-f", "data/one.txt", "file://run.sh"], "already taken by -f"),
])
def test_bad_input_is_refused_before_anything_is_sent(
    short_tmp: Path, workdir: Path, argv: list[str], message: str
) -> None:
    # No rsubd at all: exit 5, not 3, shows that nothing was even attempted.
    daemon = Rsubd(short_tmp)
    inputs(workdir)
    (workdir / "data" / "one.txt").write_text("another one\n")
    (workdir / "plain.sh").write_text("#!/bin/sh\n")
    result = daemon.rsub("submit", *argv, cwd=workdir)
    assert result.returncode == 5, result.stderr
    assert message in result.stderr
    assert not jobs_dir(daemon).exists()


def test_a_description_rsubd_refuses_leaves_no_directory(rsubd: Rsubd, workdir: Path) -> None:
    write_job(workdir, "run.sh", "true\n")
    result = rsubd.rsub("submit", "-l", "rsub_loop = $(rsub_loop)", "file://run.sh", cwd=workdir)
    assert result.returncode == 5, result.stderr
    assert "macro cycle" in result.stderr
    assert list(jobs_dir(rsubd).iterdir()) == []


def test_jobsub_options_need_a_script(rsubd: Rsubd, workdir: Path) -> None:
    (workdir / "job.sub").write_text("executable = /bin/true\nqueue\n")
    result = rsubd.rsub("submit", "job.sub", "-N", "2", cwd=workdir)
    assert result.returncode == 2
    assert "-N: only for a script given as file:///path/to/script" in result.stderr
