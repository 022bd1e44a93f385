"""jobsub_lite's dagnabbit files: `<serial>`/`<parallel>` blocks of jobsub_submit lines, as a .dag.

    <serial>
    jobsub_submit -f data.txt $SUBMIT_FLAGS file://./jobA.sh arg
    prescript file://./init.sh $JOB init
    postscript file://./check.sh $RETURN $JOB
    </serial>
    <parallel> ... </parallel>

Each jobsub_submit line becomes a node `stage_N` built as `rsub submit file://...` builds a
job (the same options, the same wrapper), in a directory of its own under the DAG's
directory (<state>/jobs/<time>-<name>-<id>/stage_N/, where its output comes home). In a
`<serial>` block each item runs after the one before it; in a `<parallel>` block the items
are independent; blocks nest, and the blocks of the file run one after the other.
`prescript`/`postscript` lines after a job are its PRE and POST scripts. `$NAME` and
`${NAME}` are taken from the environment (unset: empty), except DAGMan's own script
macros ($JOB, $RETURN, $RETRY, ...), which DAGMan fills in.
"""

from __future__ import annotations

import argparse
import getpass
import itertools
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsub import jobsub
from rsub.connection import Failure
from rsub.jobsub.options import add_options, unsupported

DAGMAN_MACROS = frozenset({"JOB", "RETRY", "MAX_RETRIES", "RETURN", "PRE_SCRIPT_RETURN", "DAG_STATUS",
                           "FAILED_COUNT", "FUTILE_COUNT", "DONE_COUNT", "QUEUED_COUNT", "NODE_COUNT", "JOBID",
                           "CLUSTERID", "DAGID", "JOB_COUNT", "SIGNAL"})
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class DagnabbitError(Exception):
    """The dagnabbit file cannot be built; the message names the file and line."""


@dataclass
class Node:
    name: str
    line: int
    words: list[str]
    scripts: list[tuple[str, list[str]]] = field(default_factory=list)


@dataclass
class Block:
    kind: str  # serial or parallel
    items: list[Node | Block] = field(default_factory=list)


def expand(text: str, environ: Mapping[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return m.group(0) if name in DAGMAN_MACROS else environ.get(name, "")
    return _VAR.sub(one, text)


def parse(text: str, where: str, environ: Mapping[str, str]) -> Block:
    top = Block("serial")
    stack = [top]
    last: Node | None = None
    count = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        at = f"{where}, line {lineno}"
        if not line or line.startswith("#"):
            continue
        tag = line.lower()
        if tag in ("<serial>", "<parallel>"):
            block = Block(tag.strip("<>"))
            stack[-1].items.append(block)
            stack.append(block)
            continue
        if tag in ("</serial>", "</parallel>"):
            if len(stack) == 1 or stack[-1].kind != tag.strip("</>"):
                raise DagnabbitError(f"{at}: {line} closes no open <{tag.strip('</>')}>")
            stack.pop()
            continue
        try:
            words = shlex.split(expand(line, environ))
        except ValueError as e:
            raise DagnabbitError(f"{at}: {e}") from None
        if words[0] in ("prescript", "postscript"):
            if last is None or len(words) < 2 or not words[1].startswith("file://"):
                raise DagnabbitError(f"{at}: {words[0]} follows a jobsub_submit line and names file://SCRIPT")
            last.scripts.append(("PRE" if words[0] == "prescript" else "POST", words[1:]))
            continue
        if words[0] not in ("jobsub_submit", "jobsub"):
            raise DagnabbitError(f"{at}: expected <serial>, <parallel>, a jobsub_submit line, prescript or"
                                 f" postscript, not {words[0]!r}")
        if len(stack) == 1:
            raise DagnabbitError(f"{at}: a job must be inside a <serial> or <parallel> block")
        count += 1
        last = Node(f"stage_{count}", lineno, words[1:])
        stack[-1].items.append(last)
    if len(stack) > 1:
        raise DagnabbitError(f"{where}: <{stack[-1].kind}> is never closed")
    if count == 0:
        raise DagnabbitError(f"{where}: no jobsub_submit line: nothing to run")
    return top


def edges(block: Block | Node, out: list[tuple[list[str], list[str]]]) -> tuple[list[str], list[str]]:
    """(entry nodes, exit nodes) of an item; PARENT/CHILD pairs go to `out`."""
    if isinstance(block, Node):
        return [block.name], [block.name]
    ends = [edges(item, out) for item in block.items]
    if not ends:
        return [], []
    if block.kind == "parallel":
        return [n for e, _ in ends for n in e], [n for _, x in ends for n in x]
    for (_, exits), (entries, _) in itertools.pairwise(ends):
        if exits and entries:
            out.append((exits, entries))
    firsts = next((e for e, _ in ends if e), [])
    lasts = next((x for _, x in reversed(ends) if x), [])
    return firsts, lasts


def nodes_of(block: Block | Node) -> list[Node]:
    return [block] if isinstance(block, Node) else [n for item in block.items for n in nodes_of(item)]


def line_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobsub_submit", add_help=False, exit_on_error=False)
    add_options(parser)
    unsupported(parser)
    parser.add_argument("-G", "--group")  # the DAG's own -G applies; a line's is accepted as jobsub_lite does
    parser.add_argument("--role")
    parser.add_argument("target", nargs=argparse.REMAINDER)
    return parser


def build_dag(path: Path, *, cwd: str, environ: Mapping[str, str], config: Any) -> Path:
    """Write the DAG's directory: one jobsub-style job per line, and the .dag; return the .dag's path."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DagnabbitError(f"cannot read dagnabbit file {path}: {getattr(e, 'strerror', None) or e}") from None
    top = parse(text, str(path), environ)
    directory = jobsub.submit_dir(path.stem)
    pairs: list[tuple[list[str], list[str]]] = []
    edges(top, pairs)
    out = [f"# written by rsub submit --dag for file://{path}"]
    tarballs: dict[Path, Path] = {}
    try:
        jobsub.make_private(directory)
    except jobsub.BuildError as e:
        raise DagnabbitError(str(e)) from None
    try:
        for node in nodes_of(top):
            out += _node(node, directory, path, cwd, environ, config, tarballs)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    out += [f"PARENT {' '.join(p)} CHILD {' '.join(c)}" for p, c in pairs]
    dag = directory / f"{path.stem or 'dag'}.dag"
    dag.write_text("\n".join(out) + "\n", encoding="utf-8")
    return dag


def _node(node: Node, directory: Path, source: Path, cwd: str, environ: Mapping[str, str], config: Any,
          tarballs: dict[Path, Path]) -> list[str]:
    at = f"{source}, line {node.line}"
    try:
        args, extra = line_parser().parse_known_args(node.words)
    except (argparse.ArgumentError, Failure) as e:
        raise DagnabbitError(f"{at}: {getattr(e, 'message', None) or e}") from None
    target = [*extra, *args.target]
    if not target or not target[0].startswith("file://"):
        raise DagnabbitError(f"{at}: the job's script must be given as file://SCRIPT")
    try:
        plan = jobsub.build(target[0], target[1:], count=args.count, input_files=args.input_files, tars=args.tars,
                            memory=args.memory, disk=args.disk, cpus=args.cpus, lifetime=args.lifetime,
                            environment=args.environment, lines=args.lines, cwd=cwd, environ=environ)
        extras = jobsub.build_extras(
            config, user=getpass.getuser(), group=args.group, mail=args.mail, email_to=args.email_to,
            image=args.image, no_singularity=args.no_singularity, usage_model=args.usage_model, sites=args.sites,
            resources=args.resources, requirements=args.requirements, timeout=args.timeout, log_file=args.log_file,
            gpus=args.gpus, lines=plan.lines)
        here = directory / node.name
        text = jobsub.describe(plan, here, extras)
        # Every node's outputs share the spool directory: each gets names of its own.
        text = text.replace("output = $(Cluster)", f"output = {node.name}.$(Cluster)").replace(
            "error = $(Cluster)", f"error = {node.name}.$(Cluster)").replace(
            "log = $(Cluster).log", f"log = {node.name}.$(Cluster).log")
        jobsub.materialize(plan, here, text)
    except jobsub.BuildError as e:
        raise DagnabbitError(f"{at}: {e}") from None
    for tar in plan.tars:
        if tar.from_directory:  # one tarball per directory: the same bytes, spooled once
            made = here / tar.name
            if tar.source in tarballs:
                shutil.copyfile(tarballs[tar.source], made)
            else:
                tarballs[tar.source] = made
    lines = [f"JOB {node.name} {node.name}/{jobsub.SUBMIT_FILE}"]
    for when, (url, *script_args) in node.scripts:
        script = Path(cwd, url.removeprefix("file://")).resolve()
        if not script.is_file():
            raise DagnabbitError(f"{at}: {when.lower()}script {script} does not exist")
        lines.append(" ".join(["SCRIPT", when, node.name, shlex.quote(str(script)), *script_args]))
    return lines
