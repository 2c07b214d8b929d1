"""The store's arrays and their bytes, computed once for the writer and the budget.

Every array is chunked along examples only, with one row count per chunk
shared by all arrays, so the *uncompressed* bytes are exactly chunks × chunk
bytes and `hskcache budget --plan` predicts them before anything is
extracted. Each array names its codec (a key of `store.CODECS`); by default
every array is zstd-compressed (`--compress none` turns that off, and then
the bytes on disk are the plan, plus a 4-byte checksum per chunk). The arrays are the knowledge kinds'
(`hskcache.kinds.KINDS`, each listing its `ArraySpec`s).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from . import widthcode
from .errors import UserError
from .selection import WIDTH_STRATEGIES, kept_width

# Raw bytes of one chunk of the largest array. Large chunks amortise the
# per-chunk cost of reading (about 0.5 ms per array and chunk in zarr) at
# BERT-base sizes; a reader holds a window of a few chunks.
CHUNK_TARGET_BYTES = 8 * 1024 * 1024
# Every chunk of every array ends with its CRC-32C (zarr's crc32c codec, hskcache.chunks); the
# byte arithmetic below counts the data, so a chunk file is its data plus these bytes.
CHECKSUM_BYTES = 4

if TYPE_CHECKING:
    from .kinds.relation import RelationSpec
    from .meta import StoreMeta

VALUE_FORMATS = ("fp16", "int8")  # int8: per-vector absmax scale, stored as fp16
COMPRESSIONS = ("zstd", "none")
INT8_MAX = 127
MAX_LENGTH = int(np.iinfo(np.int16).max)  # `length` and `positions` are int16


def narrow(values: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """`values` as the integer `dtype`, refusing what it cannot hold (a silent wrap corrupts the store)."""
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        bad = values.max() if values.max() > info.max else values.min()
        raise UserError(f"{what} {bad} does not fit the store's {np.dtype(dtype).name}; "
                        "this is a bug in sizing the store, please report it")
    return values.astype(dtype)


@dataclass(frozen=True)
class ArraySpec:
    """One stored array: per row (first axis: examples), or once per store (`Kind.static_arrays`,
    where `row_shape` is the whole shape)."""

    name: str
    row_shape: tuple[int, ...]
    dtype: np.dtype
    group: str  # budget group (a kind's `groups`: "inputs", "logits", "positions", "values", "mask", ...)
    codec: str = "zstd"  # key of store.CODECS
    fill: int = 0
    content: str = ""  # what its bytes hold, when the name alone does not say (e.g. "values/int8"): the
    # key of its measured compression ratio in `budget.DISK_RATIOS`

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @property
    def ratio_key(self) -> str:
        return self.content or self.name


@dataclass(frozen=True)
class StoreShape:
    """Everything that fixes the store's array shapes and codecs."""

    seq_len: int
    vocab_size: int
    num_logits: int
    regression: bool
    depth: int
    tokens: int
    hidden: int
    width: float
    width_strategy: str
    width_code: str = widthcode.DEFAULT
    values: str = "fp16"
    compress: str = "zstd"
    relations: RelationSpec | None = None  # attention / value-relation arrays (hskcache.kinds.relation)

    @classmethod
    def of_store(cls, meta: StoreMeta) -> "StoreShape":
        """The shape a store's metadata records."""
        cfg = meta.config
        return cls(cfg.max_length, meta.tokenizer.vocab_size, meta.num_labels, meta.regression, cfg.depth,
                   cfg.tokens, meta.hidden_size, cfg.width, cfg.width_strategy, cfg.width_code, cfg.values,
                   cfg.compress, meta.relations)

    @property
    def kept(self) -> int:
        return kept_width(self.width, self.hidden)

    @property
    def width_encoding(self) -> str | None:
        """How per-vector kept dimensions are coded (None: nothing per vector)."""
        if WIDTH_STRATEGIES[self.width_strategy].static or self.kept == self.hidden:
            return None
        return self.width_code

    def arrays(self) -> list[ArraySpec]:
        """Per-row arrays (first axis: examples) in writing order: every stored kind's
        (`kinds.KINDS`), an array shared by kinds once."""
        from .kinds import KINDS  # the kinds build on this module's ArraySpec

        specs = list({a.name: a for kind in KINDS.values() for a in kind.arrays(self)}.values())
        if self.compress == "none":
            specs = [replace(s, codec="none") for s in specs]
        return specs

    def static_arrays(self) -> list[ArraySpec]:
        """Arrays stored once per store, not per row (e.g. the HSK's static rand/uniform dimensions)."""
        from .kinds import KINDS

        return [a for kind in KINDS.values() for a in kind.static_arrays(self)]

    def static_bytes(self) -> int:
        return sum(a.row_bytes for a in self.static_arrays())

    def rows_per_chunk(self, num_examples: int | None = None) -> int:
        """About CHUNK_TARGET_BYTES for the largest array; no more rows than the store has."""
        largest = max(a.row_bytes for a in self.arrays())
        rows = max(1, CHUNK_TARGET_BYTES // largest)
        return rows if num_examples is None else max(1, min(rows, num_examples))

    def bytes_by_array(self, num_examples: int) -> dict[str, int]:
        """Exact uncompressed bytes of chunk data (edge chunks are written whole); each chunk
        file adds its CHECKSUM_BYTES."""
        rows = self.rows_per_chunk(num_examples)
        padded = math.ceil(num_examples / rows) * rows
        return {a.name: padded * a.row_bytes for a in self.arrays()} | {a.name: a.row_bytes for a in self.static_arrays()}

    def specs(self) -> dict[str, ArraySpec]:
        """Every stored array by name, per row and per store."""
        return {a.name: a for a in self.arrays() + self.static_arrays()}

    def groups(self) -> dict[str, str]:
        """Array name -> budget group."""
        return {name: a.group for name, a in self.specs().items()}

    def bytes_by_group(self, num_examples: int) -> dict[str, int]:
        """Uncompressed bytes per budget group: every kind's groups (the report's columns), stored or not."""
        from .kinds import KINDS

        groups = self.groups()
        out = dict.fromkeys((g for kind in KINDS.values() for g in kind.groups), 0)
        for name, nbytes in self.bytes_by_array(num_examples).items():
            out[groups[name]] = out.get(groups[name], 0) + nbytes
        return out
