"""Expansion expands a command once when nothing in it differs per proc; what does differ is still right."""

from __future__ import annotations

from rsubd.submitdesc import expand, parse


def _expanded(text: str) -> list[dict[str, str]]:
    return expand(parse(text, cwd="/w"), cluster=7)


def test_per_proc_values_through_macro_chains() -> None:
    procs = _expanded(
        "b = x$(Process)\na = $(b)\nd = const\nc = $(a)-$(d)\n"
        "executable = run.sh\narguments = $(c)\noutput = $Fn(a).out\nerror = e.$(Cluster)\n"
        "My.Tag = \"$(d)\"\nqueue 3\n")
    assert [p["arguments"] for p in procs] == ["x0-const", "x1-const", "x2-const"]
    assert [p["output"] for p in procs] == ["x0.out", "x1.out", "x2.out"]
    assert {p["error"] for p in procs} == {"e.7"} and {p["My.Tag"] for p in procs} == {'"const"'}
    assert {p["executable"] for p in procs} == {"run.sh"}


def test_a_macro_read_first_by_a_constant_command_still_varies_where_it_should() -> None:
    # `a` holds no live name, but `b` (read through it only in arguments) does: order must not matter.
    procs = _expanded("n = $(ProcId)\nexecutable = run.sh\nenvironment = \"N=$(n)\"\narguments = $(n)\nqueue 2\n")
    assert [p["arguments"] for p in procs] == ["0", "1"]
    assert [p["environment"] for p in procs] == ['"N=0"', '"N=1"']


def test_queue_variables_step_and_items() -> None:
    procs = _expanded("executable = run.sh\narguments = $(name) $(Step) $(ItemIndex) $(Row)\n"
                      "output = $(name).out\nrequest_memory = 100\nqueue 2 name in (p, q)\n")
    assert [p["arguments"] for p in procs] == ["p 0 0 0", "p 1 0 0", "q 0 1 1", "q 1 1 1"]
    assert [p["output"] for p in procs] == ["p.out", "p.out", "q.out", "q.out"]
    assert {p["request_memory"] for p in procs} == {"100"}
