"""Reading a .dag and its nodes' descriptions: every file found, paths flattened, the rest refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rsubd.dag import dagfile, discover, stage
from rsubd.dag.dagfile import DagError

DIAMOND = Path(__file__).resolve().parents[1] / "data" / "dag" / "diamond"


@pytest.fixture
def diamond(tmp_path: Path) -> Path:
    shutil.copytree(DIAMOND, tmp_path / "d")
    return tmp_path / "d"


def test_the_diamond_spools_every_file_once_under_its_own_name(diamond: Path) -> None:
    plan = discover.plan(diamond / "probe.dag", node_attrs=(("My.RsubInstance", '"i"'),))
    assert sorted(plan.flat.files) == ["flaky.sh", "input_A.txt", "input_B.txt", "input_C.txt", "input_D.txt",
                                       "node.sh"]
    assert plan.flat.files["node.sh"] == diamond / "node.sh"
    assert [n.name for n in plan.nodes] == ["A", "B", "C", "D"]
    assert plan.nodes[3].parents == ("B", "C") and plan.nodes[2].retries == 2
    assert {n.home for n in plan.nodes} == {str(diamond)}
    assert plan.homes() == []  # every output goes home to the DAG's directory: nothing to move elsewhere
    dag = plan.flat.texts["probe.dag"]
    assert 'VARS D node="D" greeting="hello-from-D" extra_inputs=",out_B.txt,out_C.txt"' in dag
    assert "PARENT B C CHILD D" in dag and "RETRY C 2" in dag
    job_c = next(line for line in dag.splitlines() if line.startswith("JOB C"))
    flaky = plan.flat.texts[job_c.split()[2]]
    # DAGMan's own $(RETRY) survives; the node's VARS are filled in; rsub's tag is added.
    assert "output = out_C.try$(RETRY).stdout" in flaky
    assert "transfer_input_files = input_C.txt" in flaky and 'My.RsubInstance = "i"' in flaky
    job_d = next(line for line in dag.splitlines() if line.startswith("JOB D"))
    assert "transfer_input_files = input_D.txt,out_B.txt,out_C.txt" in plan.flat.texts[job_d.split()[2]]


def test_a_missing_executable_or_input_is_refused_before_anything_is_sent(diamond: Path) -> None:
    (diamond / "flaky.sh").unlink()
    with pytest.raises(DagError, match=r"node C .*executable .*flaky.sh does not exist"):
        discover.plan(diamond / "probe.dag")
    shutil.copy(DIAMOND / "flaky.sh", diamond / "flaky.sh")
    (diamond / "input_B.txt").unlink()
    discover.plan(diamond / "probe.dag")  # A comes first and sends back every file it makes: it may write it
    (diamond / "input_A.txt").unlink()
    with pytest.raises(DagError, match=r"node A .*input_A.txt does not exist, and no node of the DAG writes it"):
        discover.plan(diamond / "probe.dag")
    (diamond / "input_A.txt").write_text("a")
    (diamond / "node.sub").unlink()
    with pytest.raises(DagError, match=r"node A: submit file .*node.sub does not exist"):
        discover.plan(diamond / "probe.dag")


def test_an_input_no_node_writes_is_refused_when_every_writer_names_its_outputs(diamond: Path) -> None:
    for sub in ("node.sub", "flaky.sub"):
        text = (diamond / sub).read_text().replace("queue", "transfer_output_files = out_$(node).txt\nqueue")
        (diamond / sub).write_text(text)
    discover.plan(diamond / "probe.dag")  # D reads out_B.txt and out_C.txt, which B and C name
    (diamond / "probe.dag").write_text((diamond / "probe.dag").read_text().replace(
        ",out_B.txt,out_C.txt", ",out_B.txt,out_X.txt"))
    with pytest.raises(DagError, match=r"node D .*out_X.txt does not exist"):
        discover.plan(diamond / "probe.dag")


def test_a_node_initialdir_sends_its_outputs_home_there(diamond: Path) -> None:
    (diamond / "b").mkdir()
    (diamond / "b" / "input_B.txt").write_text("b")
    (diamond / "input_B.txt").unlink()
    (diamond / "b.sub").write_text((diamond / "node.sub").read_text().replace("queue", "initialdir = b\nqueue"))
    dag = (diamond / "probe.dag").read_text().replace("JOB B node.sub", "JOB B b.sub")
    (diamond / "probe.dag").write_text(dag)
    plan = discover.plan(diamond / "probe.dag")
    assert plan.flat.files["input_B.txt"] == diamond / "b" / "input_B.txt"
    assert ("out_B.stdout", str(diamond / "b")) in plan.homes()
    b = next(n for n in plan.nodes if n.name == "B")
    assert b.home == str(diamond / "b")
    job_b = next(line for line in plan.flat.texts["probe.dag"].splitlines() if line.startswith("JOB B"))
    assert "initialdir = ." in plan.flat.texts[job_b.split()[2]]


def test_two_different_inputs_of_one_name_are_refused(diamond: Path) -> None:
    (diamond / "b").mkdir()
    (diamond / "b" / "input_A.txt").write_text("another A")
    (diamond / "b.sub").write_text((diamond / "node.sub").read_text().replace(
        "input_$(node).txt", "b/input_A.txt"))
    (diamond / "probe.dag").write_text((diamond / "probe.dag").read_text().replace("JOB B node.sub", "JOB B b.sub"))
    with pytest.raises(DagError, match=r"the same name 'input_A.txt'"):
        discover.plan(diamond / "probe.dag")


def test_scripts_config_and_splices_are_spooled_and_renamed(diamond: Path) -> None:
    (diamond / "pre.sh").write_text("#!/bin/sh\n")
    (diamond / "dagman.config").write_text("DAGMAN_MAX_JOBS_IDLE = 5\n")
    (diamond / "inner").mkdir()
    (diamond / "inner" / "inner.dag").write_text("JOB X x.sub\n")
    (diamond / "inner" / "x.sub").write_text("executable = /bin/true\ntransfer_executable = false\nqueue\n")
    with (diamond / "probe.dag").open("a") as f:
        f.write("SCRIPT PRE A pre.sh $JOB\nSCRIPT POST B /bin/true\nCONFIG dagman.config\n"
                "SPLICE S inner.dag DIR inner\nPARENT D CHILD S\nCATEGORY A slow\nMAXJOBS slow 1\n")
    plan = discover.plan(diamond / "probe.dag")
    dag = plan.flat.texts["probe.dag"]
    assert "SCRIPT PRE A pre.sh $JOB" in dag and "SCRIPT POST B /bin/true" in dag
    assert "CONFIG dagman.config" in dag and "SPLICE S inner.dag\n" in dag  # DIR dropped: one flat directory
    assert "JOB X x.sub" in plan.flat.texts["inner.dag"]
    assert plan.flat.files["pre.sh"] == diamond / "pre.sh"
    assert "S+X" in [n.name for n in plan.nodes] and plan.maxjobs == {"slow": 1}


@pytest.mark.parametrize(("line", "message"), [
    ("PROVISIONER P p.sub", "PROVISIONER nodes"),
    ("JOB E {", "inline submit descriptions"),
    ("FROBNICATE A", "unknown DAG statement 'FROBNICATE'"),
    ("RETRY A many", "RETRY needs a node and a number"),
    ("PARENT A B", "PARENT needs CHILD"),
    ("JOB A node.sub", "node 'A' is defined twice"),
    ("PARENT D CHILD A", "cycle"),
])
def test_what_rsub_cannot_spool_is_refused_with_its_line(diamond: Path, line: str, message: str) -> None:
    with (diamond / "probe.dag").open("a") as f:
        f.write(line + "\n")
    with pytest.raises(DagError, match=message):
        discover.plan(diamond / "probe.dag")


def test_the_dagman_job_runs_the_access_points_dagman_with_relative_paths_only(diamond: Path, tmp_path: Path) -> None:
    plan = discover.plan(diamond / "probe.dag")
    staged = stage.write(plan, tmp_path / "stage", dagman="/opt/condor/bin/condor_dagman", max_jobs=2,
                         submitted_at=1.0)
    text = staged.description
    assert "universe = scheduler\nexecutable = /opt/condor/bin/condor_dagman\ntransfer_executable = false\n" in text
    args = next(line for line in text.splitlines() if line.startswith("arguments"))
    assert "-Lockfile probe.dag.lock -AutoRescue 1 -DoRescueFrom 0 -Dag probe.dag" in args
    assert "-Dagman /opt/condor/bin/condor_dagman -MaxJobs 2" in args and str(diamond) not in args
    assert "_CONDOR_DAGMAN_QUEUE_UPDATE_INTERVAL=5" in text and "My.DisableCoolDown = true" in text
    assert "getenv" not in text and str(diamond) not in text
    inputs = next(line for line in text.splitlines() if line.startswith("transfer_input_files")).split(" = ")[1]
    assert set(inputs.split(",")) == {p.name for p in (tmp_path / "stage").iterdir() if p.name != stage.MANIFEST}
    assert (tmp_path / "stage" / "node.sh").read_bytes() == (diamond / "node.sh").read_bytes()
    assert not (tmp_path / "stage" / "node.sh").is_symlink()
    manifest = stage.read_manifest(tmp_path / "stage")
    assert manifest is not None and manifest["dag_dir"] == str(diamond) and len(manifest["nodes"]) == 4


def test_a_dag_file_is_written_back_with_only_its_file_names_changed() -> None:
    dag = dagfile.parse('# c\nJOB A a.sub DIR x\nVARS A v="a \\"q\\""\nPARENT A CHILD B\n', "t.dag")
    dag.nodes[0].statement.words[2] = "a.2.sub"
    assert dag.render() == '# c\nJOB A a.2.sub DIR x\nVARS A v="a \\"q\\""\nPARENT A CHILD B\n'
    assert dag.vars == {"A": [("v", 'a "q"')]}


def test_a_subdag_is_spooled_with_its_own_nodes_files(diamond: Path) -> None:
    (diamond / "sub").mkdir()
    (diamond / "sub" / "sub.dag").write_text("JOB Y y.sub\n")
    (diamond / "sub" / "y.sub").write_text("executable = y.sh\nqueue\n")
    (diamond / "sub" / "y.sh").write_text("#!/bin/sh\n")
    with (diamond / "probe.dag").open("a") as f:
        f.write("SUBDAG EXTERNAL S sub.dag DIR sub\nPARENT D CHILD S\n")
    plan = discover.plan(diamond / "probe.dag")
    assert "SUBDAG EXTERNAL S sub.dag\n" in plan.flat.texts["probe.dag"]
    assert "JOB Y y.sub" in plan.flat.texts["sub.dag"] and plan.flat.files["y.sh"] == diamond / "sub" / "y.sh"
    s = next(n for n in plan.nodes if n.name == "S")
    assert s.parents == ("D",) and s.home == str(diamond / "sub")
    (diamond / "sub" / "y.sh").unlink()
    with pytest.raises(DagError, match=r"node S/Y .*y.sh does not exist"):
        discover.plan(diamond / "probe.dag")


def test_a_missing_config_or_script_is_refused(diamond: Path) -> None:
    with (diamond / "probe.dag").open("a") as f:
        f.write("CONFIG nowhere.config\n")
    with pytest.raises(DagError, match=r"line 13: CONFIG file .*nowhere.config does not exist"):
        discover.plan(diamond / "probe.dag")
    (diamond / "probe.dag").write_text((diamond / "probe.dag").read_text().replace("CONFIG nowhere.config\n",
                                                                                   "SCRIPT POST D check.sh\n"))
    with pytest.raises(DagError, match=r"SCRIPT POST D: .*check.sh does not exist"):
        discover.plan(diamond / "probe.dag")


def test_a_node_initialdir_that_does_not_exist_is_refused_before_staging(diamond: Path, tmp_path: Path) -> None:
    from rsubd.services import dagsubmit

    (diamond / "a.sub").write_text("executable = node.sh\ninitialdir = nowhere\noutput = a.out\nqueue\n")
    (diamond / "probe.dag").write_text((diamond / "probe.dag").read_text().replace("JOB A node.sub", "JOB A a.sub"))
    order = dagsubmit.DagOrder(dag=str(diamond / "probe.dag"), dagman="/usr/bin/condor_dagman",
                               staging_root=tmp_path / "dags")
    with pytest.raises(DagError, match=r"nowhere is not a directory, so the DAG's files could not come home"):
        dagsubmit.stage_dag(order, "i")
    assert not (tmp_path / "dags").exists()
    (diamond / "nowhere").mkdir()
    staged = dagsubmit.stage_dag(order, "i")
    assert staged.directory.parent == tmp_path / "dags" and (staged.directory / stage.MANIFEST).is_file()


def test_a_node_of_several_procs_keeps_their_own_names(diamond: Path) -> None:
    (diamond / "many.sub").write_text("executable = node.sh\noutput = many.$(Process).out\nqueue 3\n")
    (diamond / "probe.dag").write_text((diamond / "probe.dag").read_text().replace("JOB A node.sub", "JOB A many.sub"))
    plan = discover.plan(diamond / "probe.dag")
    job_a = next(line for line in plan.flat.texts["probe.dag"].splitlines() if line.startswith("JOB A"))
    assert "output = many.$(Process).out" in plan.flat.texts[job_a.split()[2]]
    assert "many.*.out" in plan.flat.outputs
