"""jobsub_lite's dagnabbit format, read into nodes and PARENT/CHILD edges."""

from __future__ import annotations

import pytest

from rsub.jobsub.dagnabbit import DagnabbitError, edges, expand, nodes_of, parse

DAG8 = """\
<serial>
jobsub_submit $SUBMIT_FLAGS file://./jobA.sh
prescript file://./init.sh $JOB init
jobsub_submit file://./jobB.sh
</serial>
<parallel>
  <serial>
  jobsub_submit file://./jobC.sh
  jobsub_submit file://./jobD.sh
  </serial>
  jobsub_submit file://./jobE.sh
</parallel>
<serial>
jobsub_submit file://./jobF.sh
postscript file://./ck.sh $RETURN $JOB
</serial>
"""


def test_blocks_become_edges_serial_inside_parallel_included() -> None:
    top = parse(DAG8, "d", {"SUBMIT_FLAGS": "-N 2"})
    nodes = nodes_of(top)
    assert [n.name for n in nodes] == [f"stage_{i}" for i in range(1, 7)]
    assert nodes[0].words == ["-N", "2", "file://./jobA.sh"] and nodes[0].scripts == [
        ("PRE", ["file://./init.sh", "$JOB", "init"])]
    assert nodes[5].scripts == [("POST", ["file://./ck.sh", "$RETURN", "$JOB"])]
    pairs: list[tuple[list[str], list[str]]] = []
    edges(top, pairs)
    assert sorted(pairs) == [(["stage_1"], ["stage_2"]), (["stage_2"], ["stage_3", "stage_5"]),
                             (["stage_3"], ["stage_4"]), (["stage_4", "stage_5"], ["stage_6"])]


def test_environment_variables_are_expanded_but_dagmans_own_are_left_for_it() -> None:
    assert expand("$A ${B} $JOB $RETURN $UNSET.", {"A": "1", "B": "2", "JOB": "x"}) == "1 2 $JOB $RETURN ."


@pytest.mark.parametrize(("text", "message"), [
    ("jobsub_submit file://a.sh\n", "must be inside a <serial> or <parallel>"),
    ("<serial>\njobsub_submit file://a.sh\n", "<serial> is never closed"),
    ("<serial>\njobsub_submit file://a.sh\n</parallel>\n", "closes no open <parallel>"),
    ("<serial>\nprescript file://p.sh\n</serial>\n", "prescript follows a jobsub_submit line"),
    ("<serial>\ncondor_submit x.sub\n</serial>\n", "not 'condor_submit'"),
    ("<serial>\n</serial>\n", "no jobsub_submit line"),
])
def test_what_is_not_dagnabbit_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(DagnabbitError, match=message):
        parse(text, "d", {})
