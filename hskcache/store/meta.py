"""What a store records about itself, as one typed value: `StoreMeta`.

The extractor builds a `StoreMeta` and the store writes it as its Zarr
attributes (`to_attrs`); every reader gets it back with `from_attrs`, which
checks every field's type once, when the store is opened, so a store with a
missing or malformed field is refused there with one line, and the rest of
the code reads typed fields instead of dictionary keys. Each knowledge kind's
settings (`Settings.kinds`) and record (`StoreMeta.kinds`) are parsed with
that kind's own types (`Kind.settings`, `Kind.record`). The on-disk layout is
store schema 6's (5 plus `general` and `corpus`: `hskcache.store.group` reads a
schema-5 store as a task store); the store's own bookkeeping (`format`,
`schema_version`, `rows_committed`, `complete`) stays with `hskcache.store.group`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hskcache.errors import UserError
from hskcache.kinds import KINDS

if TYPE_CHECKING:
    from hskcache.store.shape import StoreShape


@dataclass(frozen=True)
class Settings:
    """The settings an extraction ran with (`ExtractConfig`'s stored fields, resolved against
    the teacher and data): `attrs["config"]`, and the settings part of the store's identity."""

    teacher: str
    data: str
    split: str
    text_cols: tuple[str, ...]
    label_col: str | None
    student_layers: int
    ltop: int | None
    teacher_layers: tuple[int, ...]  # teacher layer of each student layer 0..L'
    token_strategy: str
    compress: str
    knowledge: tuple[str, ...]
    kinds: dict[str, Any] = field(metadata={"per_kind": "settings"})  # each stored kind's `Kind.settings`
    # (the HSK's N^D, N^L, N^W, width strategy, seed and code, value format: `kinds.hsk.HSKSettings`)
    max_length: int
    batch_size: int
    limit: int | None
    dtype: str  # the teacher's forward precision, resolved


@dataclass(frozen=True)
class TokenizerInfo:
    """The teacher's tokenizer: a student must share its vocabulary (`vocab_hash`)."""

    name: str
    class_name: str  # attrs key "class"
    vocab_size: int  # bound on token ids
    vocab_hash: str
    cls_token_id: int | None
    sep_token_id: int | None
    pad_token_id: int | None


@dataclass(frozen=True)
class DataInfo:
    source: str
    split: str
    fingerprint: str


@dataclass(frozen=True)
class CorpusInfo:
    """How a task-agnostic store's corpus was cut into sequences (`hskcache.corpus`'s rule)."""

    passages: int  # the corpus's passages (its non-blank texts, `corpus.passages`), --limit applied
    sequences: int  # the store's rows: each passage's pieces
    sequence_tokens: int  # tokens of text per sequence: --max-length less the special tokens


@dataclass(frozen=True)
class StoreMeta:
    """Everything a student needs to know about a store, with no teacher at hand."""

    config: Settings
    num_examples: int
    teacher: str
    teacher_hash: str
    teacher_num_layers: int
    teacher_layers: tuple[int, ...]
    stored_layers: tuple[int, ...]  # the top `depth` of teacher_layers
    rank_layers: tuple[int, ...]  # hidden-state index whose [CLS] attention ranks each stored layer's tokens
    hidden_size: int  # d_T
    num_labels: int
    regression: bool
    id2label: dict[str, str]
    task: str | None
    label_names: tuple[str, ...] | None
    tokenizer: TokenizerInfo
    data: DataInfo
    versions: dict[str, str]
    kinds: dict[str, Any] = field(metadata={"per_kind": "record"})  # each stored kind's `Kind.record` (the
    # HSK's resolved N^D, N^L, K and width code, `kinds.hsk.HSKRecord`; the relations' `RelationSpec`)
    general: bool = False  # task-agnostic: from a bare encoder, no logits or labels (num_labels 0)
    corpus: CorpusInfo | None = None  # a general store's: how its corpus was cut into sequences

    @property
    def identity(self) -> dict[str, Any]:
        """What a resumed extraction, and a resumed training run, must match: the settings,
        the teacher's weights and the data (JSON-shaped, as stored)."""
        return {"settings": to_json(self.config), "teacher_hash": self.teacher_hash,
                "data_fingerprint": self.data.fingerprint}

    @property
    def student_layers(self) -> int:
        """L': the store serves students of this depth."""
        return len(self.teacher_layers) - 1

    def to_attrs(self) -> dict[str, Any]:
        """The Zarr attributes (JSON): the fields, plus the identity."""
        out = to_json(self)
        out["identity"] = self.identity
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], where: str) -> "StoreMeta":
        """Parse and check a store's attributes (the one check: a missing or malformed field
        is a one-line error naming it). `where` names the store in the message."""
        try:
            meta = _parse(cls, attrs, "")
            if meta.general != (meta.num_labels == 0) or meta.corpus is not None and not meta.general:
                raise _Bad("general (a task-agnostic store, and only it, has 0 labels and may record its corpus)")
            return meta
        except _Bad as bad:
            raise UserError(f"store {where} has a missing or malformed attribute {bad}; re-extract it: "
                            "rerun its `hskcache extract` command with --overwrite") from None


_ATTR_NAMES = {(TokenizerInfo, "class_name"): "class"}  # field -> attrs key where they differ


class _Bad(Exception):
    """A field that is missing or not of its type (its dotted name)."""


def to_json(value: Any) -> Any:
    """A dataclass (nested too) as JSON-shaped values: dicts, lists, scalars."""
    if dataclasses.is_dataclass(value):
        return {_ATTR_NAMES.get((type(value), f.name), f.name): to_json(getattr(value, f.name))
                for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def _parse(cls: type, attrs: Any, prefix: str) -> Any:
    if not isinstance(attrs, Mapping):
        raise _Bad(prefix.rstrip(".") or "attributes")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        key = _ATTR_NAMES.get((cls, f.name), f.name)
        if key not in attrs:
            raise _Bad(prefix + key)
        values[f.name] = (_per_kind(f.metadata["per_kind"], attrs[key], prefix + key) if "per_kind" in f.metadata
                          else _value(hints[f.name], attrs[key], prefix + key))
    return cls(**values)


def _per_kind(what: str, attrs: Any, name: str) -> dict[str, Any]:
    """{kind name: its `what` ("settings" or "record"), parsed with that kind's own type}."""
    if not isinstance(attrs, Mapping):
        raise _Bad(name)
    out = {}
    for kind, value in attrs.items():
        cls = getattr(KINDS[kind], what) if kind in KINDS else None
        if cls is None:
            raise _Bad(f"{name}.{kind}")
        out[kind] = _parse(cls, value, f"{name}.{kind}.")
    return out


def _value(kind: Any, value: Any, name: str) -> Any:
    """`value` as the annotated type `kind`, or _Bad(name)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, name)
    if dataclasses.is_dataclass(kind):  # nested: TokenizerInfo, DataInfo
        return _parse(kind, value, name + ".")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Bad(name)
        return tuple(_value(args[0], v, name) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _Bad(name)
        return {k: _value(args[1], v, name) for k, v in value.items()}
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise _Bad(name)
    return value


def synthetic_meta(shape: StoreShape, num_examples: int, teacher_layers: Sequence[int], name: str) -> StoreMeta:
    """The metadata of a store laid out by `shape` with no teacher or data behind it (benchmarks and
    tests that write arrays directly): every name, hash and id is `name`."""
    layers, depth = tuple(teacher_layers), shape.kinds["hsk"].depth
    settings = Settings(
        teacher=name, data=name, split="train", text_cols=("sentence",), label_col=None,
        student_layers=len(layers) - 1, ltop=None, teacher_layers=layers, token_strategy="att-nosep-top",
        compress=shape.compress, knowledge=tuple(k for k in shape.kinds if KINDS[k].listed),
        kinds={k: _settings_of(k, r) for k, r in shape.kinds.items() if KINDS[k].settings},
        max_length=shape.seq_len, batch_size=64, limit=None, dtype="fp32")
    return StoreMeta(
        config=settings, num_examples=num_examples, teacher=name, teacher_hash=name, teacher_num_layers=layers[-1],
        teacher_layers=layers, stored_layers=layers[-depth:], rank_layers=layers[-depth:],
        hidden_size=shape.hidden, num_labels=shape.num_logits, regression=shape.regression,
        id2label={str(i): f"LABEL_{i}" for i in range(shape.num_logits)}, task=None, label_names=None,
        tokenizer=TokenizerInfo(name, name, shape.vocab_size, name, None, None, None),
        data=DataInfo(name, "train", name), versions={}, kinds=dict(shape.kinds), general=shape.general)


def _settings_of(kind: str, record: Any) -> Any:
    """The settings a synthetic store records for a kind: the record's fields its settings class has."""
    cls = KINDS[kind].settings
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in dataclasses.asdict(record).items() if k in names}) \
        if dataclasses.is_dataclass(record) else cls()
