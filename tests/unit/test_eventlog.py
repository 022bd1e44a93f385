"""The user's job event log made whole again from each proc's copy (issue 13, item 4)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from rsubd.services import eventlog


def _event(code: int, job: str, when: str, body: str = "") -> str:
    c, p = job.split(".")
    return f"{code:03d} ({int(c):03d}.{int(p):03d}.000) {when} Job event\n{body}...\n"


def test_per_proc_copies_merge_into_the_users_log_in_time_order(tmp_path: Path) -> None:
    user = tmp_path / "job.log"
    user.write_text(_event(0, "185.0", "2026-12-01 11:00:00"))  # an earlier cluster's, kept
    user.chmod(0o640)
    parts = []
    for proc, start in enumerate(("12:00:02", "12:00:01", "12:00:03")):
        part = tmp_path / f"job.log.rsub-186.{proc}"
        part.write_text(_event(0, f"186.{proc}", "2026-12-01 12:00:00")
                        + _event(1, f"186.{proc}", f"2026-12-01 {start}")
                        + _event(5, f"186.{proc}", "2026-12-01 12:00:09", "\t(1) Normal termination (return value 0)\n"))
        parts.append(part)
    assert eventlog.merge(user, parts) == 9
    got = eventlog.events(user.read_text())
    assert [e[:22] for e in got] == [
        "000 (185.000.000) 2026", "000 (186.000.000) 2026", "000 (186.001.000) 2026", "000 (186.002.000) 2026",
        "001 (186.001.000) 2026", "001 (186.000.000) 2026", "001 (186.002.000) 2026",
        "005 (186.000.000) 2026", "005 (186.001.000) 2026", "005 (186.002.000) 2026"]
    assert not any(p.exists() for p in parts)  # each proc's copy is gone once merged
    assert stat.S_IMODE(user.stat().st_mode) == 0o640


def test_a_repeated_merge_adds_nothing(tmp_path: Path) -> None:
    user = tmp_path / "job.log"
    part = tmp_path / "job.log.rsub-1.0"
    text = _event(0, "1.0", "2026-12-01 12:00:00") + _event(5, "1.0", "2026-12-01 12:00:05")
    part.write_text(text)
    assert eventlog.merge(user, [part]) == 2
    part.write_text(text)  # the same copy again: a repeated retrieve, or a crash before the removal
    assert eventlog.merge(user, [part]) == 0
    assert user.read_text() == text and not part.exists()


def test_a_torn_tail_and_text_that_is_not_an_event_are_dropped(tmp_path: Path) -> None:
    user = tmp_path / "job.log"
    part = tmp_path / "part"
    part.write_text("garbage\n" + _event(0, "1.0", "2026-12-01 12:00:00") + "001 (001.000.000) 2026-12-01 12:00:01 Job ex")
    assert eventlog.merge(user, [part]) == 1
    assert user.read_text() == _event(0, "1.0", "2026-12-01 12:00:00")


def test_a_missing_part_is_a_merge_already_done(tmp_path: Path) -> None:
    user = tmp_path / "job.log"
    assert eventlog.merge(user, [tmp_path / "gone"]) == 0
    assert not user.exists()


def test_old_style_dates_sort_too(tmp_path: Path) -> None:
    (tmp_path / "a").write_text(_event(5, "1.0", "12/01 12:00:05"))
    (tmp_path / "b").write_text(_event(0, "1.1", "12/01 12:00:00"))
    assert eventlog.merge(tmp_path / "job.log", [tmp_path / "a", tmp_path / "b"]) == 2
    assert [e[:3] for e in eventlog.events((tmp_path / "job.log").read_text())] == ["000", "005"]


def test_every_log_but_none_or_a_tilde_one_is_sent_under_a_per_proc_name() -> None:
    # An absolute log comes home too: a schedd rewrites UserLog to its basename when it spools.
    for value in ("job.log", "logs/$(Cluster).log", "/abs/job.log"):
        assert eventlog.per_proc_log(value) == "$(rsub_log).rsub-$(ClusterId).$(ProcId)"
    for value in ("~/job.log", "/dev/null", ""):
        assert eventlog.per_proc_log(value) is None


def test_the_embedded_schedulers_events_merged_are_a_log_htcondors_reader_reads(tmp_path: Path) -> None:
    # Every event the embedded scheduler writes, for two procs, merged: htcondor2.JobEventLog (what
    # condor_wait and the bindings use) must read each one with the fields HTCondor's writer gives it.
    import htcondor2

    from rsubd.backends.local import events as local_events
    base = 1796119200.0
    for proc, steps in ((0, [(2, {}), (1, {}), (5, {"HoldReason": "", "HoldReasonCode": 1}),
                             (1, {"ReleaseReason": "two\nlines"}), (2, {}), (4, {"ExitCode": 3})]),
                        (1, [(2, {}), (4, {"ExitBySignal": True, "ExitSignal": 9}), (3, {"RemoveReason": "by me"})])):
        ad = {"ClusterId": 186, "ProcId": proc, "UserLog": f"job.log.rsub-186.{proc}", "Iwd": str(tmp_path),
              "JobStatus": 1}
        local_events.submitted(ad, base + proc)
        for n, (status, attrs) in enumerate(steps):
            old = ad["JobStatus"]
            ad.update(attrs, JobStatus=status)
            local_events.changed(ad, old, base + 2 * n + proc)
    user = tmp_path / "job.log"
    assert eventlog.merge(user, [tmp_path / "job.log.rsub-186.0", tmp_path / "job.log.rsub-186.1"]) == 11
    got = [(int(e.type), e.proc, dict(e.items())) for e in htcondor2.JobEventLog(str(user)).events(stop_after=0)]
    assert [(t, p) for t, p, _ in got] == [(0, 0), (1, 0), (0, 1), (1, 1), (4, 0), (5, 1), (12, 0), (9, 1),
                                           (13, 0), (1, 0), (5, 0)]
    assert [e.get("ReturnValue") for t, _, e in got if t == 5] == [None, 3]
    assert [e.get("TerminatedBySignal") for t, _, e in got if t == 5] == [9, None]
    assert [e.get("Reason") for t, _, e in got if t in (9, 13)] == ["by me", "two lines"]
    assert [e.get("HoldReasonCode") for t, _, e in got if t == 12] == [1]
    assert [e["EventTime"] for _, _, e in got] == sorted(e["EventTime"] for _, _, e in got)


def test_a_clusters_log_names_are_expanded_once_for_all_its_retrieves(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    # Procs come home a few at a time: expanding the description for each batch made a big cluster's
    # retrieves quadratic (bench/eventlog.py).
    from rsubd import submitdesc
    from rsubd.services import retrieval

    calls = []
    real = submitdesc.expand
    monkeypatch.setattr(submitdesc, "expand", lambda *a, **k: calls.append(1) or real(*a, **k))
    text = (f"executable = /bin/true\ninitialdir = {tmp_path}\nrsub_log = job.log\n"
            "log = $(rsub_log).rsub-$(ClusterId).$(ProcId)\nqueue 50\n")
    got = [retrieval.log_targets(text, str(tmp_path), 4242, [p, p + 1]) for p in range(0, 50, 2)]
    assert len(calls) == 1
    assert got[3] == {6: ([tmp_path / "job.log.rsub-4242.6"] * 2, tmp_path / "job.log"),
                      7: ([tmp_path / "job.log.rsub-4242.7"] * 2, tmp_path / "job.log")}
    assert retrieval.log_targets(text, str(tmp_path), 4242, [50]) == {}  # no such proc


@pytest.mark.parametrize("log", ["logs/job.log", "ABS/job.log"])
def test_a_log_with_a_directory_comes_home_under_its_basename_and_joins_the_log_it_names(log: str,
                                                                                       tmp_path: Path) -> None:
    # The schedd writes each proc's copy as the basename of its UserLog (dag/README: UserLog
    # "probe.dag.dagman.log" for /work/dagprobe/s1a/probe.dag.dagman.log) and the retrieve brings it
    # into the initialdir; the user's log is the one the description names.
    from rsubd.services import retrieval

    log = log.replace("ABS", str(tmp_path / "elsewhere"))
    text = (f"executable = /bin/true\ninitialdir = {tmp_path}\nrsub_log = {log}\n"
            "log = $(rsub_log).rsub-$(ClusterId).$(ProcId)\nqueue 2\n")
    got = retrieval.log_targets(text, str(tmp_path), 9, [1])
    copies, user = got[1]
    assert copies[0] == tmp_path / "job.log.rsub-9.1" and user == tmp_path / log
    copies[0].write_text(_event(5, "9.1", "2026-12-01 12:00:00"))
    user.parent.mkdir(exist_ok=True)
    assert eventlog.merge(user, copies) == 1 and not copies[0].exists()
    moved = retrieval.log_targets(text, str(tmp_path), 9, [1], dest=str(tmp_path / "dest"))[1]
    assert moved[0][0] == tmp_path / "dest" / "job.log.rsub-9.1"
    assert moved[1] == tmp_path / "dest" / ("logs/job.log" if log.startswith("logs") else "job.log")


def test_the_embedded_scheduler_writes_a_spooled_jobs_log_in_its_spool_under_the_basename(tmp_path: Path) -> None:
    from rsubd.backends.local import events as local_events

    spooled = {"Iwd": str(tmp_path / "spool"), "SUBMIT_Iwd": str(tmp_path / "submit")}
    for log in ("job.log", "logs/job.log", str(tmp_path / "abs" / "job.log")):
        assert local_events.path_of({**spooled, "UserLog": log}) == tmp_path / "spool" / "job.log"
        assert local_events.retrievable({**spooled, "UserLog": log}) == "job.log"
    node = {"Iwd": str(tmp_path / "dag"), "UserLog": str(tmp_path / "abs" / "node.log")}  # not spooled: as named
    assert local_events.path_of(node) == tmp_path / "abs" / "node.log" and local_events.retrievable(node) is None
    assert local_events.path_of({**spooled, "UserLog": "/dev/null"}) is None


def test_the_same_event_twice_in_a_proc_is_kept_twice_and_a_repeat_adds_nothing(tmp_path: Path) -> None:
    # Two evictions within one second have the same text: both are the job's, and stay.
    user, part = tmp_path / "job.log", tmp_path / "job.log.rsub-1.0"
    evict, execute = _event(4, "1.0", "2026-12-01 12:00:01"), _event(1, "1.0", "2026-12-01 12:00:01")
    text = _event(0, "1.0", "2026-12-01 12:00:00") + execute + evict + execute + evict
    part.write_text(text)
    assert eventlog.merge(user, [part]) == 5
    part.write_text(text)
    assert eventlog.merge(user, [part]) == 0
    assert user.read_text() == text


def test_a_part_with_no_event_stays_and_a_users_own_text_in_the_log_is_kept(tmp_path: Path) -> None:
    # An XML log, or anything else that is not events: never merged away, never lost.
    xml = tmp_path / "job.log.rsub-3.0"
    xml.write_text('<c>\n<a n="MyType"><s>SubmitEvent</s></a>\n</c>\n')
    user = tmp_path / "job.log"
    assert eventlog.merge(user, [xml]) == 0
    assert xml.exists() and not user.exists()
    # The user's own note at the top of the log (or a torn write): kept as it is, the new events after it.
    user.write_text("my notes on run 7\n" + _event(0, "2.0", "2026-12-01 12:00:05"))
    part = tmp_path / "job.log.rsub-3.1"
    part.write_text(_event(0, "3.1", "2026-12-01 12:00:01"))
    assert eventlog.merge(user, [part]) == 1
    assert user.read_text() == ("my notes on run 7\n" + _event(0, "2.0", "2026-12-01 12:00:05")
                                + _event(0, "3.1", "2026-12-01 12:00:01"))
    assert not part.exists()


def test_an_xml_log_is_sent_as_written(tmp_path: Path) -> None:
    from rsubd.services.prepare import prepare

    (tmp_path / "x.sh").write_text("#!/bin/sh\n")
    (tmp_path / "x.sh").chmod(0o755)
    for xml, renamed in (("true", False), ("false", True)):
        text = f"executable = x.sh\nlog = job.log\nlog_xml = {xml}\nqueue 2\n"
        sent = prepare(text, cwd=str(tmp_path), instance_id="i", max_age_seconds=60).request.text
        assert ("job.log.rsub-" in sent or eventlog.PER_PROC_SUFFIX in sent) is renamed, sent
