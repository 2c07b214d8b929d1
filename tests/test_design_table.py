"""docs/design.md's module table ("Modules and what each owns") matches the code.

Every row's "depends on" column lists exactly the project modules that the row's module (or package, for
a row such as `hskcache/kinds/`) imports, read with `ast` as `test_architecture.py` reads them
(function-level imports count, `if TYPE_CHECKING:` blocks do not); every third-party name it lists is a
library that the module imports. Every module has a row, and every row names a module that exists.

Spelling: project modules are dotted names relative to the row's package (`storage.layout` in an
`hskcache` row), the other package's in full (`hskcache.kinds` in a `students` row); third-party libraries
by distribution name (`google-crc32c`); a note in parentheses after a name is not read; `–` is none.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

from import_graph import PACKAGES, REPO, module_name, modules, named

DESIGN = REPO / "docs" / "design.md"
SECTION = "## Modules and what each owns"


@dataclass(frozen=True)
class Row:
    path: str  # `hskcache/store/reader.py`, or a package's folder: `hskcache/kinds/`
    depends: tuple[str, ...]  # the names in its "depends on" column, notes dropped

    @property
    def package(self) -> str:
        return self.path.partition("/")[0]


def _names(cell: str) -> tuple[str, ...]:
    """`a, b (a note, with commas), c` -> (a, b, c); `–` -> ()."""
    depth, flat = 0, []
    for ch in cell:  # drop parenthesized notes (they may hold commas)
        depth += ch == "("
        if not depth:
            flat.append(ch)
        depth -= ch == ")" and depth > 0
    names = (n.strip().strip("`").strip() for n in "".join(flat).split(","))
    return tuple(n for n in names if n and n not in {"–", "-"})


def table_rows(text: str) -> list[Row]:
    """The module rows of the design's table (floor headings, in bold, are not rows)."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            rows.append(Row(cells[0].strip("`"), _names(cells[2])))
    return rows


def covered(row: Row, found: dict[str, Path]) -> set[str]:
    """The modules a row speaks for: its module, or every module under its package's folder."""
    target = REPO / row.path
    if row.path.endswith("/"):
        return {name for name, path in found.items() if target in path.parents}
    return {module_name(target)} if target.is_file() else set()


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def mismatches(rows: list[Row], found: dict[str, Path]) -> list[str]:
    """Every way the rows disagree with the modules' imports, one line each."""
    known = set(found)
    providers = packages_distributions()
    problems = []
    seen: dict[str, str] = {}
    for row in rows:
        own = covered(row, found)
        if not own:
            problems.append(f"{row.path}: no such module or package")
            continue
        for name in own & set(seen):
            problems.append(f"{name}: two rows, {seen[name]} and {row.path}")
        seen |= dict.fromkeys(own, row.path)
        project: set[str] = set()
        third: set[str] = set()
        for name in own:
            p, t = named(name, found[name], known)
            project |= p - own
            third |= t
        libraries = {_normalize(d) for top in third for d in providers.get(top, [])} | {_normalize(t) for t in third}
        listed: set[str] = set()
        for dep in row.depends:
            full = dep if dep.partition(".")[0] in PACKAGES else f"{row.package}.{dep}"
            if full in known:
                listed.add(full)
            elif _normalize(dep) not in libraries:
                problems.append(f"{row.path}: lists {dep}, neither a module of the project nor a library it imports")
        if missing := sorted(n.removeprefix(f"{row.package}.") for n in project - listed):
            problems.append(f"{row.path}: imports {', '.join(missing)} but does not list it")
        if extra := sorted(n.removeprefix(f"{row.package}.") for n in listed - project):
            problems.append(f"{row.path}: lists {', '.join(extra)} but does not import it")
    for name, path in sorted(found.items()):
        if name not in seen and not (path.name == "__init__.py" and not any(named(name, path, known))):
            problems.append(f"{name}: no row")  # a floor's __init__ that imports nothing is named by its heading
    return problems


def test_the_design_table_matches_the_imports():
    rows = table_rows(DESIGN.read_text())
    assert len(rows) > 40
    problems = mismatches(rows, modules())
    assert not problems, "docs/design.md's module table: " + "; ".join(problems)


def test_a_wrong_row_is_seen():
    found = modules()
    rows = table_rows(DESIGN.read_text())
    reader = next(r for r in rows if r.path == "hskcache/store/reader.py")
    wrong = Row(reader.path, tuple(d for d in reader.depends if d != "store.group") + ("teacher.extract", "zarr"))
    problems = mismatches([r if r is not reader else wrong for r in rows], found)
    assert "hskcache/store/reader.py: imports store.group but does not list it" in problems
    assert "hskcache/store/reader.py: lists teacher.extract but does not import it" in problems
    assert any("lists zarr" in p for p in problems)
    assert "hskcache/nowhere.py: no such module or package" in mismatches([*rows, Row("hskcache/nowhere.py", ())], found)
    assert "hskcache.store.reader: no row" in mismatches([r for r in rows if r is not reader], found)


def test_the_cell_parser_drops_notes():
    assert _names("a, b (a note, with commas), `c`") == ("a", "b", "c")
    assert _names("–") == ()
