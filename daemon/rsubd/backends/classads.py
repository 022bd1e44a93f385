"""ClassAds to plain data, the form in which ads cross the schedd boundary; shared by both backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import classad2

from rsubd.backends.schedd import AdValue, JobAd


def quiet_classad_library() -> None:
    """Keep classad2 from growing the process without bound: call once in any process that makes ClassAds.

    classad2 (the 25.x wheel) logs every ClassAd and ExprTree it frees through HTCondor's
    dprintf, and until HTCondor's configuration is loaded dprintf keeps each message in
    memory for a log that never comes: about 150 bytes per ClassAd freed, 450 per parsed
    expression, so the embedded scheduler's constraint checks grew rsubd by megabytes a
    minute. Loading htcondor2 once configures dprintf, and the messages go nowhere. No
    binding call is made here (those run in the worker processes, backends/condor, each
    with its schedd's own configuration). It loads with an empty configuration: HTCondor
    exits the process (no exception) on a configuration it cannot read, and a broken
    CONDOR_CONFIG in the user's shell must not take rsubd down, nor the machine's
    configuration govern rsubd's own ClassAds. CONDOR_CONFIG is then put back as it was,
    so what rsubd hands to its jobs and workers is unchanged.
    """
    import os

    before = os.environ.get("CONDOR_CONFIG")
    os.environ["CONDOR_CONFIG"] = os.devnull
    try:
        import htcondor2  # noqa: F401  # configures dprintf
    finally:
        if before is None:
            os.environ.pop("CONDOR_CONFIG", None)
        else:
            os.environ["CONDOR_CONFIG"] = before


def plain(value: Any) -> AdValue:
    """A classad2 value as plain data: Undefined and Error become None, expressions their text."""
    if isinstance(value, classad2.Value):
        return None  # Undefined and Error both read as "no value" across the boundary
    if isinstance(value, classad2.ClassAd):
        return {k: plain(value.eval(k)) for k in value}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, classad2.ExprTree):
        return str(value)
    return value  # type: ignore[no-any-return]  # a literal now


def wire_expr(value: Any) -> str | None:
    """The text of an unevaluated expression as plain data carries it ({"__expr__": text}); None if not one."""
    if isinstance(value, dict) and set(value) == {"__expr__"}:
        return str(value["__expr__"])
    return None


def unparse(value: Any, expr: Callable[[Any], str | None] = wire_expr) -> str:
    """ClassAd source text for a plain value; `expr` gives an unevaluated expression's text (None: not one)."""
    text = expr(value)
    if text is not None:
        return text
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return str(classad2.quote(value))
    if isinstance(value, list):
        return "{" + ", ".join(unparse(v, expr) for v in value) + "}"
    if isinstance(value, dict):
        return "[ " + "; ".join(f"{k} = {unparse(v, expr)}" for k, v in value.items()) + " ]"
    raise TypeError(f"cannot put {type(value).__name__} in a ClassAd")


def check_expression(text: str) -> None:
    """Refuse (ValueError, with the ClassAd parser's words) a constraint no schedd could parse.

    A real schedd answers a malformed query constraint with only "Failed to fetch ads from
    schedd, errmsg=", and the bindings refuse others with a message about job specs; the
    parser says it plainly, before anything is sent.
    """
    try:
        classad2.ExprTree(text)
    except classad2.ClassAdException as e:
        raise ValueError(f"the ClassAd parser says: {e}") from None


def plain_ad(ad: classad2.ClassAd) -> JobAd:
    """Every attribute of a ClassAd evaluated, as plain data."""
    return {k: plain(ad.eval(k)) for k in ad}
