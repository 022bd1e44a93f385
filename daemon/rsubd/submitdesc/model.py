"""A submit description as rsub holds it: its commands in file order, its queue statement."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Custom attributes must be plain ClassAd names; other commands may contain dots.
KEY_RE = re.compile(
    r"(?:\+|[Mm][Yy]\.)[A-Za-z_][A-Za-z0-9_]*|(?![Mm][Yy]\.)[A-Za-z_][A-Za-z0-9_.]*"
)
_ATTR_RE = re.compile(r"(?:\+|[Mm][Yy]\.)([A-Za-z_][A-Za-z0-9_]*)")


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
        wanted = identity(key)
        for k, v in reversed(self.commands):
            if identity(k) == wanted:
                return v
        return None

    def with_commands(self, extra: Sequence[tuple[str, str]]) -> SubmitDescription:
        """Return a copy with extra commands appended, each replacing earlier ones of the same key."""
        commands = list(self.commands)
        for key, value in extra:
            key, value = key.strip(), value.strip()
            if not KEY_RE.fullmatch(key):
                raise SubmitError(f"invalid submit command name: {key!r}")
            if "\n" in value or value.endswith("\\"):
                raise SubmitError(f"value of {key} cannot be written in a submit file: {value!r}")
            ident = identity(key)
            commands = [(k, v) for k, v in commands if identity(k) != ident]
            commands.append((key, value))
        return SubmitDescription(tuple(commands), self.queue)

    def num_procs(self) -> int:
        """Return how many procs the queue statement creates."""
        return self.queue.count * max(1, len(self.queue.items))


def attr_name(key: str) -> str | None:
    """Return the job attribute a "+Attr"/"My.Attr" key sets, or None for a plain submit command."""
    m = _ATTR_RE.fullmatch(key.strip())
    return m.group(1) if m else None


def identity(key: str) -> str:
    """Return the case-folded identity under which keys collide."""
    attr = attr_name(key)
    return "my." + attr.lower() if attr is not None else key.strip().lower()
