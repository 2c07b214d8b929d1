"""Relation knowledge (MiniLM), shared by the relation kinds (`att`, `val`): per head, a
distribution over keys for each stored query row, kept as its top-k keys plus the rest mass
(`hskcache.selection.attention`). The kinds share their query rows (`rel_positions`) and one `RelationSpec`.

Relation arrays (first axis: examples), for N_A layers, H heads, R rows, k keys:

| array | row shape | dtype |
|---|---|---|
| `rel_positions` | (N_A, R) | int16, -1 empty (query rows, shared by the kinds) |
| `<kind>_keys` | (N_A, H, R, k) | uint8 (int16 when max length > 255), empty = 255 (-1) |
| `<kind>_probs` | (N_A, H, R, k) | float16, descending |
| `<kind>_rest` | (N_A, H, R) | float16, mass of the other real keys |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from hskcache.selection.attention import UINT8_EMPTY, RelationSpec, shrink
from hskcache.errors import UserError
from hskcache.storage.layout import ArraySpec, narrow
from hskcache.options import Settings, setting
from hskcache.selection.hsk import rank_layers, rank_positions
from hskcache.selection.layers import as_cut
from hskcache.kinds.base import Cut, Kind, Read, Student, TeacherForward, TeacherInfo

if TYPE_CHECKING:
    from hskcache.store.shape import StoreShape
    from hskcache.storage.packed import PackedBatch

def parse_read(text: str | tuple) -> tuple[int | None, int | None]:
    """`--att-read R,K` (query rows, keys per row) or `stored`."""
    if isinstance(text, tuple):
        return text
    if text == "stored":
        return None, None
    try:
        rows, keys = (int(x) for x in str(text).split(","))
    except ValueError:
        raise UserError(f"--att-read {text!r} is not ROWS,KEYS (e.g. 9,16) or 'stored'") from None
    if rows < 1 or keys < 1:
        raise UserError(f"--att-read {text}: rows and keys must be at least 1")
    return rows, keys


@dataclass(frozen=True)
class RelationSettings(Settings):
    """The extraction parameters every relation kind shares (one flag each, for all of them)."""

    att_layers: str = setting("last", "relation layers (every relation kind): last (MiniLM) | pairs (the HSK's "
                              "layer pairs) | i,j (teacher layers)")
    att_rows: int | None = setting(None, "query rows per relation layer, ranked like the HSK's tokens "
                                   "(default: --tokens)", at_least=1)
    att_keys: int | None = setting(None, "top keys kept per relation row, plus the rest mass (default: every key)",
                                   at_least=1)


@dataclass(frozen=True)
class RelationRead:
    """The read parameters every relation kind shares: (query rows, keys) at or below the stored."""

    att_read: tuple[int | None, int | None] = setting((None, None), "query rows,keys of the relation read "
                                                      "('stored': as stored)", parse=parse_read,
                                                      show_default="stored")


@dataclass(frozen=True)
class RelationCut:
    """A relation read resolved against a store for a student (`RelationKind.resolve_read`)."""

    rows: int  # query rows per layer
    keys: int  # keys per row
    layers: slice | tuple[int, ...]  # the stored relation layers it reads (an axis cut)


class RelationKind(Kind):
    """Relation knowledge (MiniLM): per head, a distribution over keys for each stored query row,
    kept as its top-k keys plus the rest mass (`hskcache.selection.attention`). A kind names how its
    rows come out of a teacher forward (`teacher_rows`); its student side is
    `students.kinds.relations`."""

    groups = ("relations",)
    listed = opt_in = True
    settings = RelationSettings
    read_settings = RelationRead
    record = RelationSpec

    def __init__(self, name: str, order: int, teacher_captures: tuple[str, ...],
                 teacher_rows: Callable[..., dict[str, Tensor]], needs_attentions: bool = False) -> None:
        self.name, self.order, self.teacher_captures = name, order, teacher_captures
        self.needs_attentions = needs_attentions
        self.teacher_rows = teacher_rows  # (plan, out, projections, heads, positions, mask) -> keys/probs/rest;
        # projections: each relation layer's captured `teacher_captures[0]` (val's values), {} without captures

    def arrays_of(self, spec: RelationSpec) -> list[ArraySpec]:
        n_a, grid = len(spec.layers), (len(spec.layers), spec.heads, spec.rows)
        fp16 = "blosc-lz4-bitshuffle"  # as the HSK's fp16 values: smaller and faster to decode than zstd here
        # disk ratios measured on a movie-review store with `--knowledge hsk,att,val --att-layers last
        # --att-rows 16 --att-keys 16` (12 heads): the lower of att's and val's
        return [ArraySpec("rel_positions", (n_a, spec.rows), np.dtype(np.int16), "relations", disk_ratio=2.43),
                ArraySpec(f"{self.name}_keys", (*grid, spec.keys), spec.key_dtype, "relations", disk_ratio=1.66),
                ArraySpec(f"{self.name}_probs", (*grid, spec.keys), np.dtype(np.float16), "relations", fp16,
                          disk_ratio=1.29),
                ArraySpec(f"{self.name}_rest", grid, np.dtype(np.float16), "relations", fp16, disk_ratio=1.38)]

    def resolve(self, settings: RelationSettings, teacher: TeacherInfo) -> RelationSpec:
        """The layers, rows and keys a store of this teacher holds (rows default to the HSK's tokens)."""
        layers, student_layers = resolve_att_layers(settings.att_layers, teacher.teacher_layers, teacher.num_layers)
        rows = settings.att_rows or teacher.tokens
        keys = teacher.seq_len if settings.att_keys is None else min(settings.att_keys, teacher.seq_len)
        rank = rank_layers(teacher.token_strategy, len(teacher.teacher_layers) - 1, teacher.num_layers,
                           student_layers, layers)
        return RelationSpec(layers, student_layers, rank, teacher.heads, min(rows, teacher.seq_len), keys,
                            teacher.seq_len, teacher.token_strategy)

    def resolve_read(self, spec: RelationSpec, read: RelationRead, where: str, shape: StoreShape,
                     static: Mapping[str, np.ndarray], student: Student) -> RelationCut:
        """(rows, keys) of a read, None as stored, and the stored layers that serve the student
        (`student_pairs`); more than the store holds is refused."""
        rows, keys = read.att_read
        rows = spec.rows if rows is None else rows
        keys = spec.keys if keys is None else keys
        if not 1 <= rows <= spec.rows or not 1 <= keys <= spec.keys:
            raise UserError(f"--att-read {rows},{keys} is more than the store holds ({spec.rows} rows, "
                            f"{spec.keys} keys; {where}); read at or below it")
        return RelationCut(rows, keys, as_cut(self.student_pairs(spec, student, where)[0]))

    def covers(self, spec: RelationSpec, student: Student) -> bool:
        """The stored relation layers serve the student (`student_pairs`)."""
        return self._match(spec, student) is not None

    def student_pairs(self, spec: RelationSpec, student: Student, where: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(stored relation layers, the student layer matched to each) for a student of `student.depth` layers:
        at the store's own depth as extracted; else `--att-layers pairs` reads the layers of the student's map
        g(l, L_top), l = 1..L'' (all of them stored), and `last` or explicit layers match the stored layers to
        the student's top layers in order (MiniLM: the last to the last), so they serve any depth at least
        their count. What the stored layers cannot serve is refused in one line."""
        matched = self._match(spec, student)
        if matched is not None:
            return matched
        layers, depth = student.layers, student.depth
        mode = student.settings[self.name].att_layers
        if mode == "pairs":
            raise UserError(f"a {depth}-layer student matches its layers 1..{depth} to teacher layers "
                            f"{','.join(map(str, layers.student_map(depth)[1:]))} (--att-layers pairs: its map "
                            f"g(l, {layers.top})), and the store's {self.name} holds teacher layers "
                            f"{','.join(map(str, spec.layers))} ({where}); it {student.served()}; {layers.fix(depth)}")
        raise UserError(f"the store's {self.name} holds {len(spec.layers)} relation layers (--att-layers {mode}), "
                        f"matched to a student's top layers, more than a {depth}-layer student has ({where}); "
                        f"train a student of at least {len(spec.layers)} layers, or extract with --att-layers last")

    def _match(self, spec: RelationSpec, student: Student) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """`student_pairs`, None where the stored layers do not serve the student."""
        layers, depth = student.layers, student.depth
        if depth == layers.own_depth:
            return tuple(range(len(spec.layers))), spec.student_layers
        if student.settings[self.name].att_layers == "pairs":
            index = {layer: j for j, layer in enumerate(spec.layers)}
            wanted = layers.student_map(depth)[1:]
            if not all(layer in index for layer in wanted):
                return None
            return tuple(index[layer] for layer in wanted), tuple(range(1, depth + 1))
        if len(spec.layers) > depth:
            return None
        return tuple(range(len(spec.layers))), tuple(range(depth - len(spec.layers) + 1, depth + 1))

    def describe(self, spec: RelationSpec) -> str:
        return (f"teacher layers {','.join(map(str, spec.layers))} (student {','.join(map(str, spec.student_layers))})"
                f" × {spec.heads} heads × {spec.rows} rows × {spec.keys} keys + rest")

    def capture_layers(self, shape: StoreShape) -> tuple[int, ...]:
        spec = shape.kinds.get(self.name)
        return spec.layers if spec is not None and self.teacher_captures else ()

    def arrays(self, shape: StoreShape) -> list[ArraySpec]:
        spec = shape.kinds.get(self.name)
        return self.arrays_of(spec) if spec is not None else []

    def encode(self, forward: TeacherForward) -> dict[str, np.ndarray]:
        """Rows ranked like the HSK's tokens (computed once for every relation kind of the batch)."""
        spec, out, mask = forward.shape.kinds[self.name], forward.out, forward.masks["attention_mask"]
        plan = spec.plan
        if "rel_positions" not in forward.cache:
            forward.cache["rel_positions"] = rank_positions(plan.token_strategy, plan.rank_layers, plan.rows,
                                                            out.attentions, mask, forward.masks["sep_mask"])
        positions = forward.cache["rel_positions"]
        own = {l: forward.captured[l][self.teacher_captures[0]] for l in spec.layers} if self.teacher_captures else {}
        sel = self.teacher_rows(plan, out, own, spec.heads, positions, mask)
        keys = sel["keys"]
        if spec.key_dtype == np.uint8:  # positions < 255 by the dtype's choice; 255 marks an empty slot
            keys = keys.masked_fill(keys < 0, UINT8_EMPTY)
        return {"rel_positions": narrow(positions.cpu().numpy(), np.int16, "query position"),
                f"{self.name}_keys": narrow(keys.cpu().numpy(), spec.key_dtype, "key position"),
                f"{self.name}_probs": sel["probs"].to(torch.float16).cpu().numpy(),
                f"{self.name}_rest": sel["rest"].to(torch.float16).cpu().numpy()}

    def cuts(self, shape: StoreShape, read: Read) -> dict[str, Cut]:
        """The stored layers that serve the student and their first `rows` query rows (keys are cut when decoded)."""
        own: RelationCut = read.kinds[self.name]
        layers = own.layers if isinstance(own.layers, slice) else list(own.layers)
        rows = slice(None, own.rows)
        return {a.name: (slice(None), layers, rows) if a.name == "rel_positions"
                else (slice(None), layers, slice(None), rows) for a in self.arrays(shape)}

    def pack(self, shape: StoreShape, rows: dict[str, np.ndarray], names: Sequence[str],
             read: Read) -> dict[str, Tensor]:
        """Decoded at the read's keys (exactly: the rest gains the dropped probabilities): keys
        int64 with -1 empty, float32 probabilities and rest."""
        return self.decode(shape.kinds[self.name], super().pack(shape, rows, names, read), None,
                           read.kinds[self.name].keys)

    def decode(self, spec: RelationSpec, tensors: dict[str, Tensor], rows: int | None,
               keys: int) -> dict[str, Tensor]:
        """Stored arrays (any leading batch axis) -> batch entries at (rows, keys) at or below the stored."""
        k = tensors[f"{self.name}_keys"].long()
        if spec.key_dtype == np.uint8:
            k = k.masked_fill(k == UINT8_EMPTY, -1)
        k, p, r = shrink(k, tensors[f"{self.name}_probs"].float(), tensors[f"{self.name}_rest"].float(), rows, keys)
        return {"rel_positions": tensors["rel_positions"][..., :rows].long(),
                f"{self.name}_keys": k, f"{self.name}_probs": p, f"{self.name}_rest": r}

    def expand(self, tensors: dict[str, Tensor], batch: PackedBatch) -> dict[str, Tensor]:
        return {name: tensors[name] for name in ("rel_positions", *(f"{self.name}_{part}"
                                                                     for part in ("keys", "probs", "rest")))}

def resolve_att_layers(spec: str, teacher_layers: Sequence[int], num_layers: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`--att-layers` -> (teacher attention layers, the student layer matched to each).

    `last`: the teacher's last layer to the student's last (MiniLM); `pairs`: the
    HSK's layer pairs without the embeddings (TinyBERT); `i,j`: those teacher
    layers, matched to the top student layers in order."""
    student = len(teacher_layers) - 1
    if spec == "last":
        return (num_layers,), (student,)
    if spec == "pairs":
        return tuple(teacher_layers[1:]), tuple(range(1, student + 1))
    try:
        layers = tuple(int(x) for x in spec.split(","))
    except ValueError:
        raise UserError(f"--att-layers {spec!r} is not last, pairs or a comma list of teacher layers") from None
    if not layers or any(not 1 <= l <= num_layers for l in layers) or len(layers) > student:
        raise UserError(f"--att-layers {spec}: give 1..{student} teacher layers in 1..{num_layers}")
    return layers, tuple(range(student - len(layers) + 1, student + 1))
