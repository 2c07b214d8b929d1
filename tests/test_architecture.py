"""The import graph of the `hskcache` package has no cycle.

Every `import` statement counts, at module level or inside a function (a function-level import
must not hide a cycle); only `if TYPE_CHECKING:` blocks are left out, as they never run. A module
that imports `a.b.c` also runs the packages `a.b` and `a`, and `hskcache.kinds` imports every
module of its package (its kinds register themselves), so those edges count too."""
from __future__ import annotations

import ast
from pathlib import Path

import hskcache

ROOT = Path(hskcache.__file__).parent
PACKAGE = "hskcache"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every import node outside `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            yield from (n for child in node.orelse for n in _imports_in(child))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The `hskcache` modules that importing module `name` runs directly."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
        for target in targets:
            while target:  # a module runs its parent packages first (its own package's: already running)
                if target in known and target != name and not name.startswith(f"{target}."):
                    out.add(target)
                target = target.rpartition(".")[0]
    if name == f"{PACKAGE}.kinds":  # the package imports each of its modules (pkgutil)
        out |= {m for m in known if m.startswith(f"{name}.")}
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_hskcache_has_no_import_cycle():
    found = modules()
    known = set(found)
    graph = {name: imported(name, path, known) - {PACKAGE} for name, path in found.items()}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_layout_is_a_leaf():
    """The store's array rules import no other part of the package but its error type."""
    found = modules()
    assert imported(f"{PACKAGE}.layout", found[f"{PACKAGE}.layout"], set(found)) <= {f"{PACKAGE}.errors", PACKAGE}


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
