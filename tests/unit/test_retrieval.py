"""A repeated retrieve: set aside what was written since the first attempt, keep the user's edits."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rsubd.services import retrieval


def test_output_targets_come_from_the_description_with_remaps(tmp_path: Path) -> None:
    text = ("executable = /bin/true\noutput = out_$(Cluster).$(Process).txt\nerror = /dev/null\n"
            "transfer_output_files = a.txt, b.txt\ntransfer_output_remaps = \"a.txt = sub/a_$(Process).txt\"\n"
            f"initialdir = {tmp_path}\nqueue 2\n")
    targets = retrieval.output_targets(text, str(tmp_path), 7, [1])
    assert targets == {1: [tmp_path / "out_7.1.txt", tmp_path / "sub/a_1.txt", tmp_path / "b.txt"]}


def test_identical_copies_go_and_the_users_edit_wins_its_name(tmp_path: Path) -> None:
    since = time.time()
    same, edited, older = tmp_path / "same.txt", tmp_path / "edited.txt", tmp_path / "older.txt"
    same.write_text("output\n")
    edited.write_text("my notes\n")
    older.write_text("from last week\n")
    past = since - 3600
    os.utime(older, (past, past))
    moved = retrieval.set_aside([same, edited, older], since)
    assert {p for p, _ in moved} == {same, edited}  # a file older than the first attempt is not rsub's to guard
    same.write_text("output\n")  # the repeat writes the job's output again
    edited.write_text("output\n")
    refetched = retrieval.settle(moved, succeeded=True)
    assert same.read_text() == "output\n" and edited.read_text() == "my notes\n"
    assert len(refetched) == 1 and Path(refetched[0]).read_text() == "output\n"
    assert sorted(p.name for p in tmp_path.iterdir() if ".rsub-" in p.name) == [Path(refetched[0]).name]


def test_a_failed_repeat_puts_everything_back(tmp_path: Path) -> None:
    since = time.time()
    edited = tmp_path / "edited.txt"
    edited.write_text("my notes\n")
    moved = retrieval.set_aside([edited, tmp_path / "absent.txt"], since)
    edited.write_text("half writ")  # the failed repeat got this far
    assert retrieval.settle(moved, succeeded=False) == []
    assert edited.read_text() == "my notes\n"
    assert [p.name for p in tmp_path.iterdir()] == ["edited.txt"]


def test_a_repeat_cut_short_after_setting_aside_is_finished_by_the_next(tmp_path: Path) -> None:
    since = time.time()
    edited = tmp_path / "edited.txt"
    edited.write_text("my notes\n")
    retrieval.set_aside([edited], since)  # then rsubd is killed before the retrieve
    assert not edited.exists()
    moved = retrieval.set_aside([edited], since)  # the next repeat finds what the last one set aside
    edited.write_text("output\n")
    retrieval.settle(moved, succeeded=True)
    assert edited.read_text() == "my notes\n"
    assert [p.read_text() for p in tmp_path.glob("edited.txt.rsub-refetched-*")] == ["output\n"]
    assert not list(tmp_path.glob("*.rsub-kept-*"))


def test_leftovers_are_found_for_settling(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("output\n")
    (tmp_path / "out.txt.rsub-kept-1").write_text("old\n")
    (tmp_path / "out.txt.rsub-kept-2").write_text("my notes\n")
    assert retrieval.leftovers([out, tmp_path / "other.txt"]) == [(out, tmp_path / "out.txt.rsub-kept-2")]
    retrieval.settle(retrieval.leftovers([out]), succeeded=True)
    assert out.read_text() == "my notes\n"
