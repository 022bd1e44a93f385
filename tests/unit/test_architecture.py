"""The layout holds: every module imports, imports point the allowed ways, no circle, no module too long.

The rules are docs/architecture.md's. Imports are read from the source (every `import`
and `from ... import`, at any depth, TYPE_CHECKING blocks included), so a circle that
only type checking closes counts too.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"rsubd": ROOT / "daemon" / "rsubd", "rsub": ROOT / "client" / "rsub"}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for name, base in PACKAGES.items():
        for path in sorted(base.rglob("*.py")):
            parts = [name, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(module: str, path: Path) -> set[str]:
    """The project modules `module` imports (a `from pkg import name` counts pkg.name when that is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


GRAPH = {m: imports_of(m, p) for m, p in MODULES.items()}


def within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# (importer, imported, why): no module under the first may import one under the second.
FORBIDDEN = [
    ("rsub.wire", "rsub", "the wire package imports nothing else of the project"),
    ("rsub.wire", "rsubd", "the wire package imports nothing else of the project"),
    ("rsub", "rsubd", "the client never imports the daemon"),
    ("rsubd.transport", "rsubd.handlers", "transport knows rsub.wire and one handler callable"),
    ("rsubd.transport", "rsubd.services", "transport knows rsub.wire and one handler callable"),
    ("rsubd.services", "rsubd.handlers", "services are the domain: no socket, no wire"),
    ("rsubd.services", "rsubd.transport", "services are the domain: no socket, no wire"),
    ("rsubd.services", "rsubd.app", "services are the domain: no socket, no wire"),
    ("rsubd.handlers", "rsubd.app", "handlers get the services they use, not the app"),
    ("rsubd.handlers", "rsubd.transport", "handlers answer messages; the transport carries them"),
    ("rsubd.backends", "rsubd.services", "backends know the schedd, not the domain"),
    ("rsubd.backends", "rsubd.ledger", "backends know the schedd, not the ledger"),
    ("rsubd.backends", "rsubd.polling", "backends know the schedd, not the domain"),
    ("rsubd.backends", "rsubd.handlers", "backends know the schedd, not the domain"),
    ("rsubd.backends", "rsubd.app", "backends know the schedd, not the domain"),
    ("rsubd.backends.condor", "rsubd.backends.local", "the real backend never leans on the embedded one"),
    ("rsubd.ledger", "rsubd.services", "the ledger stores; it does not decide"),
    ("rsubd.ledger", "rsubd.polling", "the ledger stores; it does not decide"),
    ("rsubd.submitdesc", "rsubd.services", "the submit language stands alone"),
    ("rsubd.submitdesc", "rsubd.backends", "the submit language stands alone"),
    ("rsubd.platform", "rsubd.services", "platform glue stands below the domain"),
]
# Backends are built by the app, through the one registry; the embedded scheduler's own modules
# and the wrappers around a backend use each other freely.
CONSTRUCTORS = ("rsubd.backends.local.scheduler", "rsubd.backends.condor")
MAY_CONSTRUCT = ("rsubd.app", "rsubd.backends")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_imports_point_the_allowed_ways() -> None:
    broken = []
    for module, imported in GRAPH.items():
        for target in imported:
            for importer_prefix, imported_prefix, why in FORBIDDEN:
                inside_wire = within(module, "rsub.wire") and within(target, "rsub.wire")
                if within(module, importer_prefix) and within(target, imported_prefix) and not inside_wire:
                    broken.append(f"{module} imports {target}: {why}")
            if within(target, *CONSTRUCTORS) and not within(module, *MAY_CONSTRUCT):
                broken.append(f"{module} imports {target}: only the app (through the registry) builds backends")
            if within(module, "rsubd") and within(target, "rsub") and not within(target, "rsub.wire"):
                broken.append(f"{module} imports {target}: rsubd imports only rsub.wire of the client")
    assert broken == []


def _cycles() -> Iterator[list[str]]:
    """Each strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = [0]

    def visit(v: str) -> Iterator[list[str]]:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                yield from visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                yield sorted(group)

    for v in sorted(GRAPH):
        if v not in index:
            yield from visit(v)


def test_no_import_circle() -> None:
    # A package's __init__ re-exporting its own modules is not a circle of design.
    circles = [c for c in _cycles() if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert circles == []


def test_no_module_is_too_long() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def test_the_graph_is_read() -> None:
    # The rules above mean something only if imports are seen: the app wires everything.
    assert {"rsubd.config", "rsub.wire.protocol"} <= GRAPH["rsubd.app"] | set().union(
        *(GRAPH[m] for m in GRAPH if m.startswith("rsubd.")))
    assert len(MODULES) > 40 and sum(len(v) for v in GRAPH.values()) > 80
