"""Every dualpar module imports, and dualpar's import graph has no cycles.

The graph is built with `ast` from the source tree. Its nodes are components: a subpackage (`dualpar.av`,
`dualpar.metrics`, ...) is one node, a top-level module (`dualpar.job`) another; a cycle between two
packages is a layering fault even when no single pair of modules imports each other.

- Module-level imports (what runs when a module is imported; `if TYPE_CHECKING:` blocks excluded): no cycle
  at all.
- All imports, function-level ones included: no cycle through the named layers that once had one
  (`job` <-> `av`, `metrics` <-> `toyworld`). The launcher/API layer still imports lazily in both directions
  (`dualpar.render` -> `api` -> `launch` -> `report` -> `dualpar.__version__`), which is left as it is.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import dualpar

ROOT = Path(dualpar.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


MODULES = _modules()


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _import_nodes(tree: ast.Module, module_level: bool) -> list[ast.AST]:
    if not module_level:
        return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    found: list[ast.AST] = []
    todo = list(tree.body)
    while todo:  # statements that run at import time: the body, and if/try/with blocks in it
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If | ast.Try | ast.With) and not _is_type_checking(node):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)
    return found


def _imported(name: str, path: Path, module_level: bool) -> set[str]:
    """dualpar modules `name` imports (the longest existing module prefix of every imported name)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    if not module_level:  # TYPE_CHECKING blocks never run
        for node in ast.walk(tree):
            if _is_type_checking(node):
                node.body = []
    targets: set[str] = set()
    for node in _import_nodes(tree, module_level):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        targets.add(base)
        targets.update(f"{base}.{a.name}" for a in node.names)
    found = set()
    for target in targets:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def _component(module: str) -> str:
    return ".".join(module.split(".")[:2])


def component_graph(module_level: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges = graph.setdefault(_component(name), set())
        edges.update(_component(t) for t in _imported(name, path, module_level) if _component(t) != _component(name))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_cycle_among_module_level_imports():
    assert cycles(component_graph(module_level=True)) == []


@pytest.mark.parametrize("pair", [("dualpar.job", "dualpar.av"), ("dualpar.metrics", "dualpar.toyworld")])
def test_no_cycle_through_once_cyclic_layers_counting_lazy_imports(pair):
    graph = component_graph(module_level=False)
    for component in cycles(graph):
        assert not set(pair) <= set(component), f"{pair} in an import cycle: {component}"


def test_the_cycle_search_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
