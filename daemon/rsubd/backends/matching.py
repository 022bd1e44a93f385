"""Matchmaking as a pool does it, with classad2: a job's Requirements, clause by clause, against slot ads.

Ads here are plain data with expressions as {"__expr__": text} (as `SlotSource` gives them).
Matchmaking looks an attribute the job's ad lacks up in the slot's (HTCondor's `Memory > 1`
means the slot's Memory); `classad2` alone does not, so a clause is evaluated with the job's
ad over the slot's as its scope and the slot as its target. Shared by the embedded
scheduler (which starts only jobs that match) and `rsub why` (which says which clause fails).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import classad2

from rsubd.backends.classads import unparse

# What condor_submit adds to a job's Requirements for its requests, when they do not say it themselves.
REQUEST_CLAUSES = (("RequestMemory", "TARGET.Memory >= RequestMemory"), ("RequestDisk", "TARGET.Disk >= RequestDisk"),
                   ("RequestCpus", "TARGET.Cpus >= RequestCpus"))
RESOURCES = (("RequestMemory", "Memory"), ("RequestDisk", "Disk"), ("RequestCpus", "Cpus"))  # job's, slot's


_source = unparse  # plain data, expressions as {"__expr__": text}


def classad_of(ad: Mapping[str, Any]) -> classad2.ClassAd:
    """A classad2.ClassAd of a plain ad (expressions as {"__expr__": text})."""
    return classad2.ClassAd("[ " + "; ".join(f"{k} = {_source(v)}" for k, v in ad.items()) + " ]")


def expression_text(value: Any) -> str:
    """An attribute's value as ClassAd source ("" for none)."""
    return "" if value is None else _source(value)


def split_clauses(text: str) -> list[str]:
    """An expression's top-level `&&` terms, outer parentheses taken off ("(a) && (b || c)" -> ["a", "b || c"])."""
    terms: list[str] = []
    depth, start, i, quoted = 0, 0, 0, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith("&&", i):
            terms.append(text[start:i])
            start = i + 2
            i += 1
        i += 1
    terms.append(text[start:])
    return [t for t in (_unwrap(t.strip()) for t in terms) if t]


def _unwrap(term: str) -> str:
    while term.startswith("(") and term.endswith(")") and _closes_at_end(term):
        term = term[1:-1].strip()
    return term


def _closes_at_end(term: str) -> bool:
    depth = 0
    for i, c in enumerate(term):
        depth += c == "("
        depth -= c == ")"
        if depth == 0 and i < len(term) - 1:
            return False
    return True


def job_clauses(job: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """The clauses a slot must satisfy for this job: (text, whether the pool adds it for a request)."""
    requirements = job.get("Requirements")
    text = "" if requirements is None or requirements is True else expression_text(requirements)
    own = [(c, False) for c in split_clauses(text)] if text else []
    lowered = text.lower()
    return own + [(clause, True) for attr, clause in REQUEST_CLAUSES if attr in job and attr.lower() not in lowered]


def scope(job: Mapping[str, Any], slot: Mapping[str, Any]) -> classad2.ClassAd:
    """The job's ad over the slot's: what a clause's unscoped names mean in a match."""
    return classad_of({**{k: v for k, v in slot.items() if k not in ("Requirements", "START")}, **job})


def satisfies(clause: str, my: classad2.ClassAd, target: classad2.ClassAd) -> bool:
    try:
        return classad2.ExprTree(clause).eval(my, target) is True
    except classad2.ClassAdException:
        return False


def target_refs(clauses: Sequence[str], job: Mapping[str, Any] | None = None) -> list[str]:
    """The slot attributes clauses name: TARGET.X, and the unscoped names the job's ad lacks (the slot's then)."""
    names: dict[str, None] = {}
    scope_ad = classad_of(job or {})
    for clause in clauses:
        try:
            refs = scope_ad.externalRefs(classad2.ExprTree(clause))
        except classad2.ClassAdException:
            continue
        for ref in refs:
            head, dot, tail = ref.partition(".")
            names[tail if dot and head.lower() == "target" else ref] = None
    return list(names)


def matches(job: Mapping[str, Any], slots: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some slot satisfies every clause of the job (a plain job with small requests: at a glance)."""
    clauses = job_clauses(job)
    if all(added for _, added in clauses) and all(isinstance(job.get(a), int) for a, _ in REQUEST_CLAUSES):
        return any(all(job[a] <= slot.get(s, 0) for a, s in RESOURCES) for slot in slots)
    for slot in slots:
        target, my = classad_of(slot), scope(job, slot)
        if all(satisfies(c, my, target) for c, _ in clauses):
            return True
    return False
