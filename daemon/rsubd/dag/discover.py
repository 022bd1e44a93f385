"""Every file a DAG needs, found before anything is sent, and its statements rewritten for the flat spool.

Relative names resolve as condor_submit_dag resolves them when run in the DAG's own
directory: the .dag's statements (node files, scripts, CONFIG, SPLICE) against the
DAG's directory (or the node's DIR); in a node's .sub, `executable` against that
directory and the inputs and outputs against the node's `initialdir`. Each node's
outputs go home to that initialdir.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rsubd import submitdesc
from rsubd.dag import dagfile
from rsubd.dag.dagfile import DagError, DagFile, NodeRef
from rsubd.dag.flat import Flat, pattern, restore, sentinels
from rsubd.submitdesc import QueueSpec
from rsubd.submitdesc.expand import expand_queue

SYSTEM_DIRS = ("/bin/", "/sbin/", "/usr/", "/lib/", "/lib64/", "/etc/", "/opt/")
MAX_DEPTH = 8  # splices and sub-DAGs nested deeper than this are refused (a loop of SPLICEs)


@dataclass(frozen=True)
class Node:
    """A node as the ledger records it: its name in the DAG, where its files go home, its .sub."""

    name: str
    home: str
    submit_file: str
    retries: int = 0
    parents: tuple[str, ...] = ()


@dataclass
class Plan:
    """What to spool, under which flat names, and where each output goes home."""

    dag_name: str  # the flat name of the top .dag: DAGMan's own files are named after it
    dag_dir: Path
    flat: Flat = field(default_factory=Flat)
    nodes: list[Node] = field(default_factory=list)
    maxjobs: dict[str, int] = field(default_factory=dict)
    pending: list[tuple[str, str, Path]] = field(default_factory=list)  # (who, node, input not there yet)
    undeclared: dict[Path, set[str]] = field(default_factory=dict)  # iwd -> nodes that send back every new file
    node_attrs: tuple[tuple[str, str], ...] = ()  # added to every node's description (rsub's tags)

    def homes(self) -> list[tuple[str, str]]:
        """(flat pattern, home directory) for every output whose home is not the DAG's directory."""
        return sorted((p, str(home)) for p, (home, _who) in self.flat.outputs.items() if home != self.dag_dir)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise DagError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DagError(f"cannot read {what} {path}: {e}") from None


def plan(dag_path: Path, *, node_attrs: tuple[tuple[str, str], ...] = ()) -> Plan:
    """Read the DAG and every node's description; refuse (DagError) what cannot be spooled."""
    dag_path = Path(os.path.abspath(dag_path))
    result = Plan(dag_name=dag_path.name, dag_dir=dag_path.parent, node_attrs=node_attrs)
    result.flat.texts[dag_path.name] = ""  # DAGMan's files are named after it: reserved first
    text = _walk(result, dag_path, dag_path.parent, prefix="", depth=0)
    result.flat.texts[dag_path.name] = text
    _settle_pending(result)
    return result


def _walk(result: Plan, path: Path, base: Path, *, prefix: str, depth: int) -> str:
    if depth > MAX_DEPTH:
        raise DagError(f"{path}: splices or sub-DAGs nest more than {MAX_DEPTH} deep (a loop?)")
    dag = dagfile.parse(_read(path, "DAG file"), str(path))
    dagfile.topological(dag)
    result.maxjobs.update(dag.maxjobs)
    for st, i in dag.files:
        target = base / st.words[i]
        if st.keyword == "INCLUDE":
            st.words[i] = result.flat.generated(target.name, _walk(result, target, base, prefix=prefix,
                                                                   depth=depth + 1))
        else:
            if not target.is_file():
                raise DagError(f"{path}, line {st.line}: {st.keyword} file {target} does not exist")
            st.words[i] = result.flat.spool(target, rename=True, who=f"{path}, line {st.line}")
    for st, i in dag.outputs:
        target = base / st.words[i]
        st.words[i] = target.name
        result.flat.output(target.name, target.parent, f"{path}, line {st.line}")
    for node in dag.nodes:
        _node(result, dag, node, base, prefix=prefix, depth=depth)
    for script in dag.scripts:
        ref = next((n for n in dag.nodes if n.name == script.node), None)
        where = base / ref.directory if ref is not None and ref.directory else base
        exe = script.executable
        who = f"{path}, line {script.statement.line}"
        local = where / os.path.expanduser(exe)
        if os.path.isabs(exe) and exe.startswith(SYSTEM_DIRS):
            continue  # a system program: the access point's own runs
        if not local.is_file():
            raise DagError(f"{who}: SCRIPT {script.when} {script.node}: {local} does not exist")
        script.statement.words[script.exe_index] = result.flat.spool(local, rename=True, who=who)
    return dag.render()


def _drop_dir(node: NodeRef) -> None:
    words = node.statement.words
    for i in range(len(words) - 1):
        if words[i].upper() == "DIR" and i > node.file_index:
            del words[i:i + 2]
            return


def _node(result: Plan, dag: DagFile, node: NodeRef, base: Path, *, prefix: str, depth: int) -> None:
    where = base / node.directory if node.directory else base
    who = f"node {prefix}{node.name}"
    target = where / node.file
    _drop_dir(node)
    if node.kind in ("SPLICE", "SUBDAG"):
        inner = f"{prefix}{node.name}+" if node.kind == "SPLICE" else f"{prefix}{node.name}/"
        text = _walk(result, target, where, prefix=inner, depth=depth + 1)
        node.statement.words[node.file_index] = result.flat.generated(target.name, text)
        if node.kind == "SUBDAG":
            result.nodes.append(Node(f"{prefix}{node.name}", str(where), str(target), dag.retries.get(node.name, 0),
                                     tuple(sorted(dag.parents.get(node.name, ())))))
        return
    text = _read(target, f"{who}: submit file")
    try:
        desc = submitdesc.parse(text, cwd=str(where))
        # As DAGMan passes them, VARS (and DAGMan's own macros) win over what the .sub defines.
        extra = sentinels() + [(k, v) for k, v in dag.vars.get(node.name, []) if not k.startswith(("+", "My."))]
        q = desc.queue
        names, values = tuple(k for k, _ in extra), tuple(v for _, v in extra)
        queue = QueueSpec(q.count, q.vars + names, tuple(i + values for i in q.items) or (values,))
        procs = expand_queue(desc.commands, queue, cluster=None)
    except submitdesc.SubmitError as e:
        raise DagError(f"{who}: {target}: {e}") from None
    if not procs:
        raise DagError(f"{who}: {target} queues no job")
    rewrites = [_rewrite(result, proc, where, f"{who} ({target.name})", f"{prefix}{node.name}") for proc in procs]
    if any(r != rewrites[0] for r in rewrites[1:]):
        raise DagError(f"{who}: {target} queues jobs with different files; rsub spools one set per node")
    home = rewrites[0].pop("\x00home")
    changed = [(k, v) for k, v in rewrites[0].items() if desc.get(k) != v]
    rewritten = desc.with_commands(changed + list(result.node_attrs))
    node.statement.words[node.file_index] = result.flat.generated(target.name, submitdesc.render(rewritten))
    result.nodes.append(Node(f"{prefix}{node.name}", home, str(target), dag.retries.get(node.name, 0),
                             tuple(sorted(dag.parents.get(node.name, ())))))


def _rewrite(result: Plan, c: dict[str, str], where: Path, who: str, name: str) -> dict[str, str]:
    """The commands of one expanded node job, as they must read in the flat spool."""
    out: dict[str, str] = {}
    iwd = Path(os.path.abspath(where / os.path.expanduser(c.get("initialdir", ".").strip() or ".")))
    out["\x00home"] = str(iwd)
    if "initialdir" in c:
        out["initialdir"] = "."
    exe = c.get("executable", "").strip()
    if exe and c.get("transfer_executable", "true").strip().lower() != "false" and "$" not in exe:
        local = where / os.path.expanduser(exe)
        if not local.is_file():
            raise DagError(f"{who}: executable {local} does not exist")
        out["executable"] = result.flat.spool(local, rename=True, who=who)
    inputs = []
    for entry in c.get("transfer_input_files", "").replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        if "://" in entry:
            inputs.append(entry)
            continue
        local = iwd / os.path.expanduser(entry.rstrip("/"))
        if local.exists():
            flat = result.flat.spool(local, rename=False, who=who)
            inputs.append(flat + ("/" if entry.endswith("/") else ""))
        else:
            result.pending.append((who, name, local))
            inputs.append(local.name)
    if "transfer_input_files" in c:
        out["transfer_input_files"] = restore(",".join(inputs))
    for key in ("output", "error", "log"):
        value = c.get(key, "").strip()
        if value and value != os.devnull:
            target = iwd / os.path.expanduser(value)
            result.flat.output(target.name, target.parent, who)
            out[key] = restore(target.name)
    remaps = submitdesc.parse_remaps(c.get("transfer_output_remaps", ""))
    new_remaps = []
    named = [e.strip() for e in c.get("transfer_output_files", "").split(",") if e.strip()]
    for entry in named:
        dest = remaps.pop(entry, None)
        target = iwd / os.path.expanduser(dest if dest else Path(entry).name)
        result.flat.output(target.name, target.parent, who)
        if dest is not None or target.name != Path(entry).name:
            new_remaps.append(f"{entry} = {target.name}")
    if remaps:
        who_remaps = ", ".join(remaps)
        raise DagError(f"{who}: transfer_output_remaps names {who_remaps}, which transfer_output_files does not;"
                       " rsub needs to know every remapped name")
    if "transfer_output_remaps" in c or new_remaps:
        out["transfer_output_remaps"] = restore('"' + "; ".join(new_remaps) + '"') if new_remaps else '""'
    if not named:
        result.undeclared.setdefault(iwd, set()).add(name)
    return out


def _settle_pending(result: Plan) -> None:
    """Inputs that do not exist yet: each must be what some node of the DAG writes, where this node reads it."""
    parents = {n.name: {n.name.rpartition("+")[0] + ("+" if "+" in n.name else "") + p for p in n.parents}
               for n in result.nodes}
    for who, name, local in result.pending:
        seen = next((home for p, (home, _w) in result.flat.outputs.items()
                     if home == local.parent and (p == local.name or _match(local.name, p))), None)
        if seen is not None or result.undeclared.get(local.parent, set()) & _ancestors(name, parents):
            continue
        raise DagError(f"{who}: input file {local} does not exist, and no node of the DAG writes it there")


def _ancestors(name: str, parents: dict[str, set[str]]) -> set[str]:
    found: set[str] = set()
    todo = list(parents.get(name, ()))
    while todo:
        n = todo.pop()
        if n not in found:
            found.add(n)
            todo += parents.get(n, ())
    return found


def _match(name: str, flat_pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, flat_pattern)


__all__ = ["Node", "Plan", "pattern", "plan"]
