"""A DAGMan input file as rsub reads it: the statements that name files, nodes and edges.

rsub does not run a DAG (the access point's condor_dagman does): it reads the .dag to
find every file the DAG needs, so that each can be spooled and named relative to the
one spool directory DAGMan runs in. Each statement is kept as its words, so the file is
written back with only the file names changed; what rsub cannot spool is refused with
the line that says it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field


class DagError(ValueError):
    """A DAG rsub refuses; the message names the file and line."""


# Statements rsub passes through unchanged: they name nodes and numbers, no files.
PLAIN = frozenset({"PARENT", "VARS", "RETRY", "ABORT-DAG-ON", "PRIORITY", "CATEGORY", "MAXJOBS", "DONE",
                   "PRE_SKIP", "SET_JOB_ATTR", "ENV", "REJECT", "CONNECT", "PIN_IN", "PIN_OUT"})
# Statements that name a node's submit file (JOB), or another DAG (SUBDAG EXTERNAL, SPLICE).
NODES = frozenset({"JOB", "FINAL", "SUBDAG", "SPLICE"})
# Statements whose second word names a file DAGMan reads (CONFIG, INCLUDE) or writes (the rest).
READS = frozenset({"CONFIG", "INCLUDE"})
WRITES = frozenset({"DOT", "NODE_STATUS_FILE", "JOBSTATE_LOG"})
UNSUPPORTED = {
    "PROVISIONER": "PROVISIONER nodes",
    "SERVICE": "SERVICE nodes",
    "SUBMIT-DESCRIPTION": "inline submit descriptions (SUBMIT-DESCRIPTION)",
    "SAVE_POINT_FILE": "save point files (SAVE_POINT_FILE)",
}
_VAR_RE = re.compile(r'\s*([A-Za-z_+][A-Za-z0-9_.+]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


@dataclass
class Statement:
    """One statement: its keyword (upper case), its words, and where it was."""

    keyword: str
    words: list[str]
    line: int
    text: str

    def render(self) -> str:
        return " ".join(_quote(w) for w in self.words)


@dataclass
class NodeRef:
    """A JOB, FINAL, SUBDAG EXTERNAL or SPLICE statement: the node's name, its file, its DIR."""

    kind: str  # JOB, FINAL, SUBDAG or SPLICE
    name: str
    file: str
    directory: str | None
    done: bool
    noop: bool
    statement: Statement
    file_index: int  # which of the statement's words is the file


@dataclass
class Script:
    """A SCRIPT statement: when it runs, for which node, and its executable."""

    when: str  # PRE, POST or HOLD
    node: str
    executable: str
    statement: Statement
    exe_index: int


@dataclass
class DagFile:
    path: str
    statements: list[Statement] = field(default_factory=list)
    nodes: list[NodeRef] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)
    vars: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    parents: dict[str, set[str]] = field(default_factory=dict)
    maxjobs: dict[str, int] = field(default_factory=dict)
    files: list[tuple[Statement, int]] = field(default_factory=list)  # CONFIG, INCLUDE: (statement, word)
    outputs: list[tuple[Statement, int]] = field(default_factory=list)  # DOT and the like

    def render(self) -> str:
        return "".join(s.text if not s.words else s.render() + "\n" for s in self.statements)


def _quote(word: str) -> str:
    if word and not re.search(r"[\s\"']", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _words(text: str, where: str) -> list[str]:
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError as e:
        raise DagError(f"{where}: {e}") from None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    yield from enumerate(text.splitlines(keepends=True), start=1)


def parse(text: str, path: str) -> DagFile:
    """Read a .dag file's text; `path` is only for messages."""
    dag = DagFile(path=path)
    for lineno, raw in _lines(text):
        stripped = raw.strip()
        where = f"{path}, line {lineno}"
        if not stripped or stripped.startswith("#"):
            dag.statements.append(Statement("", [], lineno, raw if raw.endswith("\n") else raw + "\n"))
            continue
        keyword = stripped.split(None, 1)[0].upper()
        if "{" in stripped and keyword in ("JOB", "FINAL"):
            raise DagError(f"{where}: inline submit descriptions (JOB NAME {{ ... }}) are not supported;"
                           " put the node's description in a .sub file")
        if keyword == "VARS":
            st = Statement(keyword, [], lineno, raw if raw.endswith("\n") else raw + "\n")
            dag.statements.append(st)  # written back exactly as it was: its quoting is DAGMan's own
            _vars(dag, stripped, where)
            continue
        words = _words(stripped, where)
        st = Statement(keyword, words, lineno, raw)
        dag.statements.append(st)
        if keyword in UNSUPPORTED:
            raise DagError(f"{where}: rsub does not support {UNSUPPORTED[keyword]} in a remote DAG")
        if keyword in NODES:
            dag.nodes.append(_node(st, where))
        elif keyword == "SCRIPT":
            dag.scripts.append(_script(st, where))
        elif keyword in READS or keyword in WRITES:
            if len(words) < 2:
                raise DagError(f"{where}: {keyword} needs a file name")
            (dag.files if keyword in READS else dag.outputs).append((st, 1))
        elif keyword == "PARENT":
            _edges(dag, words, where)
        elif keyword == "RETRY":
            if len(words) < 3 or not words[2].isdigit():
                raise DagError(f"{where}: RETRY needs a node and a number: RETRY NODE N")
            dag.retries[words[1]] = int(words[2])
        elif keyword == "MAXJOBS":
            if len(words) != 3 or not words[2].isdigit():
                raise DagError(f"{where}: MAXJOBS needs a category and a number: MAXJOBS CATEGORY N")
            dag.maxjobs[words[1]] = int(words[2])
        elif keyword == "DONE":
            for node in dag.nodes:
                if len(words) > 1 and node.name == words[1]:
                    node.done = True
        elif keyword not in PLAIN:
            raise DagError(f"{where}: unknown DAG statement {keyword!r}")
    names = [n.name for n in dag.nodes]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DagError(f"{path}: node {dup!r} is defined twice")
    return dag


def _node(st: Statement, where: str) -> NodeRef:
    words = st.words
    kind = st.keyword
    start = 1
    if kind == "SUBDAG":
        if len(words) < 2 or words[1].upper() != "EXTERNAL":
            raise DagError(f"{where}: SUBDAG needs EXTERNAL: SUBDAG EXTERNAL NAME FILE.dag")
        start = 2
    if len(words) < start + 2:
        raise DagError(f"{where}: {kind} needs a name and a file: {kind} NAME FILE")
    name, file_index = words[start], start + 1
    directory = None
    done = noop = False
    rest = words[start + 2:]
    i = 0
    while i < len(rest):
        option = rest[i].upper()
        if option == "DIR" and i + 1 < len(rest):
            directory = rest[i + 1]
            i += 2
            continue
        if option == "DONE":
            done = True
        elif option == "NOOP":
            noop = True
        else:
            raise DagError(f"{where}: unknown option {rest[i]!r} of {kind}")
        i += 1
    return NodeRef(kind, name, words[file_index], directory, done, noop, st, file_index)


def _script(st: Statement, where: str) -> Script:
    words = st.words
    i = 1
    while i < len(words) and words[i].upper() in ("DEFER", "DEBUG"):
        i += 3  # DEFER status time / DEBUG file type
    if len(words) < i + 3 or words[i].upper() not in ("PRE", "POST", "HOLD"):
        raise DagError(f"{where}: SCRIPT needs PRE, POST or HOLD, a node and an executable")
    return Script(words[i].upper(), words[i + 1], words[i + 2], st, i + 2)


def _edges(dag: DagFile, words: list[str], where: str) -> None:
    upper = [w.upper() for w in words]
    if "CHILD" not in upper:
        raise DagError(f"{where}: PARENT needs CHILD: PARENT A CHILD B")
    split = upper.index("CHILD")
    parents, children = words[1:split], words[split + 1:]
    if not parents or not children:
        raise DagError(f"{where}: PARENT ... CHILD ... needs nodes on both sides")
    for child in children:
        dag.parents.setdefault(child, set()).update(parents)


def _vars(dag: DagFile, stripped: str, where: str) -> None:
    parts = stripped.split(None, 2)
    if len(parts) < 3:
        raise DagError(f'{where}: VARS needs a node and name="value" pairs')
    node, rest = parts[1], parts[2]
    if rest.split(None, 1)[0].upper() in ("PREPEND", "APPEND"):
        rest = rest.split(None, 1)[1] if len(rest.split(None, 1)) > 1 else ""
    pairs = []
    pos = 0
    while rest[pos:].strip():
        m = _VAR_RE.match(rest, pos)
        if m is None:
            raise DagError(f'{where}: VARS values are name="value": cannot read {rest[pos:].strip()!r}')
        pairs.append((m.group(1), re.sub(r"\\(.)", r"\1", m.group(2))))
        pos = m.end()
    dag.vars.setdefault(node, []).extend(pairs)


def topological(dag: DagFile) -> list[str]:
    """The nodes, parents before children; a cycle is refused."""
    order: list[str] = []
    state: dict[str, int] = {}
    names = [n.name for n in dag.nodes]

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise DagError(f"{dag.path}: the DAG has a cycle: {' -> '.join((*chain, name))}")
        state[name] = 1
        for parent in sorted(dag.parents.get(name, ())):
            visit(parent, (*chain, name))
        state[name] = 2
        order.append(name)

    for name in names:
        visit(name, ())
    return order
