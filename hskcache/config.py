"""Extraction settings: one dataclass, filled from defaults < TOML < flags, validated once."""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import UserError
from .selection import TOKEN_STRATEGIES, WIDTH_STRATEGIES, layer_map

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ExtractConfig:
    teacher: str
    data: str
    out: str
    split: str = "train"
    text_cols: tuple[str, ...] | None = None
    label_col: str | None = None
    student_layers: int | None = None
    ltop: int | None = None
    teacher_layers: tuple[int, ...] | None = None
    depth: int | None = None
    tokens: int = 50
    token_strategy: str = "att-nosep-top"
    width: float = 1.0
    width_strategy: str = "mag"
    seed: int = 0
    max_length: int = 128
    batch_size: int = 64
    limit: int | None = None
    device: str = "auto"
    overwrite: bool = False

    # Settings that do not change what is stored.
    RUNTIME = ("device", "overwrite")

    def __post_init__(self) -> None:
        if not 0 < self.width <= 1:
            raise UserError(f"--width must be in (0, 1], got {self.width}: it is the fraction of activations kept")
        if self.tokens < 1:
            raise UserError(f"--tokens must be at least 1, got {self.tokens}")
        if self.token_strategy not in TOKEN_STRATEGIES:
            raise UserError(f"--token-strategy {self.token_strategy!r} is unknown; use one of {', '.join(TOKEN_STRATEGIES)}")
        if self.width_strategy not in WIDTH_STRATEGIES:
            raise UserError(f"--width-strategy {self.width_strategy!r} is unknown; use one of {', '.join(WIDTH_STRATEGIES)}")
        if self.device not in DEVICES:
            raise UserError(f"--device {self.device!r} is unknown; use one of {', '.join(DEVICES)}")
        if self.max_length < 2:
            raise UserError(f"--max-length must be at least 2 ([CLS] and [SEP]), got {self.max_length}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        if self.student_layers is None and self.teacher_layers is None:
            raise UserError("say which teacher layers to store: pass --student-layers L' (with --ltop) or --teacher-layers i,j,...")
        if self.student_layers is not None and self.teacher_layers is not None:
            raise UserError("pass either --student-layers or --teacher-layers, not both")
        if self.student_layers is not None and self.student_layers < 1:
            raise UserError(f"--student-layers must be at least 1, got {self.student_layers}")
        if self.out and Path(self.out).is_file():
            raise UserError(f"--out {self.out} is a file; pass a directory path for the store")

    def resolve_layers(self, num_teacher_layers: int) -> tuple[int, ...]:
        """Teacher layer for each student layer 0..L', checked against the teacher."""
        if self.teacher_layers is not None:
            layers = self.teacher_layers
            if any(i < 0 or i > num_teacher_layers for i in layers):
                raise UserError(f"--teacher-layers {layers} out of range: the teacher has layers 0..{num_teacher_layers}")
            if list(layers) != sorted(set(layers)):
                raise UserError(f"--teacher-layers must be strictly increasing, got {','.join(map(str, layers))}")
        else:
            ltop = self.ltop if self.ltop is not None else num_teacher_layers
            if not 1 <= ltop <= num_teacher_layers:
                raise UserError(f"--ltop {ltop} is above the teacher's depth {num_teacher_layers}; use 1..{num_teacher_layers}")
            layers = tuple(layer_map(self.student_layers, ltop))
        if self.depth is not None and not 1 <= self.depth <= len(layers):
            raise UserError(f"--depth {self.depth} is out of range: there are {len(layers)} student/teacher layer pairs (L'+1)")
        return tuple(layers)

    def stored_settings(self) -> dict[str, Any]:
        """The settings that define a store's content, as recorded in its attributes."""
        return {k: v for k, v in asdict(self).items() if k not in self.RUNTIME}


def load_toml(path: str) -> dict[str, Any]:
    """Settings from a TOML file; keys are flag names with - or _."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    known = {f.name for f in fields(ExtractConfig)}
    out = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise UserError(f"config file {path}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        out[name] = value
    return out


def build_config(flags: dict[str, Any], toml_path: str | None = None) -> ExtractConfig:
    """Defaults < TOML < flags (flags that were not given are None)."""
    merged = load_toml(toml_path) if toml_path else {}
    merged.update({k: v for k, v in flags.items() if v is not None})
    for key in ("text_cols", "teacher_layers"):
        if isinstance(merged.get(key), str):
            merged[key] = tuple(p.strip() for p in merged[key].split(",") if p.strip())
        if merged.get(key) is not None:
            merged[key] = tuple(merged[key])
    if merged.get("teacher_layers") is not None:
        try:
            merged["teacher_layers"] = tuple(int(i) for i in merged["teacher_layers"])
        except ValueError:
            raise UserError(f"--teacher-layers must be integers like 0,3,5, got {merged['teacher_layers']}") from None
    for key in ("teacher", "data", "out"):
        if not merged.get(key):
            raise UserError(f"--{key} is required (as a flag or in the --config file)")
    try:
        return ExtractConfig(**merged)
    except TypeError as exc:
        raise UserError(f"bad setting: {exc}") from None
