"""A fast path for the constraints rsub sends most: conjunctions of attribute-versus-literal tests.

`RsubInstance == "..." && RETRIEVED =!= true` over a 100,000-job queue would
otherwise mean 100,000 ClassAds built and evaluated by classad2. A constraint
whose top level is a conjunction is split at its `&&`s; each part that compares
one attribute with a literal (`==`, `!=`, `=?=`, `=!=`, `is`, `isnt` against an
integer, a plain string, true, false or undefined) is decided here on the ad's
plain values. A conjunction is true only when every part is true, so one part
surely not true settles "no match" and every part surely true settles "match".
Anything else (a part this module does not read, a value it is not sure of, such
as an expression or a float) is left to classad2, so the answer is always the
one classad2 gives for the whole constraint.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MISSING: Any = object()  # what a lookup returns for an attribute the ad lacks

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<num>[0-9][0-9A-Za-z_.]*)
      | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>=\?=|=!=|==|!=|<=|>=|&&|\|\||[()\[\]{}<>!?:.,;+\-*%^&|~/=])
    )""",
    re.VERBOSE,
)
_OPEN = {"(": ")", "[": "]", "{": "}"}
_KEYWORDS = {"true", "false", "undefined", "error", "is", "isnt", "parent", "my", "target"}
_COMPARISONS = {"==": "==", "!=": "!=", "=?=": "=?=", "=!=": "=!=", "is": "=?=", "isnt": "=!="}

Token = tuple[str, str]  # (kind, text): kind is "str", "num", "id" or "op"


def _tokens(text: str) -> list[Token] | None:
    out: list[Token] = []
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            return None  # a character this module does not read (a quoted attribute name, ...)
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "op" and value == "/" and text[m.end():m.end() + 1] in ("/", "*"):
            return None  # a comment
        out.append((kind, value))
        pos = m.end()
    return out


def _split(tokens: list[Token]) -> list[list[Token]] | None:
    """The parts of a top-level conjunction, or None when the top level is not one."""
    parts: list[list[Token]] = [[]]
    stack: list[str] = []
    for kind, value in tokens:
        if kind == "op" and value in _OPEN:
            stack.append(_OPEN[value])
        elif kind == "op" and value in (")", "]", "}"):
            if not stack or stack.pop() != value:
                return None
        elif not stack and kind == "op" and value in ("||", "?", ":"):
            return None  # these bind more loosely than &&
        elif not stack and kind == "op" and value == "&&":
            parts.append([])
            continue
        parts[-1].append((kind, value))
    if stack or any(not p for p in parts):
        return None
    return parts


def _literal(tokens: list[Token]) -> tuple[bool, Any]:
    """(True, value) when the tokens are one literal this module reads; value None is undefined."""
    if len(tokens) == 2 and tokens[0] == ("op", "-") and tokens[1][0] == "num":
        ok, value = _literal(tokens[1:])
        return (True, -value) if ok else (False, None)
    if len(tokens) != 1:
        return False, None
    kind, text = tokens[0]
    if kind == "str" and "\\" not in text:
        return True, text[1:-1]
    if kind == "num" and text.isdigit() and (text == "0" or not text.startswith("0")) and int(text) < 2**63:
        return True, int(text)
    if kind == "id" and text.lower() in ("true", "false", "undefined"):
        return True, {"true": True, "false": False, "undefined": None}[text.lower()]
    return False, None


def _attribute(tokens: list[Token]) -> str | None:
    if len(tokens) == 1 and tokens[0][0] == "id" and tokens[0][1].lower() not in _KEYWORDS:
        return tokens[0][1].lower()
    return None


def _kind(value: Any) -> str | None:
    """"u" (undefined), "b", "i", "s", or None for a value this module is not sure of."""
    if value is MISSING or value is None:
        return "u"
    t = type(value)
    if t is bool:
        return "b"
    if t is int:
        return "i"
    if t is str:
        return "s"
    return None


@dataclass(frozen=True)
class Test:
    """`attr op literal`; `check` says True (surely true), False (surely not) or None (unsure)."""

    attr: str  # lower case: ClassAd attribute names are case-insensitive
    op: str
    literal: Any

    def check(self, value: Any) -> bool | None:
        vk = _kind(value)
        if vk is None:
            return None
        lit = self.literal
        lk = _kind(lit)
        if self.op in ("==", "!="):
            if vk == "u" or lk == "u":
                return False  # undefined
            if (vk == "s") != (lk == "s"):
                return False  # error: a string against a number
            if vk == "s":
                if not (value.isascii() and lit.isascii()):
                    return None  # ClassAd folds case in ASCII only
                equal = value.lower() == lit.lower()
            else:
                equal = value == lit  # a boolean compares as 0 or 1 with an integer, as in classad2
            return equal if self.op == "==" else not equal
        same = vk == lk and (vk == "u" or value == lit)  # =?= is case-sensitive and type-strict
        return same if self.op == "=?=" else not same


def _test(tokens: list[Token]) -> Test | bool | None:
    """A part as a Test, a constant (a lone true or false), or None when it is not read here."""
    ok, value = _literal(tokens)
    if ok:
        return value if isinstance(value, bool) else None
    for i, (kind, text) in enumerate(tokens):
        op = _COMPARISONS.get(text if kind == "op" else text.lower() if kind == "id" else "")
        if op is None:
            continue
        left, right = tokens[:i], tokens[i + 1:]
        attr, (ok, lit) = _attribute(left), _literal(right)
        if attr is None:
            attr, (ok, lit) = _attribute(right), _literal(left)
        return Test(attr, op, lit) if attr is not None and ok else None
    return None


def _parts(tokens: list[Token]) -> list[Test | bool | None] | None:
    split = _split(tokens)
    if split is None:
        return None
    out: list[Test | bool | None] = []
    for part in split:
        if part[0] == ("op", "(") and part[-1] == ("op", ")") and _split(part[1:-1]) is not None and _balanced(part):
            inner = _parts(part[1:-1])
            out.extend(inner if inner is not None else [None])
        else:
            out.append(_test(part))
    return out


def _balanced(part: list[Token]) -> bool:
    """Whether the first token's parenthesis closes at the last token."""
    depth = 0
    for i, (kind, value) in enumerate(part):
        if kind == "op" and value in _OPEN:
            depth += 1
        elif kind == "op" and value in (")", "]", "}"):
            depth -= 1
            if depth == 0 and i != len(part) - 1:
                return False
    return True


class Conjunction:
    """The parts of a constraint this module reads; `decide` answers or defers to classad2."""

    def __init__(self, tests: list[Test], opaque: bool, constant: bool) -> None:
        self.tests = tests
        self.opaque = opaque  # some part is left to classad2
        self.constant = constant  # False when a part is the literal false
        self.attrs = tuple(sorted({t.attr for t in tests}))

    def decide(self, get: Callable[[str], Any]) -> bool | None:
        """True or False when sure; None when classad2 must evaluate the whole constraint."""
        if not self.constant:
            return False
        unsure = self.opaque
        for test in self.tests:
            verdict = test.check(get(test.attr))
            if verdict is False:
                return False
            if verdict is None:
                unsure = True
        return None if unsure else True


def compile_conjunction(text: str) -> Conjunction | None:
    """The fast form of `text`, or None when its top level is not a conjunction read here."""
    tokens = _tokens(text)
    if not tokens:
        return None
    parts = _parts(tokens)
    if parts is None:
        return None
    tests = [p for p in parts if isinstance(p, Test)]
    if not tests and all(p is None for p in parts):
        return None  # nothing to decide here: every part is classad2's
    return Conjunction(tests, opaque=any(p is None for p in parts), constant=all(p is not False for p in parts))
