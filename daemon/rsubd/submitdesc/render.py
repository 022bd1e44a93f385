"""Render a submit description back into self-contained text that parses to an equal one."""

from __future__ import annotations

from rsubd.submitdesc.model import KEY_RE, SubmitDescription, SubmitError
from rsubd.submitdesc.parse import UNIT_SEPARATOR, split_item


def render(desc: SubmitDescription) -> str:
    """Return self-contained submit text that parses back to an equal description."""
    out: list[str] = []
    for key, value in desc.commands:
        # A trailing backslash would continue the line, and there is no escape for it.
        bad_value = value != value.strip() or "\n" in value or value.endswith("\\")
        if not KEY_RE.fullmatch(key) or bad_value:
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
    # Fields with commas or blanks are written as the bindings write item data: the whole list
    # separated by the ASCII unit separator.
    sep = ", "
    if len(q.vars) > 1 and any(split_item(", ".join(item), len(q.vars)) != item for item in q.items):
        sep = UNIT_SEPARATOR
    for item in q.items:
        line = sep.join(item)
        # Inline items are read like submit lines, so these could not come back unchanged (a blank
        # line can: it is an item with every variable empty).
        unreadable = line.strip() == ")" or line.startswith("#") or line.endswith("\\")
        if unreadable or "\n" in line or split_item(line, len(q.vars)) != item:
            raise SubmitError(f"cannot render queue item {item!r}")
        out.append(line)
    out.append(")")
    return "\n".join(out) + "\n"
