"""Matchmaking clause by clause (backends/matching.py), as the embedded scheduler and rsub why use it."""

from __future__ import annotations

from rsubd.backends import matching
from rsubd.services.why import analyse_idle

SLOT = {"Name": "slot1@h", "Memory": 24000, "Disk": 10**8, "Cpus": 2, "Arch": "X86_64", "START": True}


def test_clauses_split_at_the_top_level_only() -> None:
    text = '(TARGET.Arch == "X86_64") && (a || (b && c)) && "x && y" == z'
    assert matching.split_clauses(text) == ['TARGET.Arch == "X86_64"', "a || (b && c)", '"x && y" == z']


def test_request_clauses_are_added_unless_the_requirements_say_them() -> None:
    job = {"RequestMemory": 64, "RequestDisk": 10, "Requirements": {"__expr__": "TARGET.Memory >= RequestMemory"}}
    assert matching.job_clauses(job) == [("TARGET.Memory >= RequestMemory", False),
                                        ("TARGET.Disk >= RequestDisk", True)]


def test_an_unscoped_name_the_job_lacks_is_the_slots() -> None:
    job = {"RequestMemory": 64, "RequestDisk": 10, "RequestCpus": 1, "Requirements": {"__expr__": "Memory > 1000"}}
    assert matching.matches(job, [SLOT])
    assert not matching.matches({**job, "Requirements": {"__expr__": "Memory > 100000"}}, [SLOT])
    assert not matching.matches({**job, "RequestMemory": 30000, "Requirements": None}, [SLOT])


def test_analysis_counts_slots_per_clause_and_sets_requests_against_the_largest() -> None:
    job = {"RequestMemory": 65536, "RequestDisk": 10, "RequestCpus": 1,
           "Requirements": {"__expr__": 'TARGET.Arch == "X86_64"'}}
    out = analyse_idle(job, [SLOT, {**SLOT, "Name": "slot2@h", "Memory": 8000}])
    by_clause = {c["clause"]: c["slots"] for c in out["clauses"]}
    assert by_clause == {'TARGET.Arch == "X86_64"': 2, "TARGET.Memory >= RequestMemory": 0,
                         "TARGET.Disk >= RequestDisk": 2, "TARGET.Cpus >= RequestCpus": 2}
    assert out["matching_slots"] == 0 and out["start"] == {"read": 2, "accepting": 2}
    assert "request_memory 64 GB: the largest slot has 23.4 GB" in out["says"]
