"""Which stored teacher layers serve a student of any depth: its layer map g(l, L_top) read from a store.

A store holds the teacher layers it was extracted for (`teacher_layers`: one per student layer
0..L', e.g. every teacher layer with `--teacher-layers 0,1,...,N`), the HSK's pairs among them
the top N^D (`stored`). L_top is the top one (`--ltop` of `--student-layers`, the last of
`--teacher-layers`). A student of the store's own depth L' reads the store's pairs as they were
extracted; a student of another depth L'' reads its own map g(l, L_top), l = 0..L''
(`selection.hsk.layer_map`). Either way a read of n pairs is the top n pairs of the student's
map (its layers L'' - n + 1 .. L''), each of which the store must hold; by default n =
min(N^D, L'' + 1): the store's N^D counts pairs of any student's map. Each stored pair keeps its
own token positions (ranked when it was extracted), so a subset of pairs is a subset of rows. A
student deeper than L_top maps several of its layers to one teacher layer: its read repeats that pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from hskcache.selection.hsk import layer_map


@dataclass(frozen=True)
class StoreLayers:
    """The teacher layers a store was extracted for and those its HSK holds: what serves which student."""

    teacher_layers: tuple[int, ...]  # teacher layer of each student layer 0..L' of the extraction
    stored: tuple[int, ...]  # the HSK's pairs: the top N^D of teacher_layers

    @property
    def own_depth(self) -> int:
        """L': the student depth the store was extracted for."""
        return len(self.teacher_layers) - 1

    @property
    def top(self) -> int:
        """L_top: the top stored teacher layer, the top of every student's map."""
        return self.teacher_layers[-1]

    def student_map(self, depth: int) -> tuple[int, ...]:
        """Teacher layer of each student layer 0..L'' of a student of `depth` layers: the store's own at its
        own depth, else g(l, L_top)."""
        return self.teacher_layers if depth == self.own_depth else tuple(layer_map(depth, self.top))

    def default_pairs(self, depth: int) -> int:
        """N^D of a read that asks for the stored depth: the store's N^D, at most the student's L'' + 1 pairs."""
        return min(len(self.stored), depth + 1)

    def most_pairs(self, depth: int) -> int:
        """The most pairs a student of `depth` layers reads: how many top pairs of its map are stored (at the
        store's own depth, its pairs as extracted)."""
        if depth == self.own_depth:
            return len(self.stored)
        wanted, held, n = self.student_map(depth), set(self.stored), 0
        while n < len(wanted) and wanted[-1 - n] in held:
            n += 1
        return n

    def pair_rows(self, depth: int, pairs: int) -> tuple[int, ...]:
        """Indices into `stored` of the top `pairs` pairs of the map of a student of `depth` layers, in
        student-layer order (at most `most_pairs`; above L_top a map repeats teacher layers, so may the rows)."""
        if not 1 <= pairs <= self.most_pairs(depth):
            raise ValueError(f"{pairs} pairs of a {depth}-layer student's map are not stored")
        if depth == self.own_depth:  # as extracted, by place: its map may repeat a teacher layer (L_top < L',
            return tuple(range(len(self.stored) - pairs, len(self.stored)))  # each pair ranked by its own layer)
        index = {layer: i for i, layer in enumerate(self.stored)}
        return tuple(index[layer] for layer in self.student_map(depth)[-pairs:])

    def serves(self, depth: int) -> bool:
        """Whether the HSK serves a student of `depth` layers at its N^D (`default_pairs`)."""
        return depth >= 1 and self.most_pairs(depth) >= self.default_pairs(depth)

    @property
    def deepest(self) -> int:
        """A depth from which every deeper student is served as it is: above L_top, g(l, L_top) steps by at most 1,
        so the top N^D pairs of a map only close in on L_top (and are all L_top once L'' > 2 (N^D - 1) L_top); a
        relation's coverage is settled above 2 L_top (`pairs`: student layer 1 then maps to teacher layer 0,
        which has no attention; `last` fits any deeper student)."""
        return 2 * self.top * len(self.stored) + 1

    def served_depths(self, covers: Callable[[int], bool]) -> tuple[int, ...]:
        """The student depths 1..`deepest` that `covers` admits (every stored kind's coverage: whether it serves
        a student of that depth at its default read, `kinds.Student.served`)."""
        return tuple(d for d in range(1, self.deepest + 1) if covers(d))

    def describe(self, covers: Callable[[int], bool]) -> str:
        """The student depths served (`served_depths`), in one phrase (`hskcache inspect`, the refusals): those
        up to the run of served depths that reaches `deepest`, and 'and deeper'."""
        depths = self.served_depths(covers)
        if self.deepest not in depths:
            return f"serves student depths {spans(depths)} (L_top {self.top})"
        start = self.deepest
        while start - 1 in depths and start - 1 >= self.top:
            start -= 1
        return f"serves student depths {spans([d for d in depths if d <= start])} and deeper (L_top {self.top})"

    def fix(self, depth: int) -> str:
        """The extract flag that serves a student of `depth` layers."""
        every = ",".join(map(str, range(self.top + 1)))
        return (f"extract with --student-layers {depth} --ltop {self.top}, or with --teacher-layers {every} "
                "(every layer to L_top: any depth)")


def spans(values: Sequence[int]) -> str:
    """1,2,3,6 -> '1-3, 6'."""
    out: list[str] = []
    for v in values:
        if out and int(out[-1].split("-")[-1]) == v - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out) or "none"


def as_cut(rows: Sequence[int]) -> slice | tuple[int, ...]:
    """Stored rows as an axis cut: a slice when they are evenly spaced and ascending (a view, no copy),
    else the indices themselves."""
    rows = tuple(rows)
    step = rows[1] - rows[0] if len(rows) > 1 else 1
    if step >= 1 and all(b - a == step for a, b in zip(rows, rows[1:])):
        return slice(rows[0], rows[-1] + 1, step)
    return rows
