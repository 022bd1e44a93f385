"""Parse, expand and render HTCondor submit descriptions without the htcondor bindings."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "QueueSpec",
    "SubmitDescription",
    "SubmitError",
    "attr_name",
    "expand",
    "parse",
    "render",
]

_MAX_DEPTH = 32
# Custom attributes must be plain ClassAd names; other commands may contain dots.
_KEY_RE = re.compile(
    r"(?:\+|[Mm][Yy]\.)[A-Za-z_][A-Za-z0-9_]*|(?![Mm][Yy]\.)[A-Za-z_][A-Za-z0-9_.]*"
)
_ATTR_RE = re.compile(r"(?:\+|[Mm][Yy]\.)([A-Za-z_][A-Za-z0-9_]*)")
_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MACRO_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# "include = x" is an ordinary command, so a keyword followed by a lone "=" is not a keyword line.
_UNSUPPORTED_RE = re.compile(r"(if|elif|else|endif|include|use)\b(?!\s*=(?!=))", re.IGNORECASE)
_QUEUE_RE = re.compile(r"queue\b(?!\s*=(?!=))(.*)", re.IGNORECASE | re.DOTALL)
_QUEUE_KEYWORD_RE = re.compile(r"(?:^|(?<=[\s,]))(from|in|matching)(?=\s|\(|$)", re.IGNORECASE)
_COUNT_RE = re.compile(r"(?:(\d+)(?:\s+|$))?(.*)", re.DOTALL)
_FIELD_RE = re.compile(r"([^,\s]*)\s*,?\s*")
_FUNC_RE = re.compile(r"\$([A-Za-z]*)\(")


class SubmitError(ValueError):
    """A submit description rsub refuses; message says what and, where known, which line ("line 7: ...")."""


@dataclass(frozen=True)
class QueueSpec:
    """The single queue statement: repeat count, loop variables and their items."""

    count: int = 1
    vars: tuple[str, ...] = ()
    items: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class SubmitDescription:
    """Submit commands in file order plus the queue statement that ends them."""

    commands: tuple[tuple[str, str], ...]
    queue: QueueSpec

    def get(self, key: str) -> str | None:
        """Return the last value for key, matching case-insensitively with My./+ equivalence."""
        wanted = _identity(key)
        for k, v in reversed(self.commands):
            if _identity(k) == wanted:
                return v
        return None

    def with_commands(self, extra: Sequence[tuple[str, str]]) -> SubmitDescription:
        """Return a copy with extra commands appended, each replacing earlier ones of the same key."""
        commands = list(self.commands)
        for key, value in extra:
            key, value = key.strip(), value.strip()
            if not _KEY_RE.fullmatch(key):
                raise SubmitError(f"invalid submit command name: {key!r}")
            if "\n" in value or value.endswith("\\"):
                raise SubmitError(f"value of {key} cannot be written in a submit file: {value!r}")
            ident = _identity(key)
            commands = [(k, v) for k, v in commands if _identity(k) != ident]
            commands.append((key, value))
        return SubmitDescription(tuple(commands), self.queue)

    def num_procs(self) -> int:
        """Return how many procs the queue statement creates."""
        return self.queue.count * max(1, len(self.queue.items))


def attr_name(key: str) -> str | None:
    """Return the job attribute a "+Attr"/"My.Attr" key sets, or None for a plain submit command."""
    m = _ATTR_RE.fullmatch(key.strip())
    return m.group(1) if m else None


def _identity(key: str) -> str:
    """Return the case-folded identity under which keys collide."""
    attr = attr_name(key)
    return "my." + attr.lower() if attr is not None else key.strip().lower()


# ---------------------------------------------------------------- parse


def parse(text: str, *, cwd: str) -> SubmitDescription:
    """Parse submit description text; item files and globs are resolved against cwd."""
    lines = re.split(r"\r?\n", text)
    commands: list[tuple[str, str]] = []
    queue: QueueSpec | None = None
    i = 0
    while i < len(lines):
        lineno = i + 1
        # A commented-out first line of a continued command must not swallow the next line.
        if lines[i].lstrip().startswith("#"):
            i += 1
            continue
        logical, i = _logical_line(lines, i)
        line = logical.strip()
        if not line or line.startswith("#"):
            continue
        qm = _QUEUE_RE.match(line)
        if queue is not None:
            if qm:
                raise SubmitError(
                    f"line {lineno}: rsub supports one queue statement per submit description"
                )
            raise SubmitError(
                f"line {lineno}: only comments and blank lines may follow the queue statement: {line}"
            )
        if qm:
            queue, i = _parse_queue(qm.group(1).strip(), lineno, lines, i, cwd)
            continue
        um = _UNSUPPORTED_RE.match(line)
        if um:
            raise SubmitError(f"line {lineno}: '{um.group(1).lower()}' is not supported by rsub")
        key, eq, value = line.partition("=")
        key = key.strip()
        if eq and not key:
            raise SubmitError(f"line {lineno}: empty key: {line}")
        if not eq or not _KEY_RE.fullmatch(key):
            raise SubmitError(
                f"line {lineno}: syntax error: expected 'key = value' or a queue statement: {line}"
            )
        commands.append((key, value.strip()))
    if queue is None:
        raise SubmitError(
            "no queue statement: rsub needs exactly one 'queue' line, after the commands"
        )
    return SubmitDescription(tuple(commands), queue)


def _logical_line(lines: list[str], i: int) -> tuple[str, int]:
    """Join physical lines ending in a backslash; return the logical line and the next index."""
    # As condor_submit does: continuation lines lose leading blanks, and the joined text is
    # re-checked, so a logical line never ends in a backslash ("a\\" + "" continues again).
    buf = lines[i]
    i += 1
    while buf.rstrip().endswith("\\"):
        buf = buf.rstrip()[:-1]
        if i < len(lines):
            buf += lines[i].lstrip()
            i += 1
    return buf, i


def _parse_queue(
    args: str, lineno: int, lines: list[str], i: int, cwd: str
) -> tuple[QueueSpec, int]:
    """Parse the text after "queue"; multi-line item lists consume lines from index i."""
    km = _QUEUE_KEYWORD_RE.search(args)
    head = args[: km.start()] if km else args
    cm = _COUNT_RE.fullmatch(head.strip())
    assert cm is not None  # the pattern accepts any string
    count = int(cm.group(1)) if cm.group(1) else 1
    var_text = cm.group(2).strip()
    if km is None and var_text:
        raise SubmitError(f"line {lineno}: invalid queue statement: queue {args}")
    if count < 1:
        raise SubmitError(f"line {lineno}: queue count must be positive: {cm.group(1)}")
    if km is None:
        return QueueSpec(count), i
    names = tuple(t for t in re.split(r"[,\s]+", var_text) if t) or ("Item",)
    for name in names:
        if not _VAR_RE.fullmatch(name):
            raise SubmitError(f"line {lineno}: invalid queue variable name: {name!r}")
    if len({n.lower() for n in names}) != len(names):
        raise SubmitError(f"line {lineno}: queue variable named twice: {', '.join(names)}")
    keyword = km.group(1).lower()
    rest = args[km.end() :].strip()
    if keyword == "from":
        raw, i = _items_from(rest, lineno, lines, i, cwd)
    elif keyword == "in":
        raw, i = _items_in(rest, lineno, lines, i)
    else:
        raw = _items_matching(rest, lineno, cwd)
    if not raw:
        raise SubmitError(f"line {lineno}: queue statement gives no items")
    items = tuple(_split_item(r, len(names)) for r in raw)
    return QueueSpec(count, names, items), i


def _items_from(
    rest: str, lineno: int, lines: list[str], i: int, cwd: str
) -> tuple[list[str], int]:
    """Read "from FILE" or an inline "from (" block up to a line holding only ")"."""
    if rest.startswith("("):
        if rest != "(":
            raise SubmitError(f"line {lineno}: items of 'from (' start on the next line")
        raw: list[str] = []
        # condor_submit reads inline items like other lines: continued, and comments skipped.
        while i < len(lines):
            logical, i = _logical_line(lines, i)
            line = logical.strip()
            if line == ")":
                return raw, i
            if line and not line.startswith("#"):
                raw.append(line)
        raise SubmitError(f"line {lineno}: item list opened with 'from (' is never closed by ')'")
    if not rest:
        raise SubmitError(f"line {lineno}: 'queue ... from' needs a file name or '('")
    path = rest if os.path.isabs(rest) else os.path.join(cwd, rest)
    try:
        with open(path, encoding="utf-8") as f:
            content = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SubmitError(f"line {lineno}: cannot read item file {path}: {reason}") from e
    return [s for s in (ln.strip() for ln in re.split(r"\r?\n", content)) if s], i


def _items_in(rest: str, lineno: int, lines: list[str], i: int) -> tuple[list[str], int]:
    """Read "in a, b c" or "in ( ... )", the parenthesised form possibly spanning lines."""
    if rest.startswith("("):
        body = rest[1:].rstrip()
        # The list ends at a line ending in ")", so items such as "$(x)" may hold parentheses.
        while not body.endswith(")"):
            if i >= len(lines):
                raise SubmitError(
                    f"line {lineno}: item list opened with 'in (' is never closed by ')'"
                )
            body += "\n" + lines[i].rstrip()
            i += 1
        rest = body[:-1]
    return [t for t in re.split(r"[,\s]+", rest) if t], i


def _items_matching(rest: str, lineno: int, cwd: str) -> list[str]:
    """Glob "matching [files|dirs] PATTERN..." relative to cwd, as condor_submit does."""
    words = [w for w in re.split(r"[,\s]+", rest) if w]
    kind = words[0].lower() if words and words[0].lower() in ("files", "dirs") else ""
    patterns = words[1:] if kind else words
    if not patterns:
        raise SubmitError(f"line {lineno}: 'queue ... matching' needs a pattern")
    # Pattern order is kept, each pattern's matches sorted, duplicates dropped, and
    # directories get a trailing "/" (which matters to transfer_input_files).
    found: dict[str, None] = {}
    for pattern in patterns:
        for name in sorted(glob.glob(pattern, root_dir=cwd)):
            is_dir = os.path.isdir(os.path.join(cwd, name))
            if (kind == "files" and is_dir) or (kind == "dirs" and not is_dir):
                continue
            found.setdefault(name + "/" if is_dir and not name.endswith("/") else name)
    return list(found)


def _split_item(line: str, nvars: int) -> tuple[str, ...]:
    """Split an item into nvars fields on commas/whitespace; the last field takes the rest."""
    rest = line.strip()
    fields: list[str] = []
    for _ in range(nvars - 1):
        m = _FIELD_RE.match(rest)
        assert m is not None  # every part of the pattern may match empty
        fields.append(m.group(1))
        rest = rest[m.end() :]
    fields.append(rest.strip())
    return tuple(fields)


# ---------------------------------------------------------------- expand


def expand(desc: SubmitDescription, *, cluster: int) -> list[dict[str, str]]:
    """Return, per proc in proc order, every command's fully macro-expanded value."""
    latest: dict[str, tuple[str, str]] = {}
    for key, value in desc.commands:
        attr = attr_name(key)
        latest[_identity(key)] = ("My." + attr if attr is not None else key.lower(), value)
    # Custom attributes are not macros, so only plain commands can be referenced by $(name).
    macros = {ident: raw for ident, (out, raw) in latest.items() if not out.startswith("My.")}
    q = desc.queue
    items: tuple[tuple[str, ...], ...] = q.items or ((),)
    procs: list[dict[str, str]] = []
    for row, item in enumerate(items):
        for step in range(q.count):
            live = {name.lower(): value for name, value in zip(q.vars, item)}
            predefined = {
                "procid": str(len(procs)),
                "process": str(len(procs)),
                "clusterid": str(cluster),
                "cluster": str(cluster),
                "step": str(step),
                "itemindex": str(row),
                "row": str(row),
                "node": "",
            }
            live.update({k: v for k, v in predefined.items() if k not in live})
            ex = _Expander({**macros, **live})
            procs.append({out: ex.text(raw, ()) for out, raw in latest.values()})
    return procs


class _Expander:
    """Expands $(...) macros for one proc, caching each macro's expansion."""

    def __init__(self, macros: dict[str, str]) -> None:
        self._macros = macros
        self._cache: dict[str, str] = {}

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
        if func.upper() == "ENV":
            return os.environ.get(body.strip(), "")
        if func[0] in "Ff" and len(func) > 1:
            name = body.strip()
            value = self._lookup(name, stack) if _MACRO_NAME_RE.fullmatch(name) else None
            return _file_part(value or "", func[1:].lower())
        return ""

    def _lookup(self, name: str, stack: tuple[str, ...]) -> str | None:
        """Return the expanded value of a macro, or None when it is not defined."""
        key = name.lower()
        if key not in self._macros:
            return None
        if key in self._cache:
            return self._cache[key]
        if key in stack:
            chain = " -> ".join(f"$({k})" for k in (*stack[stack.index(key) :], key))
            raise SubmitError(f"macro cycle: {chain}")
        if len(stack) >= _MAX_DEPTH:
            raise SubmitError(f"macro $({name}) nests more than {_MAX_DEPTH} expansions deep")
        value = self.text(self._macros[key], (*stack, key))
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


# ---------------------------------------------------------------- render


def render(desc: SubmitDescription) -> str:
    """Return self-contained submit text that parses back to an equal description."""
    out: list[str] = []
    for key, value in desc.commands:
        # A trailing backslash would continue the line, and there is no escape for it.
        bad_value = value != value.strip() or "\n" in value or value.endswith("\\")
        if not _KEY_RE.fullmatch(key) or bad_value:
            raise SubmitError(f"cannot render command {key!r} = {value!r}")
        out.append(f"{key} = {value}")
    q = desc.queue
    if q.count < 1 or bool(q.vars) != bool(q.items):
        raise SubmitError(f"cannot render queue statement {q!r}")
    count = f" {q.count}" if q.count != 1 else ""
    if not q.vars:
        out.append(f"queue{count}")
        return "\n".join(out) + "\n"
    out.append(f"queue{count} {', '.join(q.vars)} from (")
    for item in q.items:
        line = ", ".join(item)
        # Inline items are read like submit lines, so these could not come back unchanged.
        unreadable = line.strip() in ("", ")") or line.startswith("#") or line.endswith("\\")
        if unreadable or "\n" in line or _split_item(line, len(q.vars)) != item:
            raise SubmitError(f"cannot render queue item {item!r}")
        out.append(line)
    out.append(")")
    return "\n".join(out) + "\n"
