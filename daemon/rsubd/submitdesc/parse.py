"""Parse HTCondor submit description text (commands, continuation lines, the queue forms)."""

from __future__ import annotations

import glob
import os
import re

from rsubd.submitdesc.model import KEY_RE, QueueSpec, SubmitDescription, SubmitError

_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# "include = x" is an ordinary command, so a keyword followed by a lone "=" is not a keyword line.
_UNSUPPORTED_RE = re.compile(r"(if|elif|else|endif|include|use)\b(?!\s*=(?!=))", re.IGNORECASE)
_QUEUE_RE = re.compile(r"queue\b(?!\s*=(?!=))(.*)", re.IGNORECASE | re.DOTALL)
_QUEUE_KEYWORD_RE = re.compile(r"(?:^|(?<=[\s,]))(from|in|matching)(?=\s|\(|$)", re.IGNORECASE)
_COUNT_RE = re.compile(r"(?:(\d+)(?:\s+|$))?(.*)", re.DOTALL)
_FIELD_RE = re.compile(r"([^,\s]*)\s*,?\s*")


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
        if not eq or not KEY_RE.fullmatch(key):
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


def split_item(line: str, nvars: int) -> tuple[str, ...]:
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
