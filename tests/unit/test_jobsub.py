"""The jobsub-style builder of `rsub submit file:///script`: units, lifetimes, quoting, the description, the wrapper."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from rsub import jobsub
from rsub.jobsub import BuildError, submitdir
from rsubd import submitdesc
from rsubd.backends.local import jobads

DIR = Path("/state/rsub/jobs/20250101T000000Z-run.sh-0123abcd")


def script(directory: Path, name: str = "run.sh", body: str = "echo hi\n") -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def build(cwd: Path, *args: str, environ: dict[str, str] | None = None, **options: object) -> jobsub.Plan:
    return jobsub.build(f"file://{cwd}/run.sh", args, cwd=str(cwd), environ=environ or {}, **options)  # type: ignore[arg-type]


# -- units -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "mb"), [
    ("2000", 2000), ("2000MB", 2000), ("2000mb", 2000), ("2GB", 2048), ("2G", 2048), ("1.5 GB", 1536),
    ("500KB", 1), ("2048k", 2), ("1TB", 1048576), (".5g", 512),
])
def test_memory_is_megabytes_with_jobsub_units(text: str, mb: int) -> None:
    assert jobsub.memory_mb(text) == mb


@pytest.mark.parametrize(("text", "kb"), [
    ("500", 500), ("500KB", 500), ("500MB", 512000), ("2GB", 2097152), ("10g", 10485760),
])
def test_disk_is_kilobytes_with_jobsub_units(text: str, kb: int) -> None:
    assert jobsub.disk_kb(text) == kb


@pytest.mark.parametrize("text", ["", "MB", "2XB", "2 G B", "500B", "-1GB", "1e3", "two", "0", "0MB"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(BuildError, match="--memory"):
        jobsub.memory_mb(text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("short", 10800), ("MEDIUM", 28800), ("long", 85200), ("3h", 10800), ("45m", 2700), ("3600s", 3600),
    ("3600", 3600), ("2d", 172800), ("1.5h", 5400), ("90 M", 5400),
])
def test_expected_lifetime(text: str, seconds: int) -> None:
    assert jobsub.lifetime_seconds(text) == seconds


@pytest.mark.parametrize("text", ["forever", "3w", "h", "-3h", "0", "0.1", "1h30m", ""])
def test_bad_lifetimes_are_refused(text: str) -> None:
    with pytest.raises(BuildError, match="--expected-lifetime"):
        jobsub.lifetime_seconds(text)


# -- quoting ---------------------------------------------------------------------


@pytest.mark.parametrize(("args", "value"), [
    (["a", "b"], '"a b"'),
    (["-x", "--k=v", "/p/a.txt", "1,2"], '"-x --k=v /p/a.txt 1,2"'),
    (["two words"], "\"'two words'\""),
    ([""], "\"''\""),
    (["it's"], "\"'it''s'\""),
    (['say "hi"'], "\"'say \"\"hi\"\"'\""),
    (["back\\slash", "$HOME", "a\tb"], "\"'back\\slash' '$HOME' 'a\tb'\""),
])
def test_arguments_in_htcondor_new_syntax(args: list[str], value: str) -> None:
    assert jobsub.quote_arguments(args) == value


def test_environment_in_htcondor_new_syntax() -> None:
    pairs = [("A", "1"), ("B", "two words"), ("C", ""), ("D", "it's"), ("E", 'q"x')]
    assert jobsub.quote_environment(pairs, preset="P=$(Process)") == \
        "\"P=$(Process) A=1 B='two words' C= D='it''s' E='q\"\"x'\""


def test_the_embedded_scheduler_reads_arguments_and_environment_back(tmp_path: Path) -> None:
    script(tmp_path)
    args = ["-x", "two words", 'q"x', "", "back\\slash", "$HOME", "a=b"]
    plan = build(tmp_path, *args, environment=["A=two words", "B=", 'C=q"x'])
    desc = submitdesc.parse(jobsub.describe(plan, tmp_path), cwd=str(tmp_path))
    commands = submitdesc.expand(desc, cluster=7)[0]
    ad = jobads.proc_ad(commands, cluster=7, proc=0, cwd=str(tmp_path), owner="u", qdate=0, spool_iwd=tmp_path)
    assert jobads.split_arguments(ad) == args
    env = jobads.parse_environment(ad["Environment"])
    assert (env["CLUSTER"], env["PROCESS"], env["A"], env["B"]) == ("7", "0", "two words", "")


@pytest.mark.parametrize("arg", ["a\nb", "$(Cluster)", "x$ENV(HOME)", "$$(Memory)"])
def test_arguments_a_description_would_change_are_refused(tmp_path: Path, arg: str) -> None:
    script(tmp_path)
    with pytest.raises(BuildError, match="job argument"):
        build(tmp_path, arg)


# -- checks ----------------------------------------------------------------------


def test_the_script_must_exist_and_be_executable(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        build(tmp_path)
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    with pytest.raises(BuildError, match=r"not executable; run: chmod \+x .*/run\.sh"):
        build(tmp_path)
    (tmp_path / "run.sh").chmod(0o755)
    assert build(tmp_path).script == tmp_path / "run.sh"
    with pytest.raises(BuildError, match="file:///path/to/script"):
        jobsub.build(str(tmp_path / "run.sh"), [], cwd=str(tmp_path), environ={})


def test_relative_paths_and_jobsub_prefixes(tmp_path: Path) -> None:
    script(tmp_path)
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "code").mkdir()
    plan = jobsub.build("file://run.sh", [], input_files=["dropbox://in.txt"], tars=["tardir://code"],
                        cwd=str(tmp_path), environ={})
    assert plan.script == tmp_path / "run.sh"
    assert plan.inputs == (tmp_path / "in.txt",)
    assert plan.tars[0].source == tmp_path / "code" and plan.tars[0].from_directory
    with pytest.raises(BuildError, match="local files only"):
        build(tmp_path, input_files=["root://eos/x"])


def test_inputs_are_checked(tmp_path: Path) -> None:
    script(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "run.sh").write_text("x")
    with pytest.raises(BuildError, match=r"-f nope: .* does not exist"):
        build(tmp_path, input_files=["nope"])
    with pytest.raises(BuildError, match="use --tar d"):
        build(tmp_path, input_files=["d"])
    with pytest.raises(BuildError, match="already taken by the script"):
        build(tmp_path, input_files=["d/run.sh"])
    with pytest.raises(BuildError, match=r"--tar nope: .* does not exist"):
        build(tmp_path, tars=["nope"])
    (tmp_path / "fake.tar.gz").write_text("not a tarball")
    with pytest.raises(BuildError, match="is not a tar archive"):
        build(tmp_path, tars=["fake.tar.gz"])
    (tmp_path / "a,b.txt").write_text("x")
    with pytest.raises(BuildError, match="comma"):
        build(tmp_path, input_files=["a,b.txt"])


def test_tarballs_keep_their_names_and_directories_get_unique_ones(tmp_path: Path) -> None:
    script(tmp_path)
    for d in ("a/code", "b/code"):
        (tmp_path / d).mkdir(parents=True)
    for name, mode in (("x.tar.gz", "w:gz"), ("y.tar.bz2", "w:bz2"), ("z.tar.xz", "w:xz"), ("w.tar", "w")):
        with tarfile.open(tmp_path / name, mode):
            pass
    plan = build(tmp_path, tars=["a/code", "b/code", "x.tar.gz", "y.tar.bz2", "z.tar.xz", "w.tar"])
    assert [(t.name, t.from_directory, t.tar_flag) for t in plan.tars] == [
        ("code.tar.gz", True, "z"), ("code_1.tar.gz", True, "z"), ("x.tar.gz", False, "z"),
        ("y.tar.bz2", False, "j"), ("z.tar.xz", False, "J"), ("w.tar", False, "")]


def test_environment_from_here_or_given(tmp_path: Path) -> None:
    script(tmp_path)
    plan = build(tmp_path, environment=["FOO", "BAR=a=b", "EMPTY"], environ={"FOO": "foo", "EMPTY": ""})
    assert plan.environment == (("FOO", "foo"), ("BAR", "a=b"), ("EMPTY", ""))
    with pytest.raises(BuildError, match="-e NOPE: NOPE is not set here; set it, or give its value as -e NOPE=VALUE"):
        build(tmp_path, environment=["NOPE"])
    with pytest.raises(BuildError, match="not an environment variable name"):
        build(tmp_path, environment=["1X=2"])


def test_extra_lines(tmp_path: Path) -> None:
    script(tmp_path)
    plan = build(tmp_path, lines=['+SingularityImage = "/cvmfs/x"', '""', "  My.Foo=1 ", "requirements = True"])
    assert plan.lines == ('+SingularityImage = "/cvmfs/x"', "My.Foo=1", "requirements = True")
    for bad in ("queue 2", "no equals sign", "= 3", "a = 1\nqueue"):
        with pytest.raises(BuildError, match="-l"):
            build(tmp_path, lines=[bad])


# -- the description and the wrapper -------------------------------------------------


def test_description_text(tmp_path: Path) -> None:
    script(tmp_path)
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "code").mkdir()
    with tarfile.open(tmp_path / "lib.tgz", "w:gz"):
        pass
    plan = build(tmp_path, "-n", "5", count=3, input_files=["in.txt"], tars=["code", "lib.tgz"], memory="2GB",
                 disk="1GB", cpus=4, lifetime="medium", environment=["X=1"], lines=['+Foo = "bar"'])
    assert jobsub.describe(plan, DIR) == f"""\
# written by rsub submit for file://{tmp_path}/run.sh
universe = vanilla
executable = {DIR}/rsub_wrapper.sh
arguments = "-n 5"
initialdir = {DIR}
transfer_input_files = {tmp_path}/run.sh, {tmp_path}/in.txt, {DIR}/code.tar.gz, {tmp_path}/lib.tgz
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
output = $(Cluster).$(Process).out
error = $(Cluster).$(Process).err
log = $(Cluster).log
environment = "CLUSTER=$(Cluster) PROCESS=$(Process) X=1"
request_memory = 2048
request_disk = 1048576
request_cpus = 4
+JOB_EXPECTED_MAX_LIFETIME = 28800
+Foo = "bar"
queue 3
"""


def test_minimal_description_parses(tmp_path: Path) -> None:
    script(tmp_path)
    text = jobsub.describe(build(tmp_path), tmp_path)
    assert "arguments" not in text and "request_" not in text and text.endswith("\nqueue\n")
    desc = submitdesc.parse(text, cwd=str(tmp_path))
    procs = submitdesc.expand(desc, cluster=12)
    assert len(procs) == 1
    assert (procs[0]["output"], procs[0]["error"], procs[0]["log"]) == ("12.0.out", "12.0.err", "12.log")


def test_the_wrapper_lays_out_the_inputs_and_runs_the_script(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    script(src, body='echo "$# $*"; pwd; cat "$CONDOR_DIR_INPUT/in.txt"\n'
                     'echo "$INPUT_TAR_FILE|$INPUT_TAR_DIR_LOCAL|$INPUT_TAR_FILE_1|$INPUT_TAR_DIR_LOCAL_1"\n'
                     'cat "$INPUT_TAR_DIR_LOCAL/sub/a.txt" "$INPUT_TAR_DIR_LOCAL_1/b.txt"; exit 3\n')
    (src / "in.txt").write_text("input\n")
    (src / "code" / "sub").mkdir(parents=True)
    (src / "code" / "sub" / "a.txt").write_text("from a directory\n")
    (src / "b.txt").write_text("from a tarball\n")
    with tarfile.open(src / "b.tar.bz2", "w:bz2") as tar:
        tar.add(src / "b.txt", arcname="b.txt")
    plan = build(src, input_files=["in.txt"], tars=["code", "b.tar.bz2"])
    submit = tmp_path / "submit"
    jobsub.materialize(plan, submit, jobsub.describe(plan, submit))
    # What file transfer makes of it: the executable and every input side by side in the sandbox.
    sandbox = tmp_path / "sand box"
    sandbox.mkdir()
    for path in (submit / jobsub.WRAPPER, src / "run.sh", src / "in.txt", submit / "code.tar.gz", src / "b.tar.bz2"):
        shutil.copy2(path, sandbox / path.name)
    (sandbox / "run.sh").chmod(0o644)  # the wrapper makes it executable again
    env = {"PATH": "/usr/bin:/bin", "_CONDOR_SCRATCH_DIR": str(sandbox)}
    run = subprocess.run([str(sandbox / jobsub.WRAPPER), "a b", "c"], cwd=sandbox, env=env,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 3, run.stderr
    assert run.stderr == ""
    unwind0, unwind1 = sandbox / ".unwind_0", sandbox / ".unwind_1"
    assert run.stdout == (f"2 a b c\n{sandbox}\ninput\n"
                          f"{unwind0}/code.tar.gz|{unwind0}|{unwind1}/b.tar.bz2|{unwind1}\n"
                          "from a directory\nfrom a tarball\n")
    assert sorted(p.name for p in (sandbox / "TRANSFERRED_INPUT_FILES").iterdir()) == ["in.txt"]


def test_the_wrapper_says_when_an_input_is_missing(tmp_path: Path) -> None:
    script(tmp_path)
    (tmp_path / "in.txt").write_text("x")
    plan = build(tmp_path, input_files=["in.txt"])
    exe = tmp_path / "w.sh"
    exe.write_text(jobsub.wrapper(plan))
    exe.chmod(0o755)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    run = subprocess.run([str(exe)], cwd=sandbox, env={"PATH": "/usr/bin:/bin", "_CONDOR_SCRATCH_DIR": str(sandbox)},
                         capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert "rsub wrapper: input file in.txt is not in the job directory" in run.stderr


def test_the_wrapper_gives_the_job_its_own_token_or_stops(tmp_path: Path) -> None:
    script(tmp_path, body='echo "$BEARER_TOKEN_FILE"\n')
    exe = tmp_path / "w.sh"
    exe.write_text(jobsub.wrapper(build(tmp_path), job_token=True))
    exe.chmod(0o755)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    shutil.copy2(tmp_path / "run.sh", sandbox / "run.sh")
    env = {"PATH": "/usr/bin:/bin", "_CONDOR_SCRATCH_DIR": str(sandbox)}
    missing = subprocess.run([str(exe)], cwd=sandbox, env=env, capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and "the token asked for with --need-scope is not in" in missing.stderr
    (sandbox / "rsub_bearer_token").write_text("eyJ.x.y\n")
    ran = subprocess.run([str(exe)], cwd=sandbox, env=env, capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"{sandbox}/rsub_bearer_token\n"


def test_materialize_writes_a_private_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    script(tmp_path)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "x.txt").write_text("x")
    plan = build(tmp_path, tars=["code"])
    directory = jobsub.submit_dir("run.sh")
    assert directory.parent == tmp_path / "state" / "rsub" / "jobs"
    text = jobsub.describe(plan, directory)
    jobsub.materialize(plan, directory, text)
    assert sorted(p.name for p in directory.iterdir()) == ["code.tar.gz", "job.sub", "rsub_wrapper.sh"]
    assert (directory / "job.sub").read_text() == text
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.parent.stat().st_mode) == 0o700
    assert os.access(directory / "rsub_wrapper.sh", os.X_OK)
    assert jobsub.input_bytes(plan, directory) == (tmp_path / "run.sh").stat().st_size + \
        (directory / "code.tar.gz").stat().st_size


def test_materialize_cleans_up_when_tarring_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script(tmp_path)
    (tmp_path / "code").mkdir()
    plan = build(tmp_path, tars=["code"])

    def broken(source: Path, dest: Path) -> None:
        raise PermissionError(13, "Permission denied", str(source / "secret"))

    monkeypatch.setattr(submitdir, "_tar_directory", broken)
    with pytest.raises(BuildError, match=r"cannot tar it up: .*Permission denied"):
        jobsub.materialize(plan, tmp_path / "jobs" / "x", "queue\n")
    assert list((tmp_path / "jobs").iterdir()) == []


# -- progress --------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_for_large_inputs() -> None:
    assert not jobsub.Progress(10**9, io.StringIO()).enabled
    assert not jobsub.Progress(10, Terminal()).enabled
    assert jobsub.Progress(10**9, Terminal()).enabled


def test_progress_shows_size_and_time_then_clears_its_line() -> None:
    term = Terminal()
    shown = threading.Event()
    progress = jobsub.Progress(3 * 1024**3 // 2, term, threshold=0, interval=0.01)
    real_show = progress._show

    def show(elapsed: float) -> None:
        real_show(elapsed)
        shown.set()

    progress._show = show  # type: ignore[method-assign]
    with progress:
        assert shown.wait(5)
    text = term.getvalue()
    assert text.startswith("\rspooling 1.5 GB ... 0 s")
    assert text.endswith("\r" + " " * len("\rspooling 1.5 GB ... 0 s") + "\r")


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KB"), (5 * 1024**2, "5.0 MB"),
                                         (3 * 1024**4, "3072.0 GB")])
def test_human_size(n: int, text: str) -> None:
    assert jobsub.human_size(n) == text
