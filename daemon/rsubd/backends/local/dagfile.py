"""The DAG input language, as the embedded scheduler's DAGMan reads it.

Supported: JOB (with DIR, NOOP, DONE), PARENT ... CHILD ..., VARS (PREPEND/APPEND, ALL_NODES),
RETRY (UNLESS-EXIT, ALL_NODES), SCRIPT PRE/POST (DEFER is read and ignored), ABORT-DAG-ON
(RETURN), PRIORITY, CATEGORY, MAXJOBS, CONFIG, SPLICE (DIR), DONE, and, as no-ops, DOT,
NODE_STATUS_FILE and JOBSTATE_LOG. Refused with `DagError` (DAGMan then exits 1): SUBDAG
EXTERNAL, FINAL, SERVICE, PROVISIONER, SCRIPT HOLD, INCLUDE and anything else.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ALL_NODES = "ALL_NODES"
SPLICE_SEP = "+"
IGNORED = {"DOT", "NODE_STATUS_FILE", "JOBSTATE_LOG", "SET_JOB_ATTR", "ENV", "REJECT"}
_VAR = re.compile(r'\s*([A-Za-z_+][A-Za-z0-9_.+]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


class DagError(Exception):
    """A DAG file this DAGMan cannot run; the message names the file and line."""


@dataclass
class Script:
    executable: str
    arguments: list[str]


@dataclass
class Node:
    name: str
    submit: str
    directory: str = ""
    noop: bool = False
    done: bool = False
    vars: list[tuple[str, str]] = field(default_factory=list)
    appended: list[tuple[str, str]] = field(default_factory=list)
    retry: int = 0
    unless_exit: int | None = None
    pre: Script | None = None
    post: Script | None = None
    priority: int = 0
    category: str | None = None
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


@dataclass
class AbortRule:
    value: int
    returns: int | None


@dataclass
class Dag:
    nodes: dict[str, Node] = field(default_factory=dict)
    abort: dict[str, AbortRule] = field(default_factory=dict)
    maxjobs: dict[str, int] = field(default_factory=dict)
    config: str | None = None
    refused: str | None = None  # the first command refused: DAGMan reports it and exits 1
    # A splice's name in PARENT/CHILD stands for its initial (as a child) or final (as a parent) nodes.
    splices: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)

    def initial(self) -> list[str]:
        return [n for n, node in self.nodes.items() if not node.parents]

    def final(self) -> list[str]:
        return [n for n, node in self.nodes.items() if not node.children]


def parse(path: Path, *, prefix: str = "", directory: str = "", depth: int = 0, base: Path | None = None) -> Dag:
    """Read a .dag file; a splice's file is found from `base` (the top DAG's directory) and its DIR."""
    base = path.parent if base is None else base
    if depth > 10:
        raise DagError(f"{path}: splices nest more than 10 deep")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DagError(f"Failed to open DAG file {path}: {e.strerror}") from None
    dag = Dag()
    edges: list[tuple[list[str], list[str]]] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path} (line {number})"
        try:
            words = shlex.split(line, posix=True) if not line.upper().startswith("VARS") else line.split()
        except ValueError as e:
            raise DagError(f"{where}: {e}") from None
        keyword = words[0].upper()
        try:
            _command(dag, keyword, words, line, prefix, directory, depth, edges, base)
        except (IndexError, ValueError):
            raise DagError(f"{where}: cannot read {keyword} line: {line}") from None
        except DagError as e:
            if str(e).startswith("refused:"):
                dag.refused = dag.refused or f"{where}: {str(e)[8:]}"
                continue
            raise DagError(f"{where}: {e}") from None
    for parents, children in edges:
        for p in _expand(dag, parents, final=True):
            for c in _expand(dag, children, final=False):
                if c not in dag.nodes[p].children:
                    dag.nodes[p].children.append(c)
                    dag.nodes[c].parents.append(p)
    return dag


def _node(dag: Dag, name: str, prefix: str) -> Node:
    full = prefix + name
    if full not in dag.nodes:
        raise DagError(f"unknown node {name}")
    return dag.nodes[full]


def _targets(dag: Dag, name: str, prefix: str) -> list[Node]:
    if name.upper() == ALL_NODES:
        return list(dag.nodes.values())
    return [_node(dag, name, prefix)]


def _command(dag: Dag, keyword: str, words: list[str], line: str, prefix: str, directory: str, depth: int,
             edges: list[tuple[list[str], list[str]]], base: Path) -> None:
    if keyword == "JOB":
        name = words[1]
        if SPLICE_SEP in name:
            raise DagError(f"node name {name} may not contain {SPLICE_SEP!r}")
        node = Node(prefix + name, words[2], directory=directory)
        rest = [w.upper() for w in words[3:]]
        i = 0
        while i < len(rest):
            if rest[i] == "DIR":
                node.directory = os.path.join(directory, words[3 + i + 1])
                i += 1
            elif rest[i] == "NOOP":
                node.noop = True
            elif rest[i] == "DONE":
                node.done = True
            else:
                raise DagError(f"unexpected {words[3 + i]} in JOB line")
            i += 1
        if node.name in dag.nodes:
            raise DagError(f"node {name} is defined twice")
        dag.nodes[node.name] = node
    elif keyword == "PARENT":
        upper = [w.upper() for w in words]
        cut = upper.index("CHILD")
        edges.append(([prefix + w for w in words[1:cut]], [prefix + w for w in words[cut + 1:]]))
        if cut == 1 or cut == len(words) - 1:
            raise ValueError
    elif keyword == "VARS":
        _vars(dag, line, prefix)
    elif keyword == "RETRY":
        for node in _targets(dag, words[1], prefix):
            node.retry = int(words[2])
            if len(words) > 3:
                if words[3].upper() != "UNLESS-EXIT":
                    raise ValueError
                node.unless_exit = int(words[4])
    elif keyword == "SCRIPT":
        i = 1
        while words[i].upper() in ("DEFER", "DEBUG"):
            i += 3
        kind = words[i].upper()
        if kind not in ("PRE", "POST"):
            raise DagError(f"refused:SCRIPT {kind} is not supported by the embedded DAGMan")
        script = Script(words[i + 2], words[i + 3:])
        for node in _targets(dag, words[i + 1], prefix):
            setattr(node, kind.lower(), script)
    elif keyword == "ABORT-DAG-ON":
        returns = int(words[4]) if len(words) > 4 and words[3].upper() == "RETURN" else None
        for node in _targets(dag, words[1], prefix):
            dag.abort[node.name] = AbortRule(int(words[2]), returns)
    elif keyword == "PRIORITY":
        for node in _targets(dag, words[1], prefix):
            node.priority = int(words[2])
    elif keyword == "CATEGORY":
        for node in _targets(dag, words[1], prefix):
            node.category = words[2] if words[2].startswith("+") else prefix + words[2]
    elif keyword == "MAXJOBS":
        dag.maxjobs[words[1] if words[1].startswith("+") else prefix + words[1]] = int(words[2])
    elif keyword == "CONFIG":
        dag.config = os.path.join(directory, words[1])
    elif keyword == "DONE":
        _node(dag, words[1], prefix).done = True
    elif keyword == "SPLICE":
        _splice(dag, words, prefix, directory, depth, base)
    elif keyword in IGNORED:
        pass
    elif keyword == "SUBDAG":
        raise DagError("refused:SUBDAG EXTERNAL is not supported by the embedded DAGMan (use SPLICE)")
    else:
        raise DagError(f"refused:{keyword} is not supported by the embedded DAGMan")


def _vars(dag: Dag, line: str, prefix: str) -> None:
    words = line.split(None, 2)
    rest = words[2] if len(words) > 2 else ""
    mode = "PREPEND"
    head = rest.split(None, 1)
    if head and head[0].upper() in ("PREPEND", "APPEND"):
        mode = head[0].upper()
        rest = head[1] if len(head) > 1 else ""
    pairs = []
    pos = 0
    while rest[pos:].strip():
        m = _VAR.match(rest, pos)
        if m is None:
            raise DagError(f"cannot read VARS value at: {rest[pos:].strip()}")
        value = re.sub(r"\\(.)", r"\1", m.group(2))
        pairs.append((m.group(1), value))
        pos = m.end()
    if not pairs:
        raise ValueError
    for node in _targets(dag, words[1], prefix):
        (node.appended if mode == "APPEND" else node.vars).extend(pairs)


def _splice(dag: Dag, words: list[str], prefix: str, directory: str, depth: int, base: Path) -> None:
    name = words[1]
    inner_dir = directory
    if len(words) > 4 and words[3].upper() == "DIR":
        inner_dir = os.path.join(directory, words[4])
    inner = parse(base / inner_dir / words[2], prefix=f"{prefix}{name}{SPLICE_SEP}",
                  directory=inner_dir, depth=depth + 1, base=base)
    if inner.refused:
        raise DagError("refused:" + inner.refused)
    if prefix + name in dag.nodes:
        raise DagError(f"splice {name} has the name of a node")
    dag.nodes.update(inner.nodes)
    dag.abort.update(inner.abort)
    dag.maxjobs.update(inner.maxjobs)
    dag.config = dag.config or inner.config
    dag.splices[prefix + name] = (inner.initial(), inner.final())


def _expand(dag: Dag, names: list[str], *, final: bool) -> list[str]:
    splices = dag.splices
    out: list[str] = []
    for name in names:
        if name in splices:
            out.extend(splices[name][1] if final else splices[name][0])
        elif name in dag.nodes:
            out.append(name)
        else:
            raise DagError(f"PARENT/CHILD names unknown node {name}")
    return out


@dataclass(frozen=True)
class Options:
    dag: str
    lockfile: str
    auto_rescue: bool
    rescue_from: int
    max_jobs: int | None


def options(argv: list[str]) -> Options:
    """condor_dagman's arguments (the ones rsub and condor_submit_dag pass); others are ignored."""
    values: dict[str, str] = {}
    flags = {"-dag", "-lockfile", "-autorescue", "-dorescuefrom", "-maxjobs", "-csdversion", "-dagman", "-l",
             "-maxidle", "-maxpre", "-maxpost", "-priority", "-notification", "-debug", "-outfile_dir", "-batch-name"}
    i = 0
    while i < len(argv):
        word = argv[i].lower()
        if word in flags and i + 1 < len(argv):
            if word == "-dag" and "-dag" in values:
                raise DagError("more than one -Dag file is not supported by the embedded DAGMan")
            values[word] = argv[i + 1]
            i += 2
        else:
            i += 1
    if "-dag" not in values:
        raise DagError("no -Dag file given")
    dag = values["-dag"]
    return Options(dag=dag, lockfile=values.get("-lockfile", f"{dag}.lock"),
                   auto_rescue=values.get("-autorescue", "1") != "0",
                   rescue_from=int(values.get("-dorescuefrom", "0")),
                   max_jobs=int(values["-maxjobs"]) if "-maxjobs" in values else None)


def read_config(path: Path) -> dict[str, str]:
    """A DAGMan CONFIG file: NAME = value lines (DAGMAN_MAX_JOBS_SUBMITTED, ...)."""
    settings: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DagError(f"Failed to read DAGMan config file {path}: {e.strerror}") from None
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            settings[key.strip().upper()] = value.strip()
    return settings


def rescue_number(dag_file: str, cwd: Path) -> int:
    """The newest rescue DAG present (x.dag.rescueNNN), 0 if none."""
    best = 0
    for child in cwd.glob(f"{dag_file}.rescue[0-9][0-9][0-9]"):
        best = max(best, int(child.name[-3:]))
    return best
