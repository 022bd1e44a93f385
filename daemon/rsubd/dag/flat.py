"""One flat spool directory for a whole DAG: every file gets a name of its own in it.

DAGMan runs in the DAGMan job's spool directory and submits every node there, so
every file the DAG reads is spooled side by side, and every file a node writes comes
back side by side. A file the program opens under its own name (a node's input) keeps
its name, and two different files of the same name cannot both be there; a file only
rsub's rewritten statements name (a node's .sub, its executable, a script, a splice)
may be renamed.
"""

from __future__ import annotations

import filecmp
import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from rsubd.dag.dagfile import DagError

# What DAGMan defines for a node when it submits it: kept as written in the rewritten files.
RUNTIME_MACROS = ("RETRY", "JOB", "DAGManJobId", "DAG_STATUS", "FAILED_COUNT", "DAGNodeName",
                  "Process", "ProcId")  # and the schedd's: each proc of a node's cluster names its own files
SENTINEL = "\ue000{}\ue000"  # a private-use character: not whitespace, never in a path


def sentinels() -> list[tuple[str, str]]:
    """Macro definitions that keep DAGMan's own macros recognisable through an expansion."""
    return [(name, SENTINEL.format(name)) for name in RUNTIME_MACROS]


def restore(value: str) -> str:
    """Put DAGMan's macros back where `sentinels` held their place."""
    for name in RUNTIME_MACROS:
        value = value.replace(SENTINEL.format(name), f"$({name})")
    return value


def pattern(value: str) -> str:
    """A flat name with macros (the retry number, the cluster) as an fnmatch pattern."""
    for name in RUNTIME_MACROS:
        value = value.replace(SENTINEL.format(name), "*")
    return value.replace("$(ClusterId)", "*")


@dataclass
class Flat:
    """The flat names taken so far: what each is (a local file, a generated text, or an output)."""

    files: dict[str, Path] = field(default_factory=dict)  # flat name -> the local file spooled under it
    texts: dict[str, str] = field(default_factory=dict)  # flat name -> a file rsub writes (a rewritten .dag/.sub)
    outputs: dict[str, tuple[Path, str]] = field(default_factory=dict)  # flat pattern -> (home, who writes it)

    def taken(self, name: str) -> bool:
        return name in self.files or name in self.texts or any(
            fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(p, name) for p in self.outputs)

    def spool(self, source: Path, *, rename: bool, who: str) -> str:
        """The flat name `source` is spooled under (the same one each time it is named)."""
        source = Path(os.path.abspath(source))
        name = source.name
        for flat, path in self.files.items():
            if path == source:
                return flat
        if not self.taken(name):
            self.files[name] = source
            return name
        other = self.files.get(name)
        if other is not None and source.is_file() and other.is_file() and filecmp.cmp(source, other, shallow=False):
            return name  # the same contents under the same name: one copy serves both
        if not rename:
            theirs = str(other) if other is not None else "another file of the DAG"
            raise DagError(f"{who}: input {source} and {theirs} have the same name {name!r}; every node of a"
                           " remote DAG runs in one spool directory, so rename one of them")
        return self.generated(name, None, source=source)

    def generated(self, name: str, text: str | None, *, source: Path | None = None) -> str:
        """A free flat name like `name` for a file rsub writes (or spools renamed)."""
        stem, dot, ext = name.partition(".")
        flat, n = name, 1
        while self.taken(flat):
            n += 1
            flat = f"{stem}.{n}{dot}{ext}"
        if source is not None:
            self.files[flat] = source
        else:
            self.texts[flat] = text or ""
        return flat

    def output(self, flat: str, home: Path, who: str) -> None:
        """A file a node writes lands as `flat` in the spool, and goes home to directory `home`."""
        key = pattern(flat)
        seen = self.outputs.get(key)
        if seen is not None:
            if seen[0] != home:
                raise DagError(f"{who}: it writes {restore(flat)!r} for {home}, and {seen[1]} writes the same name"
                               f" for {seen[0]}; every node of a remote DAG writes into one spool directory,"
                               " so give them different names")
            return
        if key in self.files:
            return  # a node rewrites one of the DAG's inputs: it comes back under that name
        self.outputs[key] = (home, who)
