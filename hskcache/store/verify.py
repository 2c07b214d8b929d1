"""`hskcache verify`: read and check every chunk of a store; `--repair` makes the
extraction rewrite exactly the bad ones.

Every committed chunk of every array is fetched and checked as the reader
checks it (`StoreData.load_chunk`: present, crc32c, decodes to its size),
and every commit marker holds 1. A chunk that has never been committed is
not damage: an incomplete store legitimately lacks it. Repairing marks the
store incomplete and deletes the commit markers of the damaged chunks (and a
damaged once-per-store array's chunks), so rerunning the store's `hskcache
extract` command resumes it and rewrites those chunks only: the writer skips
committed chunks, and creation writes a missing once-per-store array again.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm.auto import tqdm

from hskcache.store.group import COMMITS, StoreData, chunk_key, committed_chunks, num_chunks, open_arrays, rows_in


@dataclass(frozen=True)
class Damage:
    """One chunk that cannot be read as written."""

    array: str
    chunk: int
    problem: str

    def __str__(self) -> str:
        return f"{self.array} chunk {self.chunk}: {self.problem}"


@dataclass(frozen=True)
class Report:
    url: str
    chunks: int  # chunks of rows in the store
    committed: int  # of them committed (all, in a complete store)
    checked: int  # chunk files read, over every array
    damage: tuple[Damage, ...]


def verify(url: str, threads: int = 1, progress: bool = True) -> Report:
    """Check every committed chunk of the store at `url` (a partial store too)."""
    data = StoreData(url, complete=False)
    shape = data.shape
    statics = [a.name for a in shape.static_arrays()]
    rows = [a.name for a in shape.arrays()]
    present = [name for name in rows if name in data.arrays]
    total = num_chunks(data.commits)
    committed = committed_chunks(data.location)
    expected = range(total) if data.complete else sorted(committed)
    damage = [Damage(COMMITS, c, "missing, in a store marked complete") for c in expected if c not in committed]

    def check(chunk: int) -> list[Damage]:
        found = [Damage(name, chunk, "missing (the array's metadata is gone)") for name in rows if name not in present]
        decoded, problems = data.load_chunk(present + [COMMITS] * (chunk in committed), chunk)
        found += [Damage(name, chunk, problem) for name, problem in problems.items()]
        if COMMITS in decoded and int(decoded[COMMITS][0]) != 1:
            found.append(Damage(COMMITS, chunk, f"holds {int(decoded[COMMITS][0])}, not 1"))
        return found

    static_chunks = [(name, c) for name in statics if name in data.arrays for c in range(num_chunks(data.arrays[name]))]
    checked = len(expected) * (len(present) + 1) + len(static_chunks)
    with tqdm(total=len(expected) + len(static_chunks), unit="chunk", desc="verify", disable=not progress,
              dynamic_ncols=True) as bar, ThreadPoolExecutor(max(1, threads)) as pool:
        for found in pool.map(check, expected):
            damage += found
            bar.update()
        for name, c in static_chunks:
            damage += [Damage(name, c, problem) for problem in data.load_chunk([name], c)[1].values()]
            bar.update()
        damage += [Damage(name, 0, "missing (the array's metadata is gone)") for name in statics
                   if name not in data.arrays]
    return Report(url, total, len(committed), checked, tuple(sorted(damage, key=lambda d: (d.chunk, d.array))))


def repair(report: Report) -> list[int]:
    """Mark the store incomplete, then delete the commit markers of its damaged chunks of
    rows (and the damaged chunks of once-per-store arrays); returns those chunks of rows."""
    data = StoreData(report.url, complete=False)
    statics = {a.name for a in data.shape.static_arrays()}
    markers = sorted({d.chunk for d in report.damage if d.array not in statics})
    group = open_arrays(data.location, read_only=False)[0]
    group.attrs.update({"complete": False})  # first: no reader trusts the store from here on
    data.location.delete([chunk_key(data.commits, COMMITS, c) for c in markers])
    data.location.delete([chunk_key(data.arrays[d.array], d.array, d.chunk) for d in report.damage
                          if d.array in statics and d.array in data.arrays])
    left = committed_chunks(data.location)
    rows = rows_in(left, data.chunk_rows, data.num_examples)
    group.attrs.update({"rows_committed": rows})
    return markers
