"""rsub why on the embedded scheduler: its own slots play the pool's part."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e


def test_why_names_the_clause_no_slot_satisfies(rsubd: Rsubd, workdir: Path) -> None:
    write_job(workdir, "job.sh", "echo hi\n")
    # Item 0 asks for far more memory than the machine has; item 1 needs a slot attribute nobody has.
    (workdir / "job.sub").write_text("executable = job.sh\nrequest_memory = $(mem)\nrequirements = $(req)\n"
                                     'queue mem, req from (\n67108864, true\n64, TARGET.HasQuantum =?= true\n'
                                     "64, TARGET.Memory > 1\n)\n")
    cluster = rsubd.json("submit", "job.sub", cwd=workdir)["cluster"]
    # The third matches and runs; the other two stay idle, as in a pool.
    wait_until(lambda: rsubd.states(f"{cluster}.2") == {f"{cluster}.2@local": "retrieved"}, 60, "the third job done")
    assert rsubd.states(str(cluster))[f"{cluster}.0@local"] == "idle"

    big = rsubd.json("why", f"{cluster}.0")["jobs"][0]
    assert big["state"] == "idle" and big["analysis"]["matching_slots"] == 0
    memory = next(c for c in big["analysis"]["clauses"] if c["clause"] == "TARGET.Memory >= RequestMemory")
    assert memory["slots"] == 0 and memory["added_for_request"] is True
    assert any(s.startswith("request_memory 64 TB: the largest slot has ") for s in big["says"]), big["says"]

    odd = rsubd.json("why", f"{cluster}.1")["jobs"][0]
    clause = next(c for c in odd["analysis"]["clauses"] if "HasQuantum" in c["clause"])
    assert clause["slots"] == 0 and clause["missing_attributes"] == ["HasQuantum"]
    # The clause as classad2 prints it (`=?=` reads `is`).
    assert odd["says"] == [f"no slot satisfies {clause['clause']} (no slot has HasQuantum)"]
    text = rsubd.rsub("why", f"{cluster}.1").stdout
    assert "no slot has HasQuantum" in text and "TARGET.Memory >= RequestMemory" in text

    done = rsubd.json("why", f"{cluster}.2")["jobs"][0]
    assert done["says"] == ["retrieved: it ran and ended with exit code 0"]
    rsubd.rsub("rm", str(cluster))


def test_why_a_held_job_shows_its_reason_and_stderr(rsubd: Rsubd, workdir: Path) -> None:
    write_job(workdir, "job.sh", "echo 'it went wrong' >&2\n")
    (workdir / "job.sub").write_text("executable = job.sh\nerror = err.txt\ntransfer_output_files = result.txt\n"
                                     "queue\n")
    cluster = rsubd.json("submit", "job.sub", cwd=workdir)["cluster"]
    wait_until(lambda: rsubd.states(str(cluster)) == {f"{cluster}.0@local": "held"}, 60, "held")
    (workdir / "err.txt").write_text("an earlier line\nit went wrong\n")  # as a retrieve would have left it
    held = rsubd.json("why", f"{cluster}.0")["jobs"][0]
    assert held["says"][0].startswith("held (code 12): ") and "transfer_output_files" in held["says"][1]
    assert held["stderr_tail"] == ["an earlier line", "it went wrong"]
    rsubd.rsub("rm", str(cluster))
