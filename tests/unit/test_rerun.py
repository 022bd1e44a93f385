"""rsub resubmit's description: the chosen procs again, each with its own row, macros and file names."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsubd import submitdesc
from rsubd.services.rerun import RerunError, parse_overrides, rerun_description
from rsubd.services.submission import prepare

SUB = """\
executable = job.sh
arguments = $(item) $(Process) $(Cluster)
transfer_input_files = input_$(item).txt
output = out_$(item).txt
log = job.log
queue item from items.txt
"""


@pytest.fixture
def submitted(tmp_path: Path) -> str:
    (tmp_path / "job.sh").write_text("#!/bin/sh\n")
    (tmp_path / "items.txt").write_text("a\nb\nc\n")
    for item in "abc":
        (tmp_path / f"input_{item}.txt").write_text(item)
    return prepare(SUB, cwd=str(tmp_path), instance_id="i", max_age_seconds=60).request.text


def test_chosen_procs_keep_their_rows_and_old_numbers(submitted: str, tmp_path: Path) -> None:
    text = rerun_description(submitted, str(tmp_path), 12, [2, 0], [("request_memory", "4096")])
    procs = submitdesc.expand(submitdesc.parse(text, cwd=str(tmp_path)), cluster=30)
    assert [p["arguments"] for p in procs] == ["c 2 12", "a 0 12"]
    assert [p["transfer_input_files"] for p in procs] == ["input_c.txt", "input_a.txt"]
    assert all(p["request_memory"] == "4096" and p["log"] == "job.log" for p in procs)
    # rsub's own commands are gone; prepare adds fresh ones (a new RsubId) to the new cluster.
    assert "RsubId" not in text and "leave_in_queue" not in text and "rsub_log" not in text
    again = prepare(text, cwd=str(tmp_path), instance_id="i", max_age_seconds=60)
    assert again.num_procs == 2 and again.replaced == ()


def test_one_proc_is_a_plain_queue(submitted: str, tmp_path: Path) -> None:
    text = rerun_description(submitted, str(tmp_path), 12, [1])
    assert text.rstrip().endswith("\nqueue") and "arguments = b 1 12" in text


def test_bad_choices_and_overrides_are_refused(submitted: str, tmp_path: Path) -> None:
    with pytest.raises(RerunError, match="no proc 7"):
        rerun_description(submitted, str(tmp_path), 12, [7])
    with pytest.raises(RerunError, match="key = value"):
        parse_overrides(["request_memory 4096"])
    with pytest.raises(RerunError, match="rsub's own"):
        parse_overrides(["leave_in_queue = true"])
    assert parse_overrides([" request_memory = 4 GB "]) == [("request_memory", "4 GB")]
