"""Expand a submit description's $(macros) for each proc its queue statement makes."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from rsubd.submitdesc.model import QueueSpec, SubmitDescription, SubmitError, attr_name, identity

_MAX_DEPTH = 32
_MACRO_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_FUNC_RE = re.compile(r"\$([A-Za-z]*)\(")


def expand(desc: SubmitDescription, *, cluster: int, limit: int | None = None) -> list[dict[str, str]]:
    """Return, per proc in proc order, every command's fully macro-expanded value (the first `limit` procs)."""
    return expand_queue(desc.commands, desc.queue, cluster=cluster, limit=limit)


def expand_queue(
    commands: Sequence[tuple[str, str]], queue: QueueSpec, *, cluster: int | None, first_proc: int = 0,
    limit: int | None = None,
) -> list[dict[str, str]]:
    """Expand the procs one queue statement makes from the commands in force at it.

    first_proc numbers the procs on from earlier queue statements of the same file. With cluster
    None, what only the schedd can know stays for it to expand: $(Cluster) and $(ClusterId) become
    "$(ClusterId)", and $ENV() and the functions rsub does not evaluate ($INT, $CHOICE, ...) are
    kept verbatim.
    """
    latest: dict[str, tuple[str, str]] = {}
    for key, value in commands:
        attr = attr_name(key)
        latest[identity(key)] = ("My." + attr if attr is not None else key.lower(), value)
    # Custom attributes are not macros, so only plain commands can be referenced by $(name).
    macros = {ident: raw for ident, (out, raw) in latest.items() if not out.startswith("My.")}
    q = queue
    items: tuple[tuple[str, ...], ...] = q.items or ((),)
    procs: list[dict[str, str]] = []
    # What differs from one proc to the next: the proc's numbers and the queue's variables. A command
    # whose expansion reads none of them (most of a description) is expanded once, for the first proc.
    live_names = frozenset({"procid", "process", "step", "itemindex", "row", *(v.lower() for v in q.vars)})
    constant: dict[str, str] | None = None
    for row, item in enumerate(items):
        for step in range(q.count):
            if limit is not None and len(procs) >= limit:
                return procs
            live = {name.lower(): value for name, value in zip(q.vars, item, strict=False)}  # no item: no vars
            proc = str(first_proc + len(procs))
            predefined = {
                "procid": proc,
                "process": proc,
                "clusterid": str(cluster),  # None: the expander keeps both for the schedd
                "cluster": str(cluster),
                "step": str(step),
                "itemindex": str(row),
                "row": str(row),
                "node": "",
            }
            # $(Node) is the parallel universe's; a file's (or a DAG's VARS) own `node` wins over it.
            live.update({k: v for k, v in predefined.items() if k not in live and not (k == "node" and k in macros)})
            ex = _Expander({**macros, **live}, keep=cluster is None, live=live_names)
            if constant is None:
                values, constant = {}, {}
                for out, raw in latest.values():
                    ex.touched = False
                    values[out] = ex.text(raw, ())
                    if not ex.touched:
                        constant[out] = values[out]
                procs.append(values)
            else:
                procs.append({out: constant[out] if out in constant else ex.text(raw, ())
                              for out, raw in latest.values()})
    return procs


def expand_text(text: str, commands: Sequence[tuple[str, str]]) -> str:
    """Expand the macros of a text (a queue statement's arguments) from the commands before it."""
    macros = {identity(k): v for k, v in commands if attr_name(k) is None}
    return _Expander(macros, keep=False).text(text, ())


class _Expander:
    """Expands $(...) macros for one proc, caching each macro's expansion."""

    def __init__(self, macros: dict[str, str], *, keep: bool = False, live: frozenset[str] = frozenset()) -> None:
        self._macros = macros
        self._keep = keep
        self._cache: dict[str, str] = {}
        self._live = live  # names whose value differs per proc
        self._dynamic: set[str] = set()  # cached macros whose expansion read a live name
        self.touched = False  # whether an expansion since the last reset read a live name, directly or not

    def text(self, text: str, stack: tuple[str, ...]) -> str:
        """Expand every macro in text; stack holds the macros being expanded."""
        out: list[str] = []
        i = 0
        while True:
            j = text.find("$", i)
            if j < 0:
                out.append(text[i:])
                return "".join(out)
            out.append(text[i:j])
            if text.startswith("$$(", j):
                # Match-time macros belong to the negotiator, so copy them verbatim.
                end = _close_paren(text, j + 2)
                if end < 0:
                    out.append(text[j:])
                    return "".join(out)
                out.append(text[j : end + 1])
                i = end + 1
                continue
            m = _FUNC_RE.match(text, j)
            end = _close_paren(text, m.end() - 1) if m else -1
            if m is None or end < 0:
                out.append("$")
                i = j + 1
                continue
            out.append(self._call(m.group(1), text[m.end() : end], stack))
            i = end + 1

    def _call(self, func: str, body: str, stack: tuple[str, ...]) -> str:
        """Evaluate $func(body); unsupported functions expand to ""."""
        if func == "":
            name, has_default, default = body.partition(":")
            name = name.strip()
            value = self._lookup(name, stack) if _MACRO_NAME_RE.fullmatch(name) else None
            if value is None:
                return self.text(default, stack) if has_default else ""
            return value
        if func[0] in "Ff" and len(func) > 1:
            name = body.strip()
            value = self._lookup(name, stack) if _MACRO_NAME_RE.fullmatch(name) else None
            return _file_part(value or "", func[1:].lower())
        if self._keep:
            return f"${func}({self.text(body, stack)})"
        if func.upper() == "ENV":
            return os.environ.get(body.strip(), "")
        return ""

    def _lookup(self, name: str, stack: tuple[str, ...]) -> str | None:
        """Return the expanded value of a macro, or None when it is not defined."""
        key = name.lower()
        if self._keep and key in ("cluster", "clusterid"):
            return "$(ClusterId)"  # the schedd numbers the cluster
        if key in self._live:
            self.touched = True
        if key not in self._macros:
            return None
        if key in self._cache:
            if key in self._dynamic:
                self.touched = True
            return self._cache[key]
        if key in stack:
            chain = " -> ".join(f"$({k})" for k in (*stack[stack.index(key) :], key))
            raise SubmitError(f"macro cycle: {chain}")
        if len(stack) >= _MAX_DEPTH:
            raise SubmitError(f"macro $({name}) nests more than {_MAX_DEPTH} expansions deep")
        outer, self.touched = self.touched, False
        value = self.text(self._macros[key], (*stack, key))
        if self.touched:
            self._dynamic.add(key)
        self.touched = outer or self.touched
        self._cache[key] = value
        return value


def _close_paren(text: str, open_at: int) -> int:
    """Return the index of the ")" matching the "(" at open_at, or -1."""
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == "(":
            depth += 1
        elif text[k] == ")":
            depth -= 1
            if depth == 0:
                return k
    return -1


def _file_part(path: str, mods: str) -> str:
    """Implement $F modifiers: p directory, d last directory (both with slash), n name, x ext."""
    directory, base = os.path.split(path)
    if directory and not directory.endswith("/"):
        directory += "/"
    stem, ext = os.path.splitext(base)
    if "p" in mods:
        head = directory
    elif "d" in mods and directory:
        head = os.path.basename(directory.rstrip("/")) + "/"
    else:
        head = ""
    return head + (stem if "n" in mods else "") + (ext if "x" in mods else "")
