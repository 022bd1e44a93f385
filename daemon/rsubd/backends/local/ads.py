"""Job ads of the embedded scheduler: plain dicts in memory, ClassAds for evaluation.

Values are the plain types of `rsubd.backends.schedd.AdValue`; an unevaluated expression
(LeaveJobInQueue, Requirements, an edited expression) is an `Expr`. Constraints
and expressions are evaluated by `classad2`, HTCondor's own ClassAd library, so
they mean here exactly what they mean to a real schedd.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import classad2

from rsubd.backends import classads
from rsubd.backends.classads import plain
from rsubd.backends.local.fastpath import MISSING, compile_conjunction
from rsubd.backends.schedd import AdValue, ErrorKind, ScheddError


@dataclass(frozen=True)
class Expr:
    """An unevaluated ClassAd expression."""

    text: str


LocalValue = AdValue | Expr
Ad = dict[str, Any]


def _expr_text(value: Any) -> str | None:
    return value.text if isinstance(value, Expr) else None


def unparse(value: Any) -> str:
    """ClassAd source text for a value of this scheduler's ads (its expressions are `Expr`)."""
    return classads.unparse(value, _expr_text)


def to_classad(ad: Mapping[str, Any]) -> classad2.ClassAd:
    """A classad2.ClassAd with the same attributes, parsed in one go."""
    text = "[ " + "; ".join(f"{k} = {unparse(v)}" for k, v in ad.items()) + " ]"
    return classad2.ClassAd(text)


@functools.lru_cache(maxsize=4096)
def parse_value(text: str) -> LocalValue:
    """Parse a ClassAd expression as `edit` receives it: a literal, or an Expr.

    Cached: a submit of 10,000 procs gives each the same few expressions, and the
    results (literals and frozen Exprs) are immutable.
    """
    try:
        holder = classad2.ClassAd(f"[ v = {text} ]")
    except classad2.ClassAdException:
        raise ScheddError(ErrorKind.INVALID, "Unable to edit jobs matching constraint") from None
    value = holder["v"]
    if isinstance(value, classad2.ExprTree):
        return Expr(str(value))
    if isinstance(value, classad2.Value):
        return None
    if isinstance(value, (classad2.ClassAd, list)):
        return Expr(text.strip())
    return value  # type: ignore[no-any-return]  # a literal now


class Constraint:
    """A compiled ClassAd constraint; `matches` is true only when it evaluates to true."""

    def __init__(self, text: str) -> None:
        self.text = text.strip() or "true"
        try:
            self._expr = classad2.ExprTree(self.text)
        except classad2.ClassAdException:
            raise ScheddError(ErrorKind.INVALID, f"invalid constraint: {text!r}") from None
        self.fast = compile_conjunction(self.text)

    def matches(self, ad: classad2.ClassAd) -> bool:
        return self._expr.eval(ad) is True

    def decide(self, get: Callable[[str], Any]) -> bool | None:
        """The answer from the ad's plain values (`get` takes a lower-case name), or None: use `matches`."""
        return None if self.fast is None else self.fast.decide(get)


def getter(ad: Mapping[str, Any]) -> Callable[[str], Any]:
    """Lookup by lower-case name in one plain ad, for `Constraint.decide`."""
    lower = {k.lower(): v for k, v in ad.items()}
    return lambda name: lower.get(name, MISSING)


def evaluate(ad: classad2.ClassAd, attr: str) -> AdValue:
    """The value of `attr` in `ad`, expressions evaluated, as plain data."""
    return plain(ad.eval(attr))


def project(ad: Mapping[str, Any], classad: classad2.ClassAd | None, projection: Iterable[str]) -> Ad:
    """The boundary form of an ad: only `projection` (all when empty), expressions evaluated."""
    names = list(projection) or list(ad.keys())
    lower = {k.lower(): k for k in ad}
    out: Ad = {}
    for name in names:
        key = lower.get(name.lower())
        if key is None:
            continue  # a real schedd leaves out what the ad lacks
        value = ad[key]
        if isinstance(value, Expr):
            if classad is None:
                classad = to_classad(ad)
            value = evaluate(classad, key)
        out[key] = value
    return out


def _encode(value: Any) -> Any:
    if isinstance(value, Expr):
        return {"__expr__": value.text}
    raise TypeError(f"cannot store {type(value).__name__} in an ad")


def _decode(value: dict[str, Any]) -> Any:
    if len(value) == 1 and "__expr__" in value:
        return Expr(value["__expr__"])
    if len(value) == 1 and "__value__" in value:
        return None
    return value


def dumps(ad: Mapping[str, Any]) -> str:
    """JSON for storage; an Expr is {"__expr__": text} as in HTCondor's own captures."""
    return json.dumps(ad, separators=(",", ":"), default=_encode)


def loads(text: str) -> Ad:
    """Inverse of `dumps`."""
    raw: Ad = json.loads(text, object_hook=_decode)
    return raw


def since_constraint(since: int | str | None) -> Constraint | None:
    """`history(since=...)` as a real schedd reads it: a cluster, a job id, or an expression."""
    if since is None:
        return None
    if isinstance(since, int):
        return Constraint(f"ClusterId == {since}")
    text = since.strip()
    head, dot, tail = text.partition(".")
    if head.isdigit() and (not dot or tail.isdigit()):
        return Constraint(f"ClusterId == {head}" + (f" && ProcId == {tail}" if dot else ""))
    if text.lower() in ("true", "false"):
        raise ScheddError(ErrorKind.INVALID, "Failed to receive history ad.")
    return Constraint(text)
