"""Kinds of knowledge: one registry, `KINDS`, of everything a store holds per example.

A kind names, in one place:

- its arrays (`arrays`: names, row shapes, dtypes, budget groups; so the
  writer's chunking and `hskcache budget` count its bytes);
- its selection and encoding at extraction (`encode`: one teacher forward,
  `TeacherForward`, to rows in the store's dtypes), and the attention
  projections the teacher forward must record (`teacher_captures`);
- its decoding at read time: `cuts` (the stored arrays a read needs, cut to
  it, where rows are gathered), `pack` (gathered numpy rows to tensors, on the
  reader's threads) and `expand` (packed tensors to the batch dictionary's
  entries, on the trainer's device; docs/design.md lists them);
- what a student forward must give to be compared with it (`student`, from a
  `StudentForward`) and its objectives (`objectives`: `--objective` names,
  each naming a loss of `students.losses.LOSSES` and the training stage).

`inputs` (the examples themselves), `logits` and `hsk` are always stored;
`att` and `val` (MiniLM's attention and value relation,
`RelationKind`) are stored with `--knowledge hsk,att,val` and share their
query rows (`rel_positions`, `RelationSpec`). Adding a kind is one entry in
`KINDS` (and, if it needs a new loss, one entry in `students.losses.LOSSES`).

Relation arrays (first axis: examples), for N_A layers, H heads, R rows, k keys:

| array | row shape | dtype |
|---|---|---|
| `rel_positions` | (N_A, R) | int16, -1 empty (query rows, shared by the kinds) |
| `<kind>_keys` | (N_A, H, R, k) | uint8 (int16 when max length > 255), empty = 255 (-1) |
| `<kind>_probs` | (N_A, H, R, k) | float16, descending |
| `<kind>_rest` | (N_A, H, R) | float16, mass of the other real keys |
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from . import widthcode
from .attention import (AttentionPlan, attention_rows, gather_rows, relation, select_value_relation, shrink,
                        split_heads)
from .errors import UserError
from .layout import ArraySpec, narrow
from .packed import encode_hsk, expand_hsk
from .selection import SelectionPlan, layer_map, rank_positions, select_hsk

if TYPE_CHECKING:
    from .layout import StoreShape
    from .packed import PackedBatch

KNOWLEDGE = ("hsk", "att", "val")  # what `--knowledge` chooses among
ATT_LAYERS = ("last", "pairs")
UINT8_EMPTY = 255
Cut = tuple[slice, ...]  # of a row block, example axis first
WHOLE: Cut = (slice(None),)


@dataclass(frozen=True)
class Read:
    """What one read asks of the store: the HSK at (depth, tokens, kept), and the
    relations at (rows, keys), None when they are not read. Resolved against the store."""

    depth: int
    tokens: int
    kept: int
    relations: tuple[int, int] | None = None


@dataclass
class TeacherForward:
    """One extraction batch after the teacher's forward: what every kind's `encode` reads."""

    out: Any  # the teacher's output: logits, hidden_states, attentions (on its device)
    captured: dict[int, dict[str, Tensor]]  # recorded projections per attention layer (hooks.capture)
    tokens: dict[str, np.ndarray]  # the tokenized batch (input_ids, attention_mask, token_type_ids, sep_mask)
    masks: dict[str, Tensor]  # attention_mask and sep_mask on the teacher's device
    labels: np.ndarray
    example_ids: np.ndarray
    plan: SelectionPlan
    shape: StoreShape
    cache: dict[str, Any] = field(default_factory=dict)  # computed once, shared by kinds (relation rows)


@dataclass
class StudentForward:
    """One student forward, what every kind's `student` reads."""

    out: Any  # the student's output: logits, and hidden_states when a kind asks for them
    captured: dict[int, dict[str, Tensor]]  # recorded projections per student attention layer
    heads: int
    attention_mask: Tensor
    projection: Callable[[Tensor], Tensor]  # W: student width -> teacher width
    relation_layers: tuple[int, ...]  # the student layer matched to each stored relation layer


@dataclass(frozen=True)
class Objective:
    """One `--objective`: the loss (`students.losses.LOSSES`) that compares a kind with the student."""

    loss: str
    paper: str
    stage: str = "hsk"  # the training stage it belongs to: "hsk" (stage 1) or "pred"


class Kind:
    """One kind of knowledge. Subclasses set the class attributes and override what they store."""

    name: str = ""
    groups: tuple[str, ...] = ()  # the budget groups of its arrays (`hskcache budget`'s columns)
    objectives: Mapping[str, Objective] = {}
    teacher_captures: tuple[str, ...] = ()  # attention projections the teacher forward must record
    student_captures: tuple[str, ...] = ()  # and the student forward
    student_hidden_states: bool = False  # whether the student forward must return its hidden states

    def arrays(self, shape: StoreShape) -> list[ArraySpec]:
        """The kind's per-row arrays in a store of this shape (none: not stored)."""
        raise NotImplementedError

    def static_arrays(self, shape: StoreShape) -> list[ArraySpec]:
        """Its arrays stored once per store (`row_shape`: the whole shape), written at creation."""
        return []

    def encode(self, forward: TeacherForward) -> dict[str, np.ndarray]:
        """One batch's rows of the kind's arrays, in the store's dtypes."""
        raise NotImplementedError

    def read(self, read: Read) -> bool:
        """Whether a read includes this kind."""
        return True

    def cuts(self, shape: StoreShape, read: Read) -> dict[str, Cut]:
        """Its arrays a read needs, each with the cut of a row block (the rows a read keeps)."""
        return {a.name: WHOLE for a in self.arrays(shape)}

    def pack(self, shape: StoreShape, rows: dict[str, np.ndarray], names: Sequence[str],
             read: Read) -> dict[str, Tensor]:
        """Its gathered, cut rows (`names`: its arrays among `rows`) as the tensors of a
        `PackedBatch`, on the reader's threads (once per batch: kept lean)."""
        return {name: torch.from_numpy(np.ascontiguousarray(rows[name])) for name in names}

    def expand(self, tensors: dict[str, Tensor], batch: PackedBatch) -> dict[str, Tensor]:
        """Its entries of the batch dictionary, from a packed batch's tensors (on the trainer's device)."""
        raise NotImplementedError

    def student(self, forward: StudentForward, batch: dict[str, Tensor]) -> Any:
        """What its losses compare with the batch's entries, from the student's forward."""
        raise NotImplementedError

    def __reduce__(self):  # a packed batch names its kinds; they unpickle to the registry's entries
        return _kind, (self.name,)


def _kind(name: str) -> Kind:
    return KINDS[name]


class Inputs(Kind):
    """The examples themselves: token ids, lengths (the attention mask), segments, labels, ids."""

    name = "inputs"
    groups = ("inputs",)

    def arrays(self, shape: StoreShape) -> list[ArraySpec]:
        ids = np.uint16 if shape.vocab_size <= 1 << 16 else np.int32  # ids 0..vocab_size-1
        return [
            ArraySpec("input_ids", (shape.seq_len,), np.dtype(ids), "inputs"),
            ArraySpec("length", (), np.dtype(np.int16), "inputs"),
            ArraySpec("token_type_ids", (shape.seq_len,), np.dtype(np.uint8), "inputs"),
            ArraySpec("labels", (), np.dtype(np.float32 if shape.regression else np.int64), "inputs"),
            ArraySpec("example_id", (), np.dtype(np.int64), "inputs"),
        ]

    def encode(self, forward: TeacherForward) -> dict[str, np.ndarray]:
        specs = {a.name: a.dtype for a in self.arrays(forward.shape)}
        tokens = forward.tokens
        return {
            "input_ids": narrow(tokens["input_ids"], specs["input_ids"], "token id"),
            "length": narrow(tokens["attention_mask"].sum(axis=1), specs["length"], "length"),
            "token_type_ids": narrow(tokens["token_type_ids"], specs["token_type_ids"], "token type id"),
            "labels": forward.labels.astype(specs["labels"]),
            "example_id": forward.example_ids.astype(np.int64),
        }

    def expand(self, tensors: dict[str, Tensor], batch: PackedBatch) -> dict[str, Tensor]:
        seq = tensors["input_ids"].shape[1]
        return {
            "input_ids": tensors["input_ids"].long(),
            "attention_mask": (torch.arange(seq, device=tensors["length"].device)
                               < tensors["length"].unsqueeze(1)).long(),
            "token_type_ids": tensors["token_type_ids"].long(),
            "labels": tensors["labels"],
            "example_id": tensors["example_id"],
        }


class Logits(Kind):
    """The teacher's logits: the prediction stage's soft targets."""

    name = "logits"
    groups = ("logits",)
    objectives = {"pred": Objective("prediction", "soft cross-entropy to the teacher's logits (MSE for "
                                    "regression)", stage="pred"),
                  "label": Objective("label", "the task loss to the gold labels (cross-entropy, MSE for regression; "
                                     "rows without a label, e.g. augmented ones, are left out)", stage="pred")}

    def arrays(self, shape: StoreShape) -> list[ArraySpec]:
        return [ArraySpec("logits", (shape.num_logits,), np.dtype(np.float32), "logits")]

    def encode(self, forward: TeacherForward) -> dict[str, np.ndarray]:
        return {"logits": forward.out.logits.float().cpu().numpy()}

    def expand(self, tensors: dict[str, Tensor], batch: PackedBatch) -> dict[str, Tensor]:
        return {"logits": tensors["logits"]}

    def student(self, forward: StudentForward, batch: dict[str, Tensor]) -> Tensor:
        return forward.out.logits.float()


def gather_projected(states: Tensor, positions: Tensor, projection: Callable[[Tensor], Tensor]) -> Tensor:
    """Student states (B, S, d_S) at the stored positions (B, N_L; -1 empty reads
    token 0), projected to the teacher's width: (B, N_L, d_T). Only those tokens are projected."""
    index = positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, states.shape[-1])
    return projection(states.gather(1, index))


HSK_CUT_ARRAYS = ("positions", "values", "value_scale", "width_code")  # cut to a read's depth and tokens


class HSK(Kind):
    """Hidden-state knowledge: the selected layers × tokens × activations (`hskcache.selection`),
    coded by `hskcache.packed` (values fp16 or int8, kept dimensions as a width code)."""

    name = "hsk"
    groups = ("positions", "values", "mask")
    objectives = {"hsk": Objective("hsk-mse", "HSK MSE (Hid-Seq on the selected tokens and activations)")}
    student_hidden_states = True

    def arrays(self, shape: StoreShape) -> list[ArraySpec]:
        vectors = (shape.depth, shape.tokens)
        specs = [
            ArraySpec("positions", vectors, np.dtype(np.int16), "positions", fill=-1),
            ArraySpec("values", (*vectors, shape.kept), np.dtype(np.float16 if shape.values == "fp16" else np.int8),
                      "values", "blosc-lz4-bitshuffle" if shape.values == "fp16" else "zstd",
                      content=f"values/{shape.values}"),
        ]
        if shape.values == "int8":
            specs.append(ArraySpec("value_scale", vectors, np.dtype(np.float16), "values"))
        if shape.width_encoding is not None:
            nbytes = widthcode.code_bytes(shape.width_encoding, shape.hidden, shape.kept)
            specs.append(ArraySpec("width_code", (*vectors, nbytes), np.dtype(np.uint8), "mask",
                                   content=f"width_code/{shape.width_encoding}"))
        return specs

    def static_arrays(self, shape: StoreShape) -> list[ArraySpec]:
        """rand/uniform keep the same dimensions in every vector: stored once (`selection.static_dims`)."""
        if shape.width_strategy in ("rand", "uniform") and shape.kept < shape.hidden:
            return [ArraySpec("static_dims", (shape.kept,), np.dtype(np.int32), "mask", codec="none")]
        return []

    def encode(self, forward: TeacherForward) -> dict[str, np.ndarray]:
        """Selection, the value format and bit packing on the teacher's device; other width
        codes are made from the bitmask on the host."""
        shape, out = forward.shape, forward.out
        sel = select_hsk(forward.plan, out.hidden_states, out.attentions, forward.masks["attention_mask"],
                         forward.masks["sep_mask"])
        stored = encode_hsk(sel, shape.hidden, shape.values, shape.width_encoding is not None)
        rows = {name: value.cpu().numpy() for name, value in stored.items()}
        if shape.width_encoding is not None and shape.width_encoding != "bitmask":
            bits = rows["width_code"]
            codes = widthcode.from_bitmask(bits.reshape(-1, bits.shape[-1]), shape.hidden, shape.kept,
                                           shape.width_encoding)
            rows["width_code"] = codes.reshape(*bits.shape[:-1], -1)
        return rows

    def cuts(self, shape: StoreShape, read: Read) -> dict[str, Cut]:
        """The top `depth` stored layers and the first `tokens` positions (rows are importance-ordered)."""
        cut = (slice(None), slice(shape.depth - read.depth, None), slice(None, read.tokens))
        return {a.name: cut for a in self.arrays(shape)}

    def pack(self, shape: StoreShape, rows: dict[str, np.ndarray], names: Sequence[str],
             read: Read) -> dict[str, Tensor]:
        """Rank and index width codes become bitmasks, what a `PackedBatch` carries."""
        out = super().pack(shape, rows, names, read)
        if shape.width_code != "bitmask" and "width_code" in out:  # the store's width encoding is its width code
            codes = rows["width_code"]
            bits = widthcode.to_bitmask(codes.reshape(-1, codes.shape[-1]), shape.hidden, shape.kept, shape.width_code)
            out["width_code"] = torch.from_numpy(np.ascontiguousarray(bits.reshape(*codes.shape[:-1], -1)))
        return out

    def expand(self, tensors: dict[str, Tensor], batch: PackedBatch) -> dict[str, Tensor]:
        return expand_hsk(tensors, batch)

    def student(self, forward: StudentForward, batch: dict[str, Tensor]) -> list[Tensor]:
        """The projected student vectors at the stored positions, one (B, N_L, d_T) per stored
        layer: stored layer j of a depth-n read belongs to student layer L' - n + 1 + j."""
        positions = batch["positions"]
        hidden = forward.out.hidden_states
        n, top = positions.shape[1], len(hidden) - 1
        return [gather_projected(hidden[top - n + 1 + j].float(), positions[:, j], forward.projection)
                for j in range(n)]


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
        top_map = layer_map(len(teacher_layers) - 1, num_layers)
        rank = tuple(top_map[s] for s in student_layers) if token_strategy == "att-nosep-top" else layers
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

    def __init__(self, name: str, objectives: Mapping[str, Objective], teacher_captures: tuple[str, ...],
                 teacher_rows: Callable[..., dict[str, Tensor]], student_pair: tuple[str, str]) -> None:
        self.name, self.objectives, self.teacher_captures = name, objectives, teacher_captures
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


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Inputs(),
    Logits(),
    HSK(),
    RelationKind("att", {"att": Objective("kl", "Att-KL (MiniLM L_AT), exact on the top-k-plus-rest coarsening"),
                         "att-mse": Objective("mse", "Att-MSE on the kept attention probabilities")},
                 (), lambda plan, out, values, heads, positions, mask: attention_rows(
                     plan, out.attentions, positions, mask), ("query", "key")),
    RelationKind("val", {"val": Objective("kl", "Val-KL (MiniLM L_VR), exact on the top-k-plus-rest coarsening")},
                 ("value",), lambda plan, out, values, heads, positions, mask: select_value_relation(
                     plan, values, heads, positions, mask), ("value", "value")),
)}


def relation_kinds(names: Sequence[str]) -> tuple[str, ...]:
    """The relation kinds (`RelationKind`: stored with a `RelationSpec`) among `names`, in registry order."""
    return tuple(k for k, kind in KINDS.items() if k in names and isinstance(kind, RelationKind))


def stored_kinds(shape: StoreShape) -> tuple[Kind, ...]:
    """The kinds a store of this shape holds, in registry order."""
    return tuple(kind for kind in KINDS.values() if kind.arrays(shape))


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
