"""Relation knowledge (MiniLM): attention distributions and value relations, as store arrays.

`RELATION_KINDS` is the registry: a kind names how its (B, H, S, S) row
distributions come out of a teacher forward; everything else — its arrays,
their bytes, encoding into the store's dtypes, decoding a smaller read — is
shared by every kind through `RelationSpec`, so a new relation (e.g. MiniLMv2's
query-query relation) is one entry. Selection is `hskcache.attention`.

Arrays (first axis: examples), for N_A layers, H heads, R rows, k keys:

| array | row shape | dtype |
|---|---|---|
| `rel_positions` | (N_A, R) | int16, -1 empty (query rows, shared by the kinds) |
| `<kind>_keys` | (N_A, H, R, k) | uint8 (int16 when max length > 255), empty = 255 (-1) |
| `<kind>_probs` | (N_A, H, R, k) | float16, descending |
| `<kind>_rest` | (N_A, H, R) | float16, mass of the other real keys |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .attention import (AttentionPlan, attention_rows, gather_rows, relation, select_value_relation, shrink,
                        split_heads)
from .selection import layer_map, rank_positions
from .errors import UserError
from .layout import ArraySpec, narrow

KNOWLEDGE = ("hsk", "att", "val")
ATT_LAYERS = ("last", "pairs")
UINT8_EMPTY = 255


@dataclass(frozen=True)
class RelationKind:
    """One kind of relation knowledge: how the teacher's rows are selected (from its
    forward and the captured projections) and how the student's rows are computed."""

    teacher_captures: tuple[str, ...]  # projections the teacher forward must record
    teacher_rows: Callable[..., dict[str, Tensor]]  # (plan, out, values, heads, positions, mask) -> keys/probs/rest
    student_captures: tuple[str, ...]  # projections the student forward must record
    student_rows: Callable[[dict[str, Tensor], int, Tensor, Tensor], Tensor]  # (captured, heads, rows, mask)


def _projection_relation(left: str, right: str) -> Callable[[dict[str, Tensor], int, Tensor, Tensor], Tensor]:
    """softmax(left_q · right_k / √d_h) at query rows (B, R) over real keys: (B, H, R, S)."""
    def rows(captured: dict[str, Tensor], heads: int, positions: Tensor, mask: Tensor) -> Tensor:
        a, b = split_heads(captured[left], heads), split_heads(captured[right], heads)
        return relation(gather_rows(a, positions), b, mask)
    return rows


RELATION_KINDS: dict[str, RelationKind] = {
    "att": RelationKind((), lambda plan, out, values, heads, positions, mask: attention_rows(
        plan, out.attentions, positions, mask), ("query", "key"), _projection_relation("query", "key")),
    "val": RelationKind(("value",), lambda plan, out, values, heads, positions, mask: select_value_relation(
        plan, values, heads, positions, mask), ("value",), _projection_relation("value", "value")),
}


def parse_knowledge(text: str | Sequence[str]) -> tuple[str, ...]:
    """`--knowledge hsk,att,val`: which kinds a store holds (hsk always: it carries the inputs)."""
    names = tuple(text.split(",")) if isinstance(text, str) else tuple(text)
    bad = [n for n in names if n not in KNOWLEDGE]
    if bad or not names:
        raise UserError(f"--knowledge {','.join(names)!s}: unknown kind(s) {', '.join(bad)}; "
                        f"use a comma list of {', '.join(KNOWLEDGE)}")
    return tuple(k for k in KNOWLEDGE if k in names)


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


@dataclass(frozen=True)
class RelationSpec:
    """What a store holds of relation knowledge; recorded in the store's attrs (`meta.StoreMeta.relations`)."""

    kinds: tuple[str, ...]  # subset of RELATION_KINDS, in registry order
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
        top_map = layer_map(len(teacher_layers) - 1, num_layers)
        rank = tuple(top_map[s] for s in student_layers) if token_strategy == "att-nosep-top" else layers
        return cls(tuple(k for k in RELATION_KINDS if k in kinds), layers, student_layers, rank, heads,
                   min(rows, seq_len), keys, seq_len, token_strategy)

    @property
    def plan(self) -> AttentionPlan:
        return AttentionPlan(self.layers, self.rank_layers, self.rows, self.keys, self.token_strategy)

    @property
    def key_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.seq_len <= UINT8_EMPTY else np.int16)

    @property
    def captures(self) -> tuple[str, ...]:
        """Attention projections the teacher forward must record."""
        return tuple(sorted({c for k in self.kinds for c in RELATION_KINDS[k].teacher_captures}))

    def arrays(self) -> list[ArraySpec]:
        n_a, grid = len(self.layers), (len(self.layers), self.heads, self.rows)
        specs = [ArraySpec("rel_positions", (n_a, self.rows), np.dtype(np.int16), "relations")]
        for kind in self.kinds:
            specs += [ArraySpec(f"{kind}_keys", (*grid, self.keys), self.key_dtype, "relations"),
                      ArraySpec(f"{kind}_probs", (*grid, self.keys), np.dtype(np.float16), "relations"),
                      ArraySpec(f"{kind}_rest", grid, np.dtype(np.float16), "relations")]
        return specs

    def row_bytes(self) -> int:
        return sum(a.row_bytes for a in self.arrays())

    def encode(self, out, captured: dict[int, dict[str, Tensor]], batch: dict[str, Tensor]) -> dict[str, np.ndarray]:
        """One batch's relation rows in the store's dtypes, from a teacher forward
        (`out.attentions`) and the captured projections."""
        plan, mask = self.plan, batch["attention_mask"]
        positions = rank_positions(plan.token_strategy, plan.rank_layers, plan.rows, out.attentions, mask,
                                   batch["sep_mask"])
        values = {l: captured[l].get("value") for l in self.layers}
        rows = {"rel_positions": narrow(positions.cpu().numpy(), np.int16, "query position")}
        for kind in self.kinds:
            sel = RELATION_KINDS[kind].teacher_rows(plan, out, values, self.heads, positions, mask)
            keys = sel["keys"]
            if self.key_dtype == np.uint8:  # positions < 255 by the dtype's choice; 255 marks an empty slot
                keys = keys.masked_fill(keys < 0, UINT8_EMPTY)
            rows[f"{kind}_keys"] = narrow(keys.cpu().numpy(), self.key_dtype, "key position")
            rows[f"{kind}_probs"] = sel["probs"].to(torch.float16).cpu().numpy()
            rows[f"{kind}_rest"] = sel["rest"].to(torch.float16).cpu().numpy()
        return rows

    def resolve(self, rows: int | None, keys: int | None, where: str) -> tuple[int, int]:
        rows = self.rows if rows is None else rows
        keys = self.keys if keys is None else keys
        if not 1 <= rows <= self.rows or not 1 <= keys <= self.keys:
            raise UserError(f"--att-read {rows},{keys} is more than the store holds ({self.rows} rows, "
                            f"{self.keys} keys; {where}); read at or below it")
        return rows, keys

    def row_cuts(self, rows: int) -> dict[str, tuple[slice, ...]]:
        """Per-array slices (example axis first) of a read's first `rows` query rows."""
        cut = (slice(None), slice(None), slice(None), slice(None, rows))
        return {"rel_positions": cut[:1] + cut[2:]} | {
            f"{kind}_{part}": cut for kind in self.kinds for part in ("keys", "probs", "rest")}

    def decode(self, tensors: dict[str, Tensor], rows: int | None, keys: int) -> dict[str, Tensor]:
        """Stored relation arrays (any leading batch axis) -> the batch entries at a
        smaller (rows, keys): keys int64 with -1 empty, float32 probabilities and rest."""
        out = {"rel_positions": tensors["rel_positions"][..., :rows].long()}
        for kind in self.kinds:
            k = tensors[f"{kind}_keys"].long()
            if self.key_dtype == np.uint8:
                k = k.masked_fill(k == UINT8_EMPTY, -1)
            k, p, r = shrink(k, tensors[f"{kind}_probs"].float(), tensors[f"{kind}_rest"].float(), rows, keys)
            out |= {f"{kind}_keys": k, f"{kind}_probs": p, f"{kind}_rest": r}
        return out
