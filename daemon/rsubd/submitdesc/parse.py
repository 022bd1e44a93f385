"""Parse HTCondor submit description text (commands, continuation lines, the queue forms)."""

from __future__ import annotations

import glob
import os
import re

from rsubd.submitdesc.expand import expand_text
from rsubd.submitdesc.flatten import flatten
from rsubd.submitdesc.model import KEY_RE, QueueSpec, SubmitDescription, SubmitError

_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# "include = x" is an ordinary command, so a keyword followed by a lone "=" is not a keyword line.
_UNSUPPORTED_RE = re.compile(r"(if|elif|else|endif|include|use)\b(?!\s*=(?!=))", re.IGNORECASE)
_QUEUE_RE = re.compile(r"queue\b(?!\s*=(?!=))(.*)", re.IGNORECASE | re.DOTALL)
_QUEUE_KEYWORD_RE = re.compile(r"(?:^|(?<=[\s,]))(from|in|matching)(?=\s|\(|$)", re.IGNORECASE)
_COUNT_RE = re.compile(r"(?:(\d+)(?:\s+|$))?(.*)", re.DOTALL)
_FIELD_RE = re.compile(r"([^,\s]*)\s*,?\s*")
UNIT_SEPARATOR = "\x1f"
_MACRO_REF_RE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.]*)\)")


def parse(text: str, *, cwd: str) -> SubmitDescription:
    """Parse submit description text; item files and globs are resolved against cwd.

    Several queue statements make one cluster, as with condor_submit (see flatten).
    """
    lines = re.split(r"\r?\n", text)
    commands: list[tuple[str, str]] = []
    sections: list[tuple[tuple[tuple[str, str], ...], QueueSpec]] = []
    trailing: tuple[int, str] | None = None  # the first command after the latest queue statement
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
        if qm:
            args = qm.group(1).strip()
            args = _expand_count(args, lineno, commands)
            queue, i = _parse_queue(args, lineno, lines, i, cwd)
            sections.append((tuple(commands), queue))
            trailing = None
            continue
        um = _UNSUPPORTED_RE.match(line)
        if um:
            raise SubmitError(f"line {lineno}: '{um.group(1).lower()}' is not supported by rsub")
        key, eq, value = line.partition("=")
        key = key.strip()
        if eq and not key:
            raise SubmitError(f"line {lineno}: empty key: {line}")
        if not eq or not KEY_RE.fullmatch(key):
            raise SubmitError(
                f"line {lineno}: syntax error: expected 'key = value' or a queue statement: {line}"
            )
        commands.append((key, value.strip()))
        if sections and trailing is None:
            trailing = (lineno, line)
    if not sections:
        raise SubmitError("no queue statement: rsub needs a 'queue' line after the commands")
    if trailing is not None:
        raise SubmitError(
            f"line {trailing[0]}: commands after the last queue statement make no job: {trailing[1]}"
        )
    if len(sections) == 1:
        return SubmitDescription(*sections[0])
    return flatten(sections)


def _expand_count(args: str, lineno: int, commands: list[tuple[str, str]]) -> str:
    """Expand the macros of the queue count ("queue $(N)" with "N = 2"), as condor_submit does.

    Items keep theirs: they are expanded per proc, like any other macro's value.
    """
    km = _QUEUE_KEYWORD_RE.search(args)
    head = args[: km.start()] if km else args
    if "$" not in head:
        return args
    defined = {k.strip().lower() for k, _ in commands}
    for name in _MACRO_REF_RE.findall(head):
        if name.lower() not in defined:
            raise SubmitError(f"line {lineno}: queue {args}: $({name}) is not defined above it")
    return expand_text(head, commands) + (" " + args[km.start() :] if km else "")


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
    items = tuple(split_item(r, len(names)) for r in raw)
    return QueueSpec(count, names, items), i


def _items_from(
    rest: str, lineno: int, lines: list[str], i: int, cwd: str
) -> tuple[list[str], int]:
    """Read "from FILE" or an inline "from (" block up to a line holding only ")"."""
    if rest.startswith("("):
        if rest != "(":
            raise SubmitError(f"line {lineno}: items of 'from (' start on the next line")
        raw: list[str] = []
        # condor_submit reads inline items like other lines: continued, and comments skipped. A blank
        # line is an item, every variable empty (SubmitHash's item loading keeps it; the bindings'
        # itemdata() shows it, HTCondor 25.14): it makes a job.
        while i < len(lines):
            logical, i = _logical_line(lines, i)
            line = logical.strip()
            if line == ")":
                return raw, i
            if not line.startswith("#"):
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
    # Every line of an item file is an item, a blank one or a "#" one too (as condor_submit reads it).
    # Lines end at "\n" only, as condor_submit reads them (str.splitlines would also split at \x0c, \x1e, ...).
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [ln.strip() for ln in lines], i


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


def split_item(line: str, nvars: int) -> tuple[str, ...]:
    """Split an item into nvars fields on commas/whitespace; the last field takes the rest.

    A line holding the ASCII unit separator is split on it alone, as HTCondor splits the item
    data the bindings write, so fields may hold commas and blanks.
    """
    rest = line.strip()
    if UNIT_SEPARATOR in rest:
        parts = [p.strip() for p in rest.split(UNIT_SEPARATOR, nvars - 1)]
        return tuple(parts + [""] * (nvars - len(parts)))
    fields: list[str] = []
    for _ in range(nvars - 1):
        m = _FIELD_RE.match(rest)
        assert m is not None  # every part of the pattern may match empty
        fields.append(m.group(1))
        rest = rest[m.end() :]
    fields.append(rest.strip())
    return tuple(fields)


def parse_remaps(text: str) -> dict[str, str]:
    """`transfer_output_remaps` ("name = dest; name2 = dest2") as a dict."""
    pairs = {}
    for item in text.strip().strip('"').split(";"):
        src, eq, dst = item.partition("=")
        if eq and src.strip():
            pairs[src.strip()] = dst.strip()
    return pairs
