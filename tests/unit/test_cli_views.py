"""The jobsub views' pure helpers: ages, status letters, columns, run times, constraints, help and completion."""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import pytest

from rsub import cli, completion, views
from rsub.commands import act, fetchlog, status
from rsub.wire.vocabulary import STATES as RSUB_STATES
from rsubd.handlers.act import guarded_constraint
from rsubd.ledger.store import JobSelector, Ledger
from rsubd.services.views import STATUS_LETTERS, description_facts, fetchlog_files, run_seconds, status_letter

# -- ages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("45m", 2700), ("2h", 7200), ("3d", 259200), ("1w", 604800), ("1d12h", 129600),
    ("1.5h", 5400), (" 2H ", 7200), ("1d 2h", 93600), ("0s", 0),
])
def test_parse_age(text: str, seconds: float) -> None:
    assert status.parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "-1h", "2h3", "two hours", "1e3s", "2h-1m"])
def test_parse_age_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not an age"):
        status.parse_age(text)


# -- status letters and what the daemon reads from a description -----------------------------


def test_every_state_has_a_distinct_meaningful_letter() -> None:
    assert set(STATUS_LETTERS) == set(RSUB_STATES) == set(RSUB_STATES)
    assert [status_letter(s) for s in ("idle", "running", "held", "completed", "removed", "failed")] == list("IRHCXF")
    assert status_letter("spooling") == status_letter("submitting") == "S"
    assert status_letter("retrieved") == "D"
    assert status_letter("nonsense") == "?"


def test_description_facts() -> None:
    text = ("executable = /home/a/bin/analyse.sh\narguments = 1 2\nrequest_memory = 2048\npriority = 5\n"
            "queue 3 item from (\na\npriority = 9\n)\n")
    assert description_facts(text) == {"command": "analyse.sh", "priority": 5, "size": "2048",
                                       "group": None}
    assert description_facts("executable = x\nqueue\n") == {"command": "x", "priority": 0, "size": None,
                                                                  "group": None}
    assert description_facts("executable = x\npriority = $(Process)\nqueue\n")["priority"] == "$(Process)"
    # A jobsub-built job runs rsub's wrapper: the command is the user's script.
    wrapped = ("executable = /s/jobs/d/rsub_wrapper.sh\ntransfer_input_files = /w/run.sh, /w/one.txt\n"
               "request_memory = 1536\nqueue 2\n")
    assert description_facts(wrapped) == {"command": "run.sh", "priority": 0, "size": "1536",
                                         "group": None}


def test_description_facts_group() -> None:
    # -G writes the [jobsub] group_attribute; a description may also set it itself, as My.Attr.
    assert description_facts('executable = x\n+Jobsub_Group = "dune"\nqueue\n')["group"] == "dune"
    assert description_facts('executable = x\nMy.jobsub_group = "nova"\nqueue\n')["group"] == "nova"
    assert description_facts('executable = x\n+Exp = "mu2e"\nqueue\n', group_attribute="Exp")["group"] == "mu2e"
    assert description_facts('executable = x\n+Jobsub_Group = "dune"\nqueue\n', group_attribute="Exp")["group"] is None
    assert description_facts("executable = x\n+Jobsub_Group = dune\nqueue\n")["group"] is None  # not a string


def test_run_seconds() -> None:
    now = 1000.0
    base = {"run_started_at": 100.0, "run_left_at": None, "finished_at": None}
    assert run_seconds({**base, "state": "running"}, now) == 900.0
    assert run_seconds({**base, "state": "retrieved", "finished_at": 160.0, "run_left_at": 160.0}, now) == 60.0
    assert run_seconds({**base, "state": "held", "run_left_at": 130.0}, now) == 30.0
    assert run_seconds({**base, "state": "idle"}, now) is None
    assert run_seconds({"state": "retrieved", "run_started_at": None, "finished_at": 5.0}, now) is None


def test_fetchlog_files_are_expanded_per_proc() -> None:
    text = ("executable = /bin/true\noutput = $(Cluster).$(Process).out\nerror = /dev/null\n"
            "log = logs/$(Cluster).log\nqueue 2\n")
    files = fetchlog_files(text, "/tmp", 42, [0, 1])
    assert files == {0: {"output": "42.0.out", "error": None, "log": "logs/42.log"},
                     1: {"output": "42.1.out", "error": None, "log": "logs/42.log"}}
    assert fetchlog_files("not a description", "/tmp", 1, [0]) == {0: {"output": None, "error": None, "log": None}}


# -- constraints: never out of the RsubInstance guard --------------------------------------------


@pytest.mark.parametrize("expr", ['JobStatus == 5', 'Owner == "a) || (b"', "'odd name' == 1",
                                  'member(ProcId, {1, 2}) && [a = 1].a == 1', 'Cmd == "x\\"y)"'])
def test_guarded_constraint_wraps(expr: str) -> None:
    assert guarded_constraint("abc", f"  {expr} ") == f'(RsubInstance == "abc") && ({expr})'


@pytest.mark.parametrize(("expr", "why"), [
    ("", "empty"), ("   ", "empty"), ("true) || (true", "unbalanced"), ("(true", "closing"),
    ("true)", "unbalanced"), ('Owner == "x', "not closed"), ("a /* ( */ == 1", "comments"),
    ("a // c", "comments"), ("[a = 1)", "unbalanced"), ("a\nb", "control"), ("x" * 10_001, "longer"),
])
def test_guarded_constraint_refuses(expr: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        guarded_constraint("abc", expr)


# -- columns ---------------------------------------------------------------------------------


def test_run_time_and_submitted_text() -> None:
    assert views.run_time_text(None) == "-"
    assert views.run_time_text(0) == "0+00:00:00"
    assert views.run_time_text(93784.9) == "1+02:03:04"
    stamp = datetime.datetime(2026, 5, 6, 10, 1, tzinfo=datetime.UTC)
    assert views.submitted_text(stamp.isoformat()) == stamp.astimezone().strftime("%m/%d %H:%M")
    assert views.submitted_text(None) == "-"


def test_table_is_tab_separated_and_plain_off_a_terminal() -> None:
    lines = views.render_table([["1.0@local", "R"], ["10.0@local", "H"]], ["JOBID", "ST"], tty=False, colour=True,
                             colour_column=1, row_states=["running", "held"])
    assert lines == ["JOBID\tST", "1.0@local\tR", "10.0@local\tH"]


def test_table_is_aligned_on_a_terminal_and_coloured_only_when_asked() -> None:
    rows, header = [["1.0@local", "R"], ["10.0@local", "H"]], ["JOBID", "ST"]
    plain = views.render_table(rows, header, tty=True, colour=False, colour_column=1, row_states=["running", "held"])
    assert plain == ["JOBID       ST", "1.0@local   R", "10.0@local  H"]
    coloured = views.render_table(rows, header, tty=True, colour=True, colour_column=1, row_states=["running", "held"])
    assert "\033[32mR\033[0m" in coloured[1] and "\033[33mH\033[0m" in coloured[2]
    assert [cli_strip(line) for line in coloured] == plain


def cli_strip(line: str) -> str:
    import re

    return re.sub(r"\033\[[0-9;]*m", "", line)


def test_colour_respects_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "on_terminal", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert views.use_colour()
    monkeypatch.setenv("NO_COLOR", "1")
    assert not views.use_colour()


def test_jobsub_row() -> None:
    job = {"id": "12.0@local", "state": "running", "submitted_at": None,
           "jobsub": {"owner": "alice", "status": "R", "run_time": 61, "priority": 0, "size": None, "command": "a.sh"}}
    assert views.jobsub_row(job) == ["12.0@local", "alice", "-", "0+00:01:01", "R", "0", "-", "a.sh", "-"]
    assert len(views.JOBSUB_HEADER) == len(views.jobsub_row(job))
    done = {**job, "state": "retrieved", "exit_code": 3, "exit_signal": None}
    assert views.jobsub_row(done)[-1] == "3"
    assert views.jobsub_row({**done, "exit_code": None, "exit_signal": 9})[-1] == "sig 9"


def _job(cluster: int, proc: int, state: str, exit_code: int | None = None, schedd: str = "local") -> dict[str, object]:
    return {"id": f"{cluster}.{proc}@{schedd}", "cluster": cluster, "proc": proc, "schedd": schedd, "state": state,
            "exit_code": exit_code, "exit_signal": None}


def test_a_job_that_exited_non_zero_is_counted_and_coloured_apart() -> None:
    ok, bad = _job(1, 0, "retrieved", 0), _job(1, 1, "retrieved", 3)
    assert views.shown_state(ok) == "retrieved" and views.shown_state(bad) == views.EXIT_NONZERO
    assert views.STATE_COLOURS[views.EXIT_NONZERO] != views.STATE_COLOURS["retrieved"]
    assert views.summary_lines([ok, bad, _job(2, 0, "running")]) == ["", "3 jobs; 1 running, 1 retrieved, 1 exit!=0"]
    assert "exit code 3; output in /w" in views.note({**bad, "iwd": "/w"})


def test_big_clusters_get_a_summary_line_each() -> None:
    big = ([_job(12, p, "retrieved", 0) for p in range(6)] + [_job(12, 6 + p, "running") for p in range(3)]
           + [_job(12, 9 + p, "idle") for p in range(2)] + [_job(12, 11, "held"), _job(12, 12, "retrieved", 1)])
    small = [_job(13, p, "idle") for p in range(3)]
    lines = views.summary_lines(big + small)
    assert lines == ["", "12@local: 6 done, 3 run, 2 idle, 1 held, 1 exit!=0",
                     "16 jobs; 5 idle, 3 running, 1 held, 6 retrieved, 1 exit!=0"]
    assert views.summary_lines(big[:10]) == ["", "10 jobs; 1 idle, 3 running, 6 retrieved"]  # 10 jobs: not big


def test_act_summary_counts() -> None:
    counts = {"success": 2, "not_found": 0, "already_done": 1, "bad_status": 0, "error": 0,
              "permission_denied": 0, "job_ads": 3}
    assert act.act_summary("hold", "local", counts) == "local: hold: 3 job(s) matched; 2 success, 1 already done"
    assert act.act_summary("remove", "x", dict.fromkeys(counts, 0)) == "x: remove: 0 job(s) matched; nothing to do"
    done = {**dict.fromkeys(counts, 0), "finished": {"retrieved": ["12.0"]}}
    assert act.act_summary("hold", "local", done) == "local: hold: nothing to do: 12.0 is already retrieved"
    mixed = {**counts, "finished": {"removed": ["1.0", "1.1", "1.2", "1.3"], "retrieved": ["2.0", "2.1"]}}
    assert act.act_summary("hold", "local", mixed) == ("local: hold: 3 job(s) matched; 2 success, 1 already done, "
                                                       "4 jobs are already removed; 2.0, 2.1 are already retrieved")


def test_member_names_stay_inside_the_archive() -> None:
    assert fetchlog.member_name("/w/logs/1.log", "/w") == "logs/1.log"
    assert fetchlog.member_name("/elsewhere/1.out", "/w") == "1.out"
    assert fetchlog.member_name("/w/1.out", None) == "1.out"


# -- help and commands -------------------------------------------------------------------------


def subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [(f"{prefix}{name}", sub), *subparsers(sub, f"{prefix}{name} ")]
    return out


def test_every_subcommand_is_listed_and_has_an_example() -> None:
    parser = cli.build_parser()
    found = subparsers(parser)
    assert {name for name in (n for n, _ in found) if " " not in name} == set(cli.COMMANDS)
    for name, sub in found:
        assert "example" in (sub.epilog or ""), f"rsub {name} --help has no example"
    assert "exit codes:" in parser.format_help() and "8  a token" in parser.format_help()


@pytest.mark.parametrize("command", ["q", "history", "fetchlog", "completion", "hold"])
def test_only_the_running_commands_parser_is_built(command: str) -> None:
    assert cli.command_of([command]) == command
    built = [n for n, _ in subparsers(cli.build_parser(command)) if " " not in n]
    assert built == [command]


def test_filters_reach_the_request() -> None:
    args = cli.build_parser("q").parse_args(["q", "--state", "held", "--state", "idle", "--schedd", "x",
                                             "--cluster", "12", "--since", "2h", "--older-than", "30m"])
    assert status.filter_fields(args) == {"states": ["held", "idle"], "schedd": "x", "clusters": [12],
                                       "since": 7200.0, "older_than": 1800.0}


def test_completion_tree_follows_the_parser() -> None:
    root = completion.tree(cli.build_parser())
    assert list(root.children) == list(cli.COMMANDS)
    assert set(root.children["daemon"].children) == {"status", "stop", "log", "install"}
    assert root.children["completion"].words == ("bash", "zsh")
    assert root.children["submit"].files
    state = next(o for o in root.children["q"].options if "--state" in o.names)
    assert state.choices == RSUB_STATES
    dest = next(o for o in root.children["fetchlog"].options if "--dest" in o.names)
    assert dest.kind == "dir"


# -- the ledger's page with run times ------------------------------------------------------------


def test_job_page_filters_and_run_times(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    try:
        rows = {}
        for schedd, cluster in (("a", 1), ("a", 2), ("b", 1)):
            rows[(schedd, cluster)] = ledger.add_submit_intent(
                request_id=f"{schedd}{cluster}", schedd=schedd, tag="t", description="d",
                submitted_description="executable = x\nqueue 2\n", submit_dir="/tmp", submit_file=None)
            ledger.record_submitted(rows[(schedd, cluster)], cluster, [(0, "/tmp"), (1, "/tmp")])
        ledger.apply_changes("a", [(1, 0, {"state": "running"}), (1, 1, {"state": "idle"})])
        time.sleep(0.01)
        ledger.apply_changes("a", [(1, 0, {"state": "completed"})])
        ledger.apply_changes("a", [(1, 0, {"state": "retrieved", "retrieved_at": time.time()})])

        page = ledger.job_page(schedd="a", clusters=[1])
        assert [(r["schedd"], r["cluster"], r["proc"]) for r in page] == [("a", 1, 0), ("a", 1, 1)]
        done = page[0]
        assert done["run_started_at"] is not None and done["finished_at"] >= done["run_started_at"]
        assert done["cluster_row"] == rows[("a", 1)]
        assert page[1]["run_started_at"] is None

        assert [r["state"] for r in ledger.job_page(states=["retrieved"])] == ["retrieved"]
        assert len(ledger.job_page()) == 6 and len(ledger.job_page(limit=2, offset=5)) == 1
        # A page cut short keeps the newest jobs submitted (b's cluster 1, written last), shown in order.
        assert [(r["schedd"], r["cluster"], r["proc"]) for r in ledger.job_page(limit=3)] == [
            ("a", 2, 1), ("b", 1, 0), ("b", 1, 1)]
        assert ledger.job_count() == 6 and ledger.job_count(schedd="a", states=["idle"]) == 1
        assert ledger.job_page(submitted_before=time.time() - 3600) == []
        assert len(ledger.job_page(submitted_after=time.time() - 3600)) == 6
        assert [(r["schedd"], r["proc"]) for r in ledger.job_page([JobSelector(1, 1)])] == [("a", 1), ("b", 1)]
        newest = ledger.job_page(newest_first=True)
        assert (newest[0]["schedd"], newest[0]["cluster"], newest[0]["proc"]) == ("a", 1, 0)
        assert ledger.submitted_descriptions([rows[("b", 1)]]) == {rows[("b", 1)]: "executable = x\nqueue 2\n"}
    finally:
        ledger.close()


def test_table_cells_never_break_a_line_or_a_column() -> None:
    lines = views.render_table([["1.0@local", "held:\tsee\nlog"]], ["JOB", "NOTE"], tty=False)
    assert lines == ["JOB\tNOTE", "1.0@local\theld: see log"]


# -- rsub daemon status: human durations, never "last None", an idle schedd says so ------------------


def test_human_durations() -> None:
    from rsub.commands.daemon import human_duration

    assert [human_duration(s) for s in (0.84, 9.96, 41, 161, 3600, 3 * 3600 + 720, 2 * 86400 + 4 * 3600, 86400)] == [
        "0.8 s", "10.0 s", "41 s", "2 min 41 s", "1 h", "3 h 12 min", "2 d 4 h", "1 d"]


def test_daemon_status_schedd_line() -> None:
    from rsub.commands.daemon import schedd_line

    s = {"backend": "local", "poll_interval": 2.0, "interval_in_force": 2.0, "last_poll_at": None,
         "last_outcome": None, "polls": 0, "queries": 0, "retrieve_calls": 0, "edit_calls": 0, "history_calls": 0,
         "errors": 0, "jobs": {"idle": 3}}
    line = schedd_line("local", s, time.time())
    assert "poll every 2.0 s, last never;" in line and "None" not in line
    at = time.time() - 161
    busy = schedd_line("local", {**s, "last_poll_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
                                 "last_outcome": "ok"}, at + 161)
    assert f"last {time.strftime('%H:%M:%S', time.localtime(at))} (2 min 41 s ago) ok;" in busy
    idle = schedd_line("local", {**s, "jobs": {"retrieved": 5, "removed": 1}}, time.time())
    assert "local (local): idle: nothing to track" in idle and "last" not in idle.split(";")[0]
