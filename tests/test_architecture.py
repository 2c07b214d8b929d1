"""The import graph of the `hskcache` package has no cycle, and neither package imports upward.

Every `import` statement counts, at module level or inside a function (a function-level import
must not hide a cycle); only `if TYPE_CHECKING:` blocks are left out, as they never run. A module
that imports `a.b.c` also runs the packages `a.b` and `a`, and `hskcache.kinds` imports every
module of its package (its kinds register themselves), so those edges count too."""
from __future__ import annotations

from import_graph import imported, modules

PACKAGE = "hskcache"


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
    found = modules(PACKAGE)
    known = set(found)
    graph = {name: imported(name, path, known) - {PACKAGE} for name, path in found.items()}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_layout_is_a_leaf():
    """The store's array rules import no other part of the package but its error type."""
    found = modules(PACKAGE)
    name = f"{PACKAGE}.storage.layout"
    assert imported(name, found[name], set(found)) <= {f"{PACKAGE}.errors", PACKAGE, f"{PACKAGE}.storage"}


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# The floors of each package, lowest first (docs/design.md, "Floors"): a module imports only its own floor
# and the floors below. A top-level module of a package that is not listed is its foundation (floor 0).
FLOORS = {
    "hskcache": ("storage", "selection", "kinds", "store", "teacher", "budget", "cli"),
    "students": ("models", "deploy", "evaluation", "kinds", "training", "build", "cli"),
}
# The one edge across the packages' floors: `hskcache finetune` runs students' training loop (the CLI floor
# sits above both packages; students imports hskcache, never the reverse otherwise).
CROSSING = {("hskcache.cli.main", "students.training"), ("hskcache.cli.main", "students.training.finetune")}


def floor(name: str) -> tuple[int, int]:
    """(package rank, floor rank): hskcache below students; a package's foundation modules at floor 0."""
    package, _, rest = name.partition(".")
    sub = rest.partition(".")[0]
    floors = FLOORS[package]
    return (0 if package == PACKAGE else 1, floors.index(sub) + 1 if sub in floors else 0)


def test_nothing_imports_upward():
    found = modules()
    known = set(found)
    upward = [f"{name} -> {target}" for name, path in found.items()
              # a package's own __init__ re-exports its public API (hskcache.open_store) or registers its
              # Auto classes; `python -m hskcache` is the CLI
              if name not in FLOORS and name != f"{PACKAGE}.__main__"
              for target in imported(name, path, known) - set(FLOORS)
              if floor(target) > floor(name) and (name, target) not in CROSSING]
    assert not upward, "imports to a higher floor: " + "; ".join(sorted(upward))


def test_the_floor_check_sees_an_upward_import():
    assert floor("hskcache.storage.layout") < floor("hskcache.kinds.hsk") < floor("hskcache.cli.main")
    assert floor("hskcache.cli.main") < floor("students.models.etd") < floor("students.cli")
    assert floor("hskcache.errors") == (0, 0) and floor("students.losses") == (1, 0)
