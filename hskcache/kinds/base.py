"""The kind interface and its registry: `Kind`, `KINDS`, `register`, and what kinds share.

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
- its parameters: `settings` (extraction: `extract` flags and TOML keys,
  recorded in the store), `resolve` (the settings against the teacher: its
  `record` in the store's metadata), `read_settings`, `reads` and `resolve_read`
  (reads: `students train` flags). An opt-in kind (`opt_in`: stored only
  when `--knowledge` names it) has a `settings` class, if an empty one.

Its student side (what a student forward gives to be compared with it, its
objectives and their losses) is its module in `students/kinds/`.

Each kind lives in its own module of this package and registers itself
(`register`); the package imports every module it holds (`hskcache.kinds`),
so adding a kind is adding one module.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from hskcache.errors import UserError
from hskcache.options import flag_name
from hskcache.selection.layers import StoreLayers

if TYPE_CHECKING:
    from hskcache.storage.layout import ArraySpec
    from hskcache.store.shape import StoreShape
    from hskcache.storage.packed import PackedBatch
    from hskcache.selection.hsk import SelectionPlan
    from hskcache.store.meta import StoreMeta

Cut = tuple[slice, ...]  # of a row block, example axis first
WHOLE: Cut = (slice(None),)


@dataclass(frozen=True)
class Read:
    """What one read asks of the store: each kind it includes with that kind's resolved read
    (`Kind.resolve_read`; the HSK's always, an opt-in kind's when asked). Resolved against the store."""

    kinds: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Student:
    """The student a read serves: its depth L'' and what of the store its layers are read by (the store's
    layers, `selection.layers.StoreLayers`; each stored kind's extraction settings, e.g. a relation kind's
    --att-layers, and its record). A read that names no depth serves the store's own L'."""

    depth: int
    layers: StoreLayers
    settings: Mapping[str, Any]
    records: Mapping[str, Any]  # what the store records of each kind (`StoreMeta.kinds`)

    @classmethod
    def of(cls, meta: StoreMeta, depth: int | None = None) -> "Student":
        """A student of `depth` layers (None: the store's own L') reading the store `meta` describes."""
        layers = StoreLayers(tuple(meta.teacher_layers), tuple(meta.stored_layers))
        return cls(layers.own_depth if depth is None else depth, layers, meta.config.kinds, meta.kinds)

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise UserError(f"a student has at least 1 layer, got {self.depth}; read the store for a student "
                            "of 1 or more layers (student_layers, its config's num_hidden_layers)")

    def covered(self, depth: int) -> bool:
        """Whether every kind the store holds serves a student of `depth` layers at its default read
        (`Kind.covers`)."""
        return all(KINDS[name].covers(record, replace(self, depth=depth)) for name, record in self.records.items())

    def served(self) -> str:
        """The student depths the store serves, in one phrase: the one answer of `hskcache inspect` and
        every refusal of a depth."""
        return self.layers.describe(self.covered)


@dataclass(frozen=True)
class TeacherInfo:
    """What a kind's settings are resolved against at extraction (`Kind.resolve`): the teacher and
    the settings every kind shares."""

    teacher_layers: tuple[int, ...]  # teacher layer of each student layer 0..L'
    num_layers: int
    heads: int
    hidden: int
    seq_len: int  # --max-length
    tokens: int  # N^L of the HSK (relation rows default to it)
    token_strategy: str


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


class Kind:
    """One kind of knowledge. Subclasses set the class attributes and override what they store."""

    name: str = ""
    order: int = 100  # place in the registry: the store's array order and the budget's columns follow it
    groups: tuple[str, ...] = ()  # the budget groups of its arrays (`hskcache budget`'s columns)
    teacher_captures: tuple[str, ...] = ()  # attention projections the teacher forward must record
    listed: bool = False  # a name `--knowledge` takes
    opt_in: bool = False  # stored only when `--knowledge` names it (else: always, when it has arrays)
    needs_attentions: bool = False  # its encoding reads the teacher's post-softmax attentions
    settings: type | None = None  # its extraction parameters: a frozen dataclass of `options.setting` fields,
    # each an `extract` flag and TOML key (kinds that share the class share the flags), recorded in the store
    read_settings: type | None = None  # its read parameters, the same way: `students train` flags
    record: type | None = None  # what a store records of it (`StoreMeta.kinds`), `resolve`'s result

    def complete(self, settings: Any, max_length: int) -> Any:
        """Its settings with what depends on the run's other settings filled in (the HSK's N^L: at most
        --max-length), before anything is recorded; a combination it cannot store is refused."""
        return settings

    def resolve(self, settings: Any, teacher: TeacherInfo) -> Any:
        """Its settings resolved against the teacher: what a store holding it records (a `record`)."""
        return settings

    def resolve_read(self, record: Any, read: Any, where: str, shape: StoreShape,
                     static: Mapping[str, np.ndarray], student: Student) -> Any:
        """A read's settings (`read_settings`) checked against what the store records (and, where a
        kind needs them, the store's shape and once-per-store arrays, and the student it serves): the
        read its `cuts`, `pack` and `expand` get (`Read.kinds`). Refuses, in one line, what the store
        cannot serve."""
        return read

    def covers(self, record: Any, student: Student) -> bool:
        """Whether the kind, as the store records it, serves a student of `student.depth` layers at its default
        read (`Student.served`: what `hskcache inspect` and the refusals say)."""
        return True

    def reads(self, read: Any) -> bool:
        """Whether its read settings (`read_settings`; None for a kind without) read it at all: the HSK's
        `--hsk none` does not, so the trainer skips the stages that need it."""
        return True

    def describe(self, record: Any) -> str:
        """What a store records of it in one line (`hskcache inspect`, `hskcache budget`)."""
        return ", ".join(f"{k} {v}" for k, v in asdict(record).items()) if is_dataclass(record) else str(record)

    def capture_layers(self, shape: StoreShape) -> tuple[int, ...]:
        """The teacher attention layers whose projections (`teacher_captures`) its encoding reads."""
        return ()

    def arrays(self, shape: StoreShape) -> list[ArraySpec]:
        """The kind's per-row arrays in a store of this shape (an opt-in kind: when `shape.kinds` holds it)."""
        raise NotImplementedError

    def stored(self, shape: StoreShape) -> bool:
        """Whether a store of this shape holds the kind."""
        return (not self.opt_in or self.name in shape.kinds) and bool(self.arrays(shape))

    def static_arrays(self, shape: StoreShape) -> list[ArraySpec]:
        """Its arrays stored once per store (`row_shape`: the whole shape), written at creation."""
        return []

    def encode(self, forward: TeacherForward) -> dict[str, np.ndarray]:
        """One batch's rows of the kind's arrays, in the store's dtypes."""
        raise NotImplementedError

    def read(self, read: Read) -> bool:
        """Whether a read includes this kind: an opt-in kind when the read names it."""
        return not self.opt_in or self.name in read.kinds

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

    def __reduce__(self):  # a packed batch names its kinds; they unpickle to the registry's entries
        return _kind, (self.name,)


KINDS: dict[str, Kind] = {}  # every registered kind by name, in `order`


def register(kind: Kind) -> Kind:
    """Add a kind to the registry (its module calls this when imported); a name is registered once."""
    if kind.name in KINDS:
        raise ValueError(f"knowledge kind {kind.name!r} is registered twice")
    entries = sorted([*KINDS.values(), kind], key=lambda k: k.order)
    KINDS.clear()
    KINDS.update((k.name, k) for k in entries)
    return kind


def _kind(name: str) -> Kind:
    return KINDS[name]


def stored_kinds(shape: StoreShape) -> tuple[Kind, ...]:
    """The kinds a store of this shape holds, in registry order."""
    return tuple(kind for kind in KINDS.values() if kind.stored(shape))


def knowledge_names() -> tuple[str, ...]:
    """What `--knowledge` chooses among (the `listed` kinds), in registry order."""
    return tuple(name for name, kind in KINDS.items() if kind.listed)


def parse_knowledge(text: str | Sequence[str]) -> tuple[str, ...]:
    """`--knowledge hsk,att,val`: which kinds a store holds (hsk always: it carries the inputs)."""
    names = tuple(text.split(",")) if isinstance(text, str) else tuple(text)
    listed = knowledge_names()
    bad = [n for n in names if n not in listed]
    if bad or not names:
        raise UserError(f"--knowledge {','.join(names)!s}: unknown kind(s) {', '.join(bad)}; "
                        f"use a comma list of {', '.join(listed)}")
    return tuple(k for k in listed if k in names)


def chosen(knowledge: Sequence[str]) -> tuple[Kind, ...]:
    """The opt-in kinds `--knowledge` names, in registry order."""
    return tuple(kind for kind in KINDS.values() if kind.opt_in and kind.name in knowledge)


def refuse_unstored(settings: Mapping[str, Any], knowledge: Sequence[str]) -> None:
    """`extract` (and the online baseline): a kind's setting given for a kind `--knowledge` does not store."""
    used = [k.name for k in KINDS.values() if not k.opt_in] + [k.name for k in chosen(knowledge)]
    refuse_unused(settings, used, lambda owners: f"store it with --knowledge {','.join([*knowledge, owners[0]])}")


def kind_settings() -> dict[str, type]:
    """Every kind's extraction settings class, by kind name (`ExtractConfig.kinds`)."""
    return {name: kind.settings for name, kind in KINDS.items() if kind.settings is not None}


def opt_in_settings() -> dict[str, type]:
    """The opt-in kinds' extraction settings classes (`hskcache budget --plan`, whose configurations
    give the HSK's amount and whose own flags its width strategy, code and value format)."""
    return {name: cls for name, cls in kind_settings().items() if KINDS[name].opt_in}


def read_settings() -> dict[str, type]:
    """Every kind's read settings class, by kind name."""
    return {name: kind.read_settings for name, kind in KINDS.items() if kind.read_settings is not None}


def resolve_reads(records: Mapping[str, Any], asked: Mapping[str, Any], where: str, shape: StoreShape,
                  static: Mapping[str, np.ndarray], student: Student) -> dict[str, Any]:
    """Each asked kind's read (`asked`: kind name -> its read settings) checked against what a
    store records (`records`, `StoreMeta.kinds`) for `student`: the `Read.kinds` of a read."""
    out = {}
    for name, read in asked.items():
        if name not in records:
            raise UserError(f"the store holds no {name} knowledge ({where}); extract with --knowledge hsk,{name}")
        out[name] = KINDS[name].resolve_read(records[name], read, where, shape, static, student)
    return out


def refuse_unused(settings: Mapping[str, Any], used: Sequence[str], fix: Callable[[Sequence[str]], str]) -> None:
    """Refuse, in one line, a kind's setting given (not its default) that only kinds outside `used` take
    (e.g. `--att-rows` without `--knowledge ...att`): it would be ignored silently. `settings`: kind name ->
    its settings (`per_name`); `fix(owners)` says how to use them (owners: the kinds that take the setting)."""
    taken = {f.name for name in used if name in settings for f in fields(settings[name])}
    for name, value in settings.items():
        for f in fields(value):
            default = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
            if f.name in taken or getattr(value, f.name) == default:
                continue
            owners = [n for n, v in settings.items() if f.name in {g.name for g in fields(v)}]
            raise UserError(f"{flag_name(f.name)} is a setting of the {', '.join(owners)} knowledge, which this run "
                            f"does not use; {fix(owners)}, or drop {flag_name(f.name)}")
