"""Extraction settings: one dataclass, filled from defaults < TOML < flags, validated once."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from hskcache.errors import UserError
from hskcache.options import Settings, columns, complete_per_name, integers, make, merged, per_name, setting
from hskcache.kinds import KINDS, kind_settings, knowledge_names, parse_knowledge, refuse_unstored
from hskcache.storage.layout import COMPRESSIONS, MAX_LENGTH
from hskcache.selection.hsk import TOKEN_STRATEGIES, layer_map
from hskcache.storage.backends import Location
from hskcache.device import DEVICES, DTYPES


@dataclass(frozen=True)
class ExtractConfig(Settings):
    """Every setting of one extraction: each field is an `extract` flag and a TOML key."""

    teacher: str = field(metadata={"help": "fine-tuned sequence classifier (a task store), or a bare encoder of a "
                                           "supported family (a task-agnostic store): local folder or hub id"})
    data: str = field(metadata={"help": "glue/<task>, a .csv/.tsv/.json/.jsonl/.parquet file, or a .txt corpus "
                                        "(one passage per line)"})
    store: str | None = field(default=None, metadata={
        "help": "store to write: a directory or an fsspec URL (s3://bucket/store, gs://...)",  # None: the online baseline
        "metavar": "STORE", "aliases": ("--out",)})
    split: str = setting("train", "dataset split")
    text_cols: tuple[str, ...] | None = setting(None, "text column(s), a or a,b", parse=columns)
    label_col: str | None = setting(None, "label column (a task teacher's only)")
    student_layers: int | None = setting(None, "student depth L'", at_least=1)
    ltop: int | None = setting(None, "top teacher layer of the layer map (default: teacher depth)")
    teacher_layers: tuple[int, ...] | None = setting(
        None, "explicit teacher layers for student layers 0..L', e.g. 0,3,5,8,10",
        parse=lambda value: integers(value, "--teacher-layers"))
    token_strategy: str = setting("att-nosep-top", "which N^L tokens per layer the HSK keeps", choices=TOKEN_STRATEGIES)
    compress: str = setting("zstd", "zstd | none, for every array", choices=COMPRESSIONS)
    knowledge: tuple[str, ...] = setting(("hsk",), "kinds of knowledge to store, a comma list of "
                                         + ", ".join(knowledge_names()),
                                         parse=parse_knowledge)
    kinds: Mapping[str, Any] = per_name(kind_settings, "knowledge kinds' settings")  # each kind's `Kind.settings`
    # (the HSK's: N^D, N^L, N^W, width strategy, seed and code, value format; `kinds.hsk.HSKSettings`)
    max_length: int = setting(128, "tokenizer max length, at most the teacher's positions")
    batch_size: int = setting(64, "teacher batch size", at_least=1)
    limit: int | None = setting(None, "only the first N examples (a bare encoder's corpus: passages)", at_least=1)
    device: str = setting("auto", "where the teacher runs (auto: CUDA when present)", choices=DEVICES)
    dtype: str | None = setting(None, "the teacher's forward precision, recorded in the store "
                                "(default: bf16 on CUDA, fp32 on CPU)", choices=DTYPES)
    overwrite: bool = setting(False, "replace a store written with other settings")
    shard: tuple[int, int] | None = setting(
        None, "i/N: write only the i-th of N chunk ranges (0-based), for schedulers without torchrun; "
        "the last shard to finish marks the store complete", parse=lambda value: parse_shard(value))

    # Settings that do not change what is stored.
    RUNTIME = ("device", "overwrite", "shard")

    def __post_init__(self) -> None:
        complete_per_name(self)  # every kind's settings (defaults where not given): one store, one identity
        refuse_unstored(self.kinds, self.knowledge)  # e.g. --att-rows without --knowledge ...att: not ignored
        from hskcache.teacher.loading import check_min_length  # transformers loads only when a config is checked

        check_min_length(self.max_length)
        if self.max_length > MAX_LENGTH:
            raise UserError(f"--max-length {self.max_length} is above {MAX_LENGTH}, what the store's int16 lengths "
                            f"and positions hold; pass --max-length {MAX_LENGTH} or less")
        # each kind's settings completed against the rest (the HSK's N^L: at most --max-length)
        object.__setattr__(self, "kinds", {name: KINDS[name].complete(value, self.max_length)
                                           for name, value in self.kinds.items()})
        if self.student_layers is None and self.teacher_layers is None:
            raise UserError("say which teacher layers to store: pass --student-layers L' (with --ltop) or --teacher-layers i,j,...")
        if self.student_layers is not None and self.teacher_layers is not None:
            raise UserError("pass either --student-layers or --teacher-layers, not both")
        if self.store and Location.parse(self.store).is_file():
            raise UserError(f"--store {self.store} is a file; pass a directory path or URL for the store")
        if self.shard is not None:
            index, count = self.shard
            if not 0 <= index < count:
                raise UserError(f"--shard {index}/{count}: pass i/N with 0 <= i < N, e.g. 0/8 ... 7/8")
            if self.overwrite:
                raise UserError("--overwrite with --shard would let one shard delete another's chunks; "
                                "remove the store first, then run the shards")

    def resolve_layers(self, num_teacher_layers: int) -> tuple[int, ...]:
        """Teacher layer for each student layer 0..L', checked against the teacher."""
        if self.teacher_layers is not None:
            layers = self.teacher_layers
            if any(i < 0 or i > num_teacher_layers for i in layers):
                raise UserError(f"--teacher-layers {layers} out of range: the teacher has layers 0..{num_teacher_layers}")
            if list(layers) != sorted(set(layers)):
                raise UserError(f"--teacher-layers must be strictly increasing, got {','.join(map(str, layers))}")
            if len(layers) < 2:  # the embeddings' layer and at least one student layer above it
                every = ",".join(map(str, range(num_teacher_layers + 1)))
                raise UserError(f"--teacher-layers {','.join(map(str, layers))} names {len(layers)} layer: a student "
                                f"has layer 0 and at least 1 layer above it; pass --teacher-layers {every} (or any "
                                f"2 or more), or --student-layers L'")
        else:
            ltop = self.ltop if self.ltop is not None else num_teacher_layers
            if not 1 <= ltop <= num_teacher_layers:
                raise UserError(f"--ltop {ltop} is above the teacher's depth {num_teacher_layers}; use 1..{num_teacher_layers}")
            layers = tuple(layer_map(self.student_layers, ltop))
        return tuple(layers)

    def stored_settings(self) -> dict[str, Any]:
        """The settings that define a store's content, as recorded in its attributes."""
        return {k: v for k, v in asdict(self).items() if k not in self.RUNTIME}


def parse_shard(text: str | tuple[int, int]) -> tuple[int, int]:
    """`--shard i/N` (0-based i)."""
    if isinstance(text, tuple):
        return text
    index, sep, count = str(text).partition("/")
    try:
        if not sep:
            raise ValueError
        return int(index), int(count)
    except ValueError:
        raise UserError(f"--shard {text!r} is not i/N (e.g. 0/8 for the first of eight shards)") from None


def build_config(flags: dict[str, Any], toml_path: str | None = None) -> ExtractConfig:
    """Defaults < TOML < flags (flags that were not given are None)."""
    return make(ExtractConfig, merged(ExtractConfig, flags, toml_path))
