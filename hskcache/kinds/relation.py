"""Relation knowledge (MiniLM), shared by the relation kinds (`att`, `val`): per head, a
distribution over keys for each stored query row, kept as its top-k keys plus the rest mass
(`hskcache.attention`). The kinds share their query rows (`rel_positions`) and one `RelationSpec`.

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

from ..attention import AttentionPlan, gather_rows, relation, shrink, split_heads
from ..errors import UserError
from ..layout import ArraySpec, narrow
from ..selection import rank_layers, rank_positions
from .base import KINDS, Cut, Kind, Objective, Read, StudentForward, TeacherForward

if TYPE_CHECKING:
    from ..layout import StoreShape
    from ..packed import PackedBatch

UINT8_EMPTY = 255


@dataclass(frozen=True)
class RelationSpec:
    """What a store holds of relation knowledge (`meta.StoreMeta.relations`): shared by its kinds."""

    kinds: tuple[str, ...]  # relation kinds of KINDS, in registry order
    layers: tuple[int, ...]  # teacher attention layers (1-based)
    student_layers: tuple[int, ...]  # the student attention layer matched to each
    rank_layers: tuple[int, ...]  # hidden-state index whose [CLS] attention ranks each layer's rows
    heads: int
    rows: int
    keys: int
    seq_len: int
    token_strategy: str

    @classmethod
    def build(cls, kinds: Sequence[str], att_layers: str, teacher_layers: Sequence[int], num_layers: int,
              heads: int, rows: int, keys: int | None, seq_len: int, token_strategy: str) -> "RelationSpec":
        layers, student_layers = resolve_att_layers(att_layers, teacher_layers, num_layers)
        if rows < 1 or (keys is not None and keys < 1):
            raise UserError("--att-rows and --att-keys must be at least 1")
        keys = seq_len if keys is None else min(keys, seq_len)
        rank = rank_layers(token_strategy, len(teacher_layers) - 1, num_layers, student_layers, layers)
        return cls(relation_kinds(kinds), layers, student_layers, rank, heads, min(rows, seq_len), keys, seq_len,
                   token_strategy)

    @property
    def plan(self) -> AttentionPlan:
        return AttentionPlan(self.layers, self.rank_layers, self.rows, self.keys, self.token_strategy)

    @property
    def key_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.seq_len <= UINT8_EMPTY else np.int16)

    def arrays(self) -> list[ArraySpec]:
        """Every relation array (the query rows once)."""
        specs = {a.name: a for kind in self.kinds for a in KINDS[kind].arrays_of(self)}
        return list(specs.values())

    def row_bytes(self) -> int:
        return sum(a.row_bytes for a in self.arrays())

    def resolve(self, rows: int | None, keys: int | None, where: str) -> tuple[int, int]:
        rows = self.rows if rows is None else rows
        keys = self.keys if keys is None else keys
        if not 1 <= rows <= self.rows or not 1 <= keys <= self.keys:
            raise UserError(f"--att-read {rows},{keys} is more than the store holds ({self.rows} rows, "
                            f"{self.keys} keys; {where}); read at or below it")
        return rows, keys


class RelationKind(Kind):
    """Relation knowledge (MiniLM): per head, a distribution over keys for each stored query row,
    kept as its top-k keys plus the rest mass (`hskcache.attention`). A kind names how its
    rows come out of a teacher forward (`teacher_rows`) and a student forward (`student_rows`)."""

    groups = ("relations",)

    def __init__(self, name: str, order: int, objectives: Mapping[str, Objective], teacher_captures: tuple[str, ...],
                 teacher_rows: Callable[..., dict[str, Tensor]], student_pair: tuple[str, str]) -> None:
        self.name, self.order, self.objectives, self.teacher_captures = name, order, objectives, teacher_captures
        self.teacher_rows = teacher_rows  # (plan, out, values, heads, positions, mask) -> keys/probs/rest
        self.student_pair = student_pair  # softmax(left_q · right_k / √d_h) of these projections
        self.student_captures = tuple(sorted(set(student_pair)))

    def arrays_of(self, spec: RelationSpec) -> list[ArraySpec]:
        n_a, grid = len(spec.layers), (len(spec.layers), spec.heads, spec.rows)
        fp16 = "blosc-lz4-bitshuffle"  # as the HSK's fp16 values: smaller and faster to decode than zstd here
        return [ArraySpec("rel_positions", (n_a, spec.rows), np.dtype(np.int16), "relations"),
                ArraySpec(f"{self.name}_keys", (*grid, spec.keys), spec.key_dtype, "relations",
                          content="relation_keys"),
                ArraySpec(f"{self.name}_probs", (*grid, spec.keys), np.dtype(np.float16), "relations", fp16,
                          content="relation_probs"),
                ArraySpec(f"{self.name}_rest", grid, np.dtype(np.float16), "relations", fp16,
                          content="relation_rest")]

    def arrays(self, shape: StoreShape) -> list[ArraySpec]:
        spec = shape.relations
        return self.arrays_of(spec) if spec is not None and self.name in spec.kinds else []

    def encode(self, forward: TeacherForward) -> dict[str, np.ndarray]:
        """Rows ranked like the HSK's tokens (computed once for every relation kind of the batch)."""
        spec, out, mask = forward.shape.relations, forward.out, forward.masks["attention_mask"]
        plan = spec.plan
        if "rel_positions" not in forward.cache:
            forward.cache["rel_positions"] = rank_positions(plan.token_strategy, plan.rank_layers, plan.rows,
                                                            out.attentions, mask, forward.masks["sep_mask"])
        positions = forward.cache["rel_positions"]
        values = {l: forward.captured[l].get("value") for l in spec.layers}
        sel = self.teacher_rows(plan, out, values, spec.heads, positions, mask)
        keys = sel["keys"]
        if spec.key_dtype == np.uint8:  # positions < 255 by the dtype's choice; 255 marks an empty slot
            keys = keys.masked_fill(keys < 0, UINT8_EMPTY)
        return {"rel_positions": narrow(positions.cpu().numpy(), np.int16, "query position"),
                f"{self.name}_keys": narrow(keys.cpu().numpy(), spec.key_dtype, "key position"),
                f"{self.name}_probs": sel["probs"].to(torch.float16).cpu().numpy(),
                f"{self.name}_rest": sel["rest"].to(torch.float16).cpu().numpy()}

    def read(self, read: Read) -> bool:
        return read.relations is not None

    def cuts(self, shape: StoreShape, read: Read) -> dict[str, Cut]:
        """The first `rows` query rows (keys are cut when decoded)."""
        cut = (slice(None), slice(None), slice(None), slice(None, read.relations[0]))
        return {a.name: cut[:1] + cut[2:] if a.name == "rel_positions" else cut for a in self.arrays(shape)}

    def pack(self, shape: StoreShape, rows: dict[str, np.ndarray], names: Sequence[str],
             read: Read) -> dict[str, Tensor]:
        """Decoded at the read's keys (exactly: the rest gains the dropped probabilities): keys
        int64 with -1 empty, float32 probabilities and rest."""
        return self.decode(shape.relations, super().pack(shape, rows, names, read), None, read.relations[1])

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

    def student(self, forward: StudentForward, batch: dict[str, Tensor]) -> list[Tensor]:
        """The student's rows at the stored query rows of each relation layer, (B, H_S, R, S) each."""
        left, right = self.student_pair
        rows = batch["rel_positions"]
        out = []
        for j, layer in enumerate(forward.relation_layers):
            captured = forward.captured[layer]
            a, b = split_heads(captured[left], forward.heads), split_heads(captured[right], forward.heads)
            out.append(relation(gather_rows(a, rows[:, j]), b, forward.attention_mask))
        return out


def relation_kinds(names: Sequence[str]) -> tuple[str, ...]:
    """The relation kinds (`RelationKind`: stored with a `RelationSpec`) among `names`, in registry order."""
    return tuple(k for k, kind in KINDS.items() if k in names and isinstance(kind, RelationKind))


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
