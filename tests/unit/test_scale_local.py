"""The embedded scheduler at scale: the constraint fast path agrees with classad2, and fake execution."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import classad2
import pytest

from rsubd.backends.local.ads import Constraint, Expr, getter, to_classad
from rsubd.backends.local.fastpath import compile_conjunction
from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import (
    POLL_PROJECTION,
    Action,
    ErrorKind,
    JobStatus,
    ScheddError,
    SubmitRequest,
    ids_constraint,
)
from rsubd.services.submission import prepare

NAMES = ["RsubInstance", "RETRIEVED", "JobStatus", "Owner", "Count", "Flag"]
VALUES: list[Any] = [
    None, True, False, 0, 1, 2, -1, 7, 2**40, "abc", "ABC", "Abc", "", "a b", "x&&y", 'q"uote', "\u00fcml",
    1.0, 2.5, Expr("1 + 1"), Expr("undefined"), Expr("JobStatus == 4"), [1, 2], "true",
]
LITERALS = ["0", "1", "2", "-1", "7", "1099511627776", '"abc"', '"ABC"', '"Abc"', '""', '"a b"', '"x&&y"',
            '"\u00fcml"', "true", "false", "undefined", "TRUE", "Undefined", "1.0", "2.5", '"q\\"uote"']
OPERATORS = ["==", "!=", "=?=", "=!=", "is", "isnt", "<", ">="]


def spelled(rng: random.Random, name: str) -> str:
    return rng.choice([name, name.lower(), name.upper()])


def random_ad(rng: random.Random) -> dict[str, Any]:
    ad: dict[str, Any] = {}
    for name in NAMES:
        if rng.random() < 0.8:
            ad[spelled(rng, name)] = rng.choice(VALUES)
    return ad


def random_part(rng: random.Random) -> str:
    name, lit, op = spelled(rng, rng.choice([*NAMES, "Missing"])), rng.choice(LITERALS), rng.choice(OPERATORS)
    roll = rng.random()
    if roll < 0.6:
        return f"{name} {op} {lit}"
    if roll < 0.7:
        return f"{lit} {op} {name}"
    return rng.choice([
        "true", "false", "TRUE", name, f"My.{name} == {lit}", f"!({name} == {lit})", f"isUndefined({name})",
        f"({name} {op} {lit} || {spelled(rng, 'Flag')} == true)", f"(({name} {op} {lit}))",
        f"{name} == {lit} + 1", f"{name}=={lit}",
    ])


def random_constraint(rng: random.Random) -> str:
    parts = [random_part(rng) for _ in range(rng.randint(1, 4))]
    text = " && ".join(parts)
    roll = rng.random()
    if roll < 0.1:
        return f"({text})"
    if roll < 0.15:
        return f"{text} || {random_part(rng)}"
    return text


def test_fast_path_decides_as_classad2_does() -> None:
    rng = random.Random(20261121)
    decided = checked = 0
    for _ in range(400):
        constraint = Constraint(random_constraint(rng))
        for _ in range(25):
            ad = random_ad(rng)
            verdict = constraint.decide(getter(ad))
            truth = constraint.matches(to_classad(ad))
            checked += 1
            if verdict is not None:
                decided += 1
                assert verdict == truth, (constraint.text, ad)
    assert decided > checked // 3  # the fast path really answers, it does not always defer


@pytest.mark.parametrize(
    ("text", "fast"),
    [
        ('RsubInstance == "abc" && RETRIEVED =!= true', True),
        ("true", True),
        ("ClusterId == 5 && ProcId == 3", True),
        ("(A == 1) && (B == 2 || C == 3)", True),  # the || part is classad2's
        ("A == 1 || B == 2", False),
        ("A ? B : C", False),
        ("My.A == 1", False),
        ("A == 1.5", False),
        ("'odd name' == 1", False),
        ("A == 1 /* comment */", False),
        ("member(ProcId, {1, 2})", False),
    ],
)
def test_what_the_fast_path_reads(text: str, fast: bool) -> None:
    classad2.ExprTree(text)  # every case is a valid constraint
    assert (compile_conjunction(text) is not None) is fast


# -- the scheduler -------------------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[LocalSchedd]:
    schedd = LocalSchedd("local", tmp_path / "schedd", autostart=False, execute="fake")
    yield schedd
    schedd.close()


def submit(schedd: LocalSchedd, root: Path, procs: int, instance: str = "inst") -> int:
    work = root / "work"
    work.mkdir(exist_ok=True)
    (work / "job.sh").write_text("#!/bin/sh\necho hi\n")
    (work / "job.sh").chmod(0o755)
    p = prepare(f"executable = job.sh\narguments = $(Process)\nqueue {procs}\n", cwd=str(work),
                instance_id=instance, max_age_seconds=864000)
    result = schedd.submit(p.request)
    schedd.spool(result)
    return result.cluster


def test_query_with_the_fast_path_matches_classad2_over_the_queue(fake: LocalSchedd, tmp_path: Path) -> None:
    rng = random.Random(7)
    clusters = [submit(fake, tmp_path, 20, instance=rng.choice(["inst", "other"])) for _ in range(5)]
    keys = [(c, p) for c in clusters for p in range(20)]
    for c, p in rng.sample(keys, 40):
        fake.edit([f"{c}.{p}"], rng.choice(["RETRIEVED", "Flag", "flag", "Count"]),
                  rng.choice(["true", "false", "undefined", "3", '"abc"', "1 + 1", "2.5"]))
    fake.fake_advance([f"{c}.{p}" for c, p in rng.sample(keys, 30)], JobStatus.RUNNING)
    fake.fake_advance([f"{c}.{p}" for c, p in rng.sample(keys, 30)], JobStatus.COMPLETED)
    constraints = [random_constraint(rng) for _ in range(60)] + [
        'RsubInstance == "inst" && RETRIEVED =!= true', 'RsubInstance == "INST"', "Flag =?= true && Count == 3",
    ]
    for text in constraints:
        by_classad2 = sorted(k for k in fake._procs if Constraint(text).matches(to_classad(fake.ad(k))))
        by_query = sorted((ad["ClusterId"], ad["ProcId"]) for ad in fake.query(text, ["ClusterId", "ProcId"]))
        assert by_query == by_classad2, text


def test_projection_is_what_the_full_ad_gives(fake: LocalSchedd, tmp_path: Path) -> None:
    cluster = submit(fake, tmp_path, 3)
    fake.edit([f"{cluster}.1"], "retrieved", "true")  # the spelling already in the ad wins
    fake.edit([f"{cluster}.2"], "Later", "JobStatus + 1")
    ads = fake.query(f"ClusterId == {cluster}", [*POLL_PROJECTION, "later", "NoSuchAttr"])
    assert [ad["RETRIEVED"] for ad in ads] == [False, True, False]
    assert "Later" not in ads[0] and ads[2]["Later"] == JobStatus.IDLE + 1
    assert all("NoSuchAttr" not in ad and ad["ServerTime"] > 0 for ad in ads)


def test_ids_constraint_stays_evaluable_for_thousands_of_scattered_ids() -> None:
    # A flat chain of thousands of || is too deep for classad2 (and for a schedd).
    ids = [(c, p) for c in range(1, 40) for p in range(0, 600, 7)]
    expr = classad2.ExprTree(ids_constraint(ids))
    wanted = set(ids)
    for c, p in [(1, 0), (1, 7), (1, 8), (39, 595), (40, 0), (20, 14), (20, 15)]:
        ad = classad2.ClassAd({"ClusterId": c, "ProcId": p})
        assert (expr.eval(ad) is True) == ((c, p) in wanted)
    runs = ids_constraint([(5, p) for p in range(10000)])
    assert runs == "(ClusterId == 5 && ((ProcId >= 0 && ProcId <= 9999)))"


# -- fake execution ------------------------------------------------------------


def test_fake_mode_runs_nothing_and_moves_jobs_when_told(fake: LocalSchedd, tmp_path: Path) -> None:
    cluster = submit(fake, tmp_path, 4)
    fake.tick()
    assert {ad["JobStatus"] for ad in fake.query("true", ["JobStatus"])} == {JobStatus.IDLE}
    assert not any((tmp_path / "schedd" / "spool").iterdir())  # nothing staged (the directory is made at start, 0700)
    assert not any((tmp_path / "schedd" / "execute").iterdir())  # no sandbox
    assert fake.fake_advance([f"{cluster}.0"], JobStatus.RUNNING) == 1
    assert fake.fake_advance([f"{cluster}.1", f"{cluster}.2"], JobStatus.COMPLETED, exit_code=3) == 2
    fake.fake_advance([f"{cluster}.3"], JobStatus.HELD, hold_reason="too big")
    ads = {ad["ProcId"]: ad for ad in fake.query("true", ["ProcId", "JobStatus", "ExitCode", "HoldReason",
                                                               "CompletionDate"])}
    assert ads[0]["JobStatus"] == JobStatus.RUNNING
    assert (ads[1]["JobStatus"], ads[1]["ExitCode"], ads[1]["CompletionDate"] > 0) == (JobStatus.COMPLETED, 3, True)
    assert (ads[3]["JobStatus"], ads[3]["HoldReason"]) == (JobStatus.HELD, "too big")
    fake.retrieve([f"{cluster}.1"])  # nothing was spooled, nothing to write; the schedd notes the fetch
    assert fake.query(f"ClusterId == {cluster} && ProcId == 1", ["StageOutFinish"])[0]["StageOutFinish"] > 0
    fake.edit([f"{cluster}.1", f"{cluster}.2"], "RETRIEVED", "true")
    fake.tick()  # leave_in_queue is now false: both go to history
    assert sorted(ad["ProcId"] for ad in fake.query("true", ["ProcId"])) == [0, 3]
    assert len(fake.history(f"ClusterId == {cluster}", ["ProcId"])) == 2
    result = fake.act(Action.REMOVE, [f"{cluster}.0", f"{cluster}.0"], reason="done with it")  # named twice
    assert (result.success, result.already_done) == (1, 1)
    assert fake.history(f"ClusterId == {cluster} && ProcId == 0", ["RemoveReason"])[0]["RemoveReason"].startswith(
        "done with it")


def test_fake_mode_still_refuses_missing_inputs(fake: LocalSchedd, tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "job.sh").write_text("#!/bin/sh\n")
    result = fake.submit(SubmitRequest(text="executable = job.sh\ntransfer_input_files = nope.txt\nqueue 2\n",
                                       cwd=str(work)))
    with pytest.raises(ScheddError) as failure:
        fake.spool(result)
    assert failure.value.kind is ErrorKind.INPUT_MISSING
    assert "nope.txt" in failure.value.message


def test_fake_advance_needs_fake_mode(tmp_path: Path) -> None:
    real = LocalSchedd("local", tmp_path / "real", autostart=False)
    try:
        assert real.execute == "real"
        with pytest.raises(RuntimeError, match="execute='fake'"):
            real.fake_advance("true", JobStatus.COMPLETED)
    finally:
        real.close()
    with pytest.raises(ValueError, match="execute must be one of"):
        LocalSchedd("local", tmp_path / "bad", autostart=False, execute="pretend")


def test_fake_mode_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSUB_LOCAL_EXECUTE", "fake")
    schedd = LocalSchedd("local", tmp_path / "env", autostart=False)
    try:
        assert schedd.execute == "fake"
    finally:
        schedd.close()


def test_fake_queue_reloads_with_its_index(tmp_path: Path) -> None:
    schedd = LocalSchedd("local", tmp_path / "q", autostart=False, execute="fake")
    cluster = submit(schedd, tmp_path, 3)
    schedd.edit([f"{cluster}.2"], "retrieved", "true")
    schedd.close()
    again = LocalSchedd("local", tmp_path / "q", autostart=False, execute="fake")
    try:
        ads = again.query('RsubInstance == "inst" && RETRIEVED =!= true', ["ProcId"])
        assert sorted(ad["ProcId"] for ad in ads) == [0, 1]
    finally:
        again.close()
