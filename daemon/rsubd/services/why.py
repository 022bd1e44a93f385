"""`rsub why`: why a job is where it is, in the words of `condor_q -better-analyze` where it is idle.

For an idle job, each clause of its Requirements (and the request clauses a schedd adds) is
evaluated with classad2 against the pool's slot ads (one projected collector query, cached
a minute; the embedded scheduler's own slots), counting the slots that satisfy it; a clause
no slot satisfies is named, with the slot attribute no slot has, and each request is set
against the largest slot ("request_memory 64 GB: the largest slot has 24 GB"). The slots'
START, where the query brought it, is evaluated against the job too. For a held job: its
reason, code and hint, and the last lines of its stderr if it came home; for a failed or
removed one, what the ledger says happened.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import classad2

from rsubd.backends import matching

SLOT_PROJECTION = ("Name", "Machine", "Memory", "Disk", "Cpus", "START", "State", "Activity")
# A request, the slot attribute it is held against, and how to say an amount of it.
REQUESTS = (("RequestMemory", "Memory", "request_memory", "MB"), ("RequestDisk", "Disk", "request_disk", "KB"),
            ("RequestCpus", "Cpus", "request_cpus", ""))
STDERR_LINES = 10


def slot_projection(job: Mapping[str, Any]) -> list[str]:
    """What the collector query needs: the slots' basics and every slot attribute the job's clauses name."""
    names = dict.fromkeys(SLOT_PROJECTION)
    names.update(dict.fromkeys(matching.target_refs([c for c, _ in matching.job_clauses(job)], job)))
    return list(names)


def _size(value: float, unit: str) -> str:
    """An amount as a person reads it: 65536 (MB) is 64 GB; 2048 (KB) is 2 MB."""
    if not unit:
        return f"{value:g}"
    units = ["KB", "MB", "GB", "TB"]
    i, amount = units.index(unit), float(value)
    while amount >= 1024 and i < len(units) - 1:
        amount /= 1024
        i += 1
    return f"{amount:.3g} {units[i]}"


def _missing(clause: str, job: Mapping[str, Any], slots: Sequence[Mapping[str, Any]]) -> list[str]:
    """Slot attributes a clause names that no slot has."""
    have = {k.lower() for s in slots for k in s}
    return [name for name in matching.target_refs([clause], job) if name.lower() not in have]


def analyse_idle(job: Mapping[str, Any], slots: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The match analysis of one idle job against the slots."""
    pairs = [(matching.scope(job, s), matching.classad_of(s)) for s in slots]
    job_ad = matching.classad_of(job)
    clauses = []
    matching_all = [True] * len(slots)
    for clause, added in matching.job_clauses(job):
        hits = [matching.satisfies(clause, my, target) for my, target in pairs]
        matching_all = [a and h for a, h in zip(matching_all, hits, strict=True)]
        entry: dict[str, Any] = {"clause": clause, "added_for_request": added, "slots": sum(hits)}
        if not any(hits):
            missing = _missing(clause, job, slots)
            entry["missing_attributes"] = missing
        clauses.append(entry)
    start_ok = 0
    start_read = 0
    for slot in slots:
        start = slot.get("START")
        if start is None:
            continue
        start_read += 1
        start_ok += matching.satisfies(matching.expression_text(start), matching.scope(slot, job), job_ad)
    requests = []
    for attr, slot_attr, name, unit in REQUESTS:
        try:
            asked = job_ad.eval(attr) if attr in job else None
        except classad2.ClassAdException:
            asked = None
        sizes = [s[slot_attr] for s in slots if isinstance(s.get(slot_attr), (int, float))]
        if not isinstance(asked, (int, float)) or not sizes:
            continue
        largest = max(sizes)
        entry = {"request": name, "asked": asked, "largest_slot": largest, "fits": asked <= largest}
        if asked > largest:
            entry["says"] = f"{name} {_size(asked, unit)}: the largest slot has {_size(largest, unit)}"
        requests.append(entry)
    says = []
    for c in clauses:
        if c["slots"] == 0:
            why = f"no slot satisfies {c['clause']}"
            if c.get("missing_attributes"):
                why += f" (no slot has {', '.join(c['missing_attributes'])})"
            says.append(why)
    says += [r["says"] for r in requests if "says" in r]
    if start_read and not start_ok:
        says.append("no slot's START accepts this job")
    if not says:
        says.append(f"{sum(matching_all)} of {len(slots)} slot(s) match: the job waits its turn (the pool is busy, "
                    "or the negotiator has not reached it yet)")
    return {"slots": len(slots), "matching_slots": sum(matching_all), "clauses": clauses, "requests": requests,
            "start": {"read": start_read, "accepting": start_ok}, "says": says}


def stderr_tail(iwd: str | None, error: str | None, lines: int = STDERR_LINES) -> list[str] | None:
    """The last lines of a job's stderr, if it came home (None when there is no such file)."""
    if not iwd or not error:
        return None
    path = Path(iwd, os.path.expanduser(error))
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    return text.splitlines()[-lines:]
