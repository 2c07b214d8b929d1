"""The import graph of the two packages, read with `ast` (nothing is imported to read it).

Shared by `test_architecture.py` (no cycle, no upward import) and `test_design_table.py` (docs/design.md's
"depends on" column). Every `import` statement counts, at module level or inside a function; only
`if TYPE_CHECKING:` blocks are left out, as they never run.
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import hskcache

REPO = Path(hskcache.__file__).parent.parent
PACKAGES = ("hskcache", "students")


def module_name(path: Path) -> str:
    """`hskcache/kinds/__init__.py` -> `hskcache.kinds`, `students/cli.py` -> `students.cli`."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(*packages: str) -> dict[str, Path]:
    """{dotted name: path} of every module of the packages (both by default)."""
    return {module_name(p): p for package in packages or PACKAGES for p in (REPO / package).rglob("*.py")}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import node outside `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            yield from (n for child in node.orelse for n in _imports_in(child))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def _targets(name: str, path: Path) -> Iterator[tuple[str, list[str]]]:
    """(dotted base, [its imported names]) per import statement: `import a.b` -> ("a.b", []),
    `from .x import y` (in package p) -> ("p.x", ["y"])."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)
            continue
        base = node.module
        if node.level:
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.module else base
        yield base, [alias.name for alias in node.names]


def _nearest(target: str, known: set[str]) -> str | None:
    """The longest prefix of `target` that is a known module (`a.b.f` -> `a.b`), or None."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that importing module `name` runs directly: each module an import names and
    the packages above it (a module runs its parent packages first); `hskcache.kinds` and
    `students.kinds` import each of their modules themselves (pkgutil), so those edges count too."""
    out: set[str] = set()
    for base, names in _targets(name, path):
        for target in [base, *(f"{base}.{n}" for n in names if f"{base}.{n}" in known)]:
            while target:  # its own package's parents are already running
                if target in known and target != name and not name.startswith(f"{target}."):
                    out.add(target)
                target = target.rpartition(".")[0]
    if name.endswith(".kinds"):
        out |= {m for m in known if m.startswith(f"{name}.")}
    return out


def named(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(project modules, third-party top-level modules) that module `name`'s imports name: `from a.b import c`
    names module `a.b.c` if it is one, else `a.b`; parent packages run on the way are not named, nor is the
    standard library."""
    project: set[str] = set()
    third: set[str] = set()
    for base, names in _targets(name, path):
        top = base.partition(".")[0]
        if top in PACKAGES:
            found = {_nearest(f"{base}.{n}", known) for n in names} or {_nearest(base, known)}
            project |= {m for m in found if m and m != name}
        elif top != "__future__" and top not in sys.stdlib_module_names:
            third.add(top)
    return project, third
