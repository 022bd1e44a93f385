"""Unit tests for rsubd.services.submission.prepare: refusals, rsub's own commands, a self-contained description."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rsubd import submitdesc
from rsubd.services.submission import Prepared, SubmitRefused, leave_in_queue, prepare

INSTANCE = "0123456789abcdef0123456789abcdef"
MAX_AGE = 864000


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    d = tmp_path / "sub"
    d.mkdir()
    job = d / "job.sh"
    job.write_text("#!/bin/sh\necho hi\n")
    job.chmod(0o755)
    (d / "in.txt").write_text("input\n")
    return d


def run(text: str, cwd: Path | str) -> Prepared:
    return prepare(text, cwd=str(cwd), instance_id=INSTANCE, max_age_seconds=MAX_AGE)


def refusal(text: str, cwd: Path | str) -> str:
    with pytest.raises(SubmitRefused) as info:
        run(text, cwd)
    return str(info.value)


def commands(prepared: Prepared) -> dict[str, str]:
    """The rendered description as condor_submit would read it, for proc 0, from an unrelated cwd."""
    desc = submitdesc.parse(prepared.request.text, cwd="/nonexistent")
    return submitdesc.expand(desc, cluster=1)[0]


# -- refusals --------------------------------------------------------------


def test_no_executable(cwd: Path) -> None:
    assert "no 'executable'" in refusal("arguments = 1\nqueue\n", cwd)
    assert "no 'executable'" in refusal("executable =\nqueue\n", cwd)


def test_missing_executable(cwd: Path) -> None:
    message = refusal("executable = nope.sh\nqueue\n", cwd)
    assert f"executable {cwd}/nope.sh does not exist" in message


def test_executable_not_transferred_need_not_exist_here(cwd: Path) -> None:
    prepared = run("executable = /opt/on/the/worker\ntransfer_executable = false\nqueue\n", cwd)
    assert commands(prepared)["executable"] == "/opt/on/the/worker"


def test_missing_input_file(cwd: Path) -> None:
    message = refusal("executable = job.sh\ntransfer_input_files = in.txt, missing.dat\nqueue\n", cwd)
    assert f"input file {cwd}/missing.dat does not exist" in message


def test_missing_input_file_of_one_proc_names_the_proc(cwd: Path) -> None:
    text = "executable = job.sh\ntransfer_input_files = $(f)\nqueue f in (in.txt, gone.txt)\n"
    assert refusal(text, cwd).startswith("job 1: input file")


def test_input_files_are_relative_to_initialdir(cwd: Path) -> None:
    (cwd / "data").mkdir()
    (cwd / "data" / "x.dat").write_text("x")
    prepared = run("executable = job.sh\ninitialdir = data\ntransfer_input_files = x.dat\nqueue\n", cwd)
    assert prepared.iwds == (str(cwd / "data"),)
    assert "x.dat does not exist" in refusal("executable = job.sh\ntransfer_input_files = x.dat\nqueue\n", cwd)


def test_url_inputs_are_not_checked(cwd: Path) -> None:
    prepared = run("executable = job.sh\ntransfer_input_files = https://example.org/a, in.txt\nqueue\n", cwd)
    # Passed through for the execute machine to fetch, next to the local file that was checked.
    assert [f.strip() for f in commands(prepared)["transfer_input_files"].split(",")] == [
        "https://example.org/a", "in.txt"]


def test_nonexistent_initialdir(cwd: Path) -> None:
    message = refusal("executable = job.sh\ninitialdir = elsewhere\nqueue\n", cwd)
    assert f"initialdir {cwd}/elsewhere is not a directory" in message


@pytest.mark.skipif(os.getuid() == 0, reason="root can write to any directory")
def test_unwritable_initialdir(cwd: Path) -> None:
    (cwd / "ro").mkdir(mode=0o555)
    assert "is not writable" in refusal("executable = job.sh\ninitialdir = ro\nqueue\n", cwd)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("executable = job.sh\nthis is not a command\nqueue\n", "line 2"),
        ("executable = job.sh\n\n# c\nif $(x)\nqueue\n", "line 4"),
        ("executable = job.sh\nqueue\nlate = 1\n", "line 3"),
        ("executable = job.sh\nqueue 0\n", "line 2"),
    ],
)
def test_syntax_errors_name_the_line(cwd: Path, text: str, line: str) -> None:
    assert line in refusal(text, cwd)


def test_no_queue_statement(cwd: Path) -> None:
    assert "no queue statement" in refusal("executable = job.sh\n", cwd)


def test_unreadable_item_file(cwd: Path) -> None:
    message = refusal("executable = job.sh\nqueue name from names.txt\n", cwd)
    assert "line 2" in message and "names.txt" in message


@pytest.mark.parametrize("bad", ["relative/dir", "sub", ""])
def test_relative_cwd_is_refused(cwd: Path, bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(cwd.parent)  # "sub" exists relative to here, and is still refused
    assert "not an existing absolute directory" in refusal("executable = job.sh\nqueue\n", bad)


def test_missing_cwd_is_refused(tmp_path: Path) -> None:
    assert "not an existing absolute directory" in refusal("executable = job.sh\nqueue\n", tmp_path / "gone")


# -- what rsub adds --------------------------------------------------------


def test_rsub_attributes_are_added(cwd: Path) -> None:
    prepared = run("executable = job.sh\nqueue\n", cwd)
    got = commands(prepared)
    assert got["My.RETRIEVED"] == "false"
    assert got["My.RsubInstance"] == f'"{INSTANCE}"'
    assert got["My.RsubId"] == f'"{prepared.tag}"'
    assert got["leave_in_queue"] == leave_in_queue(MAX_AGE)
    assert str(MAX_AGE) in got["leave_in_queue"]
    assert prepared.replaced == ()
    assert prepared.num_procs == 1
    assert prepared.request.cwd == str(cwd)


def test_tags_differ_per_submit(cwd: Path) -> None:
    assert run("executable = job.sh\nqueue\n", cwd).tag != run("executable = job.sh\nqueue\n", cwd).tag


def test_users_own_rsub_commands_are_replaced_and_reported(cwd: Path) -> None:
    text = (
        "executable = job.sh\nleave_in_queue = false\n+RETRIEVED = true\nMy.RsubInstance = \"mine\"\n"
        "+rsubid = \"x\"\nqueue\n"
    )
    prepared = run(text, cwd)
    assert prepared.replaced == ("leave_in_queue", "My.RETRIEVED", "My.RsubInstance", "My.RsubId")
    got = commands(prepared)
    assert got["leave_in_queue"] == leave_in_queue(MAX_AGE)
    assert got["My.RETRIEVED"] == "false"
    assert got["My.RsubInstance"] == f'"{INSTANCE}"'
    text_lower = prepared.request.text.lower()
    assert text_lower.count("leave_in_queue") == 1
    assert text_lower.count("retrieved") == 2  # My.RETRIEVED and the test in leave_in_queue
    assert '"mine"' not in prepared.request.text


def test_only_leave_in_queue_reported_when_only_it_was_set(cwd: Path) -> None:
    assert run("executable = job.sh\nLeave_In_Queue = true\nqueue\n", cwd).replaced == ("leave_in_queue",)


def test_leave_in_queue_is_false_unless_completed() -> None:
    expr = leave_in_queue(100)
    assert expr.startswith("JobStatus == 4 && RETRIEVED =!= true && (")
    assert expr.endswith("(time() - CompletionDate) < 100)")
    assert expr.count("(") == expr.count(")")


def test_executable_and_initialdir_are_made_absolute(cwd: Path) -> None:
    (cwd / "out").mkdir()
    prepared = run("executable = job.sh\ninitialdir = out\nqueue\n", cwd)
    got = commands(prepared)
    assert got["executable"] == str(cwd / "job.sh")
    assert got["initialdir"] == str(cwd / "out")
    assert prepared.iwds == (str(cwd / "out"),)


def test_executable_is_relative_to_cwd_not_initialdir(cwd: Path) -> None:
    (cwd / "out").mkdir()
    assert commands(run("executable = job.sh\ninitialdir = out\nqueue\n", cwd))["executable"] == str(cwd / "job.sh")


def test_default_initialdir_is_the_cwd(cwd: Path) -> None:
    prepared = run("executable = job.sh\nqueue 2\n", cwd)
    assert prepared.iwds == (str(cwd), str(cwd))
    assert os.path.isabs(commands(prepared)["initialdir"])


def test_absolute_paths_are_kept(cwd: Path, tmp_path: Path) -> None:
    prepared = run(f"executable = {cwd}/job.sh\ninitialdir = {tmp_path}\nqueue\n", cwd)
    got = commands(prepared)
    assert got["executable"] == f"{cwd}/job.sh"
    assert got["initialdir"] == str(tmp_path)


def test_initialdir_from_a_macro_is_relative_to_cwd(
    cwd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon's own working directory must not matter: only the submitter's does.
    (cwd / "a").mkdir()
    (cwd / "b").mkdir()
    monkeypatch.chdir(tmp_path)
    prepared = run("executable = job.sh\ninitialdir = $(d)\nqueue d in (a, b)\n", cwd)
    assert prepared.iwds == (str(cwd / "a"), str(cwd / "b"))
    (tmp_path / "c").mkdir()  # exists relative to the daemon, not to the submitter
    assert f"initialdir {cwd}/c is not a directory" in refusal(
        "executable = job.sh\ninitialdir = $(d)\nqueue d in (c)\n", cwd
    )


def test_executable_from_a_macro_is_relative_to_cwd(
    cwd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("exe = job.sh\nexecutable = $(exe)\nqueue\n", cwd).num_procs == 1
    (tmp_path / "other.sh").write_text("#!/bin/sh\n")  # exists relative to the daemon, not to the submitter
    assert f"executable {cwd}/other.sh does not exist" in refusal("exe = other.sh\nexecutable = $(exe)\nqueue\n", cwd)


# -- self-contained --------------------------------------------------------


def test_queue_from_file_is_inlined(cwd: Path) -> None:
    (cwd / "names.txt").write_text("alpha\nbeta\ngamma\n")
    for name in ("alpha", "beta", "gamma"):
        (cwd / f"in_{name}.txt").write_text(name)
    text = (
        "executable = job.sh\narguments = $(name)\ntransfer_input_files = in_$(name).txt\n"
        "output = out_$(name).txt\nqueue name from names.txt\n"
    )
    prepared = run(text, cwd)
    assert prepared.num_procs == 3
    assert "names.txt" not in prepared.request.text
    assert "from (" in prepared.request.text
    # Parsed somewhere without names.txt, it makes the same three jobs.
    desc = submitdesc.parse(prepared.request.text, cwd="/nonexistent")
    procs = submitdesc.expand(desc, cluster=9)
    assert [p["arguments"] for p in procs] == ["alpha", "beta", "gamma"]
    assert [p["transfer_input_files"] for p in procs] == ["in_alpha.txt", "in_beta.txt", "in_gamma.txt"]
    assert {p["executable"] for p in procs} == {str(cwd / "job.sh")}


def test_queue_matching_is_inlined(cwd: Path) -> None:
    (cwd / "d1.dat").write_text("1")
    (cwd / "d2.dat").write_text("2")
    prepared = run("executable = job.sh\ntransfer_input_files = $(f)\nqueue f matching *.dat\n", cwd)
    desc = submitdesc.parse(prepared.request.text, cwd="/nonexistent")
    assert [p["transfer_input_files"] for p in submitdesc.expand(desc, cluster=1)] == ["d1.dat", "d2.dat"]


def test_rendered_text_is_stable(cwd: Path) -> None:
    prepared = run("executable = job.sh\nqueue 3\n", cwd)
    desc = submitdesc.parse(prepared.request.text, cwd="/")
    assert submitdesc.render(desc) == prepared.request.text
    assert desc.num_procs() == prepared.num_procs == 3


# -- outputs that could never be retrieved are refused before anything is sent -----------------


@pytest.mark.parametrize(("line", "named"), [
    ("output = /proc/nope/x.out", "output /proc/nope/x.out could not be retrieved: cannot write /proc/nope"),
    ("error = job.sh/x.err", "(errno 20) Not a directory"),
    ("transfer_output_files = r.txt\ntransfer_output_remaps = \"r.txt = /proc/nope/r.txt\"", "/proc/nope/r.txt"),
])
def test_an_output_path_that_cannot_be_created_is_refused_naming_it(cwd: Path, line: str, named: str) -> None:
    assert named in refusal(f"executable = job.sh\n{line}\nqueue\n", cwd)


def test_output_directories_that_do_not_exist_yet_but_can_be_made_are_allowed(cwd: Path) -> None:
    prepared = run("executable = job.sh\noutput = new/deeper/out.$(Process)\nerror = /tmp/rsub-new-dir/err\nqueue 2\n",
                   cwd)
    assert prepared.num_procs == 2
    assert not (cwd / "new").exists() and not Path("/tmp/rsub-new-dir").exists()  # the check leaves no trace
    assert [p.name for p in cwd.iterdir() if p.name.startswith(".rsub")] == []


def test_a_read_only_output_directory_is_refused(cwd: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    import subprocess
    ro = cwd / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert "(errno 30) Read-only file system" in refusal("executable = job.sh\noutput = ro/x.out\nqueue\n", cwd)
    finally:
        subprocess.run(["umount", str(ro)])


def test_a_submits_own_token_joins_its_input_files(cwd: Path) -> None:
    token = cwd / "tok"
    token.write_text("t\n")
    (cwd / "in.txt").write_text("x")
    text = "executable = job.sh\ntransfer_input_files = in.txt\nqueue\n"
    got = prepare(text, cwd=str(cwd), instance_id=INSTANCE, max_age_seconds=MAX_AGE, job_token=str(token))
    assert commands(got)["transfer_input_files"] == f"in.txt, {token}"
    alone = prepare("executable = job.sh\nqueue\n", cwd=str(cwd), instance_id=INSTANCE, max_age_seconds=MAX_AGE,
                    job_token=str(token))
    assert commands(alone)["transfer_input_files"] == str(token)
    token.unlink()  # checked like any input: a token that is gone refuses the submit
    with pytest.raises(SubmitRefused, match="tok does not exist"):
        prepare(text, cwd=str(cwd), instance_id=INSTANCE, max_age_seconds=MAX_AGE, job_token=str(token))
