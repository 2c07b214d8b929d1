"""The store's arrays and their bytes, computed once for the writer and the budget.

Every array is uncompressed and chunked along examples only, with one row
count per chunk shared by all arrays, so the bytes on disk are exactly
chunks × chunk bytes and `hskcache budget --plan` predicts them before
anything is extracted. `tools/bench/compression.py` measures what that
leaves on the table (docs/benchmarks.md): zstd saves 20-30% of the fp16
values (mostly the zero slots of examples shorter than N^L) and about 20% of
the width codes, decoding at about 500 MB/s; the inputs compress 3x but
are small next to the HSK.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import widthcode

CHUNK_TARGET_BYTES = 2 * 1024 * 1024
WIDTH_STRATEGIES = ("mag", "rand", "uniform")


def round_half_up(x: float) -> int:
    """Python's round() is banker's rounding; SPEC.md rounds half up."""
    return int(math.floor(x + 0.5))


def kept_width(width: float, hidden: int) -> int:
    """K = round(N^W × d_T), at least one activation."""
    return max(1, min(hidden, round_half_up(width * hidden)))


@dataclass(frozen=True)
class ArraySpec:
    name: str
    row_shape: tuple[int, ...]
    dtype: np.dtype
    group: str  # "inputs", "logits", "positions", "values", "mask"

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class StoreShape:
    """Everything that fixes the store's array shapes."""

    seq_len: int
    vocab_size: int
    num_logits: int
    regression: bool
    depth: int
    tokens: int
    hidden: int
    width: float
    width_strategy: str

    @property
    def kept(self) -> int:
        return kept_width(self.width, self.hidden)

    @property
    def width_encoding(self) -> str | None:
        """How per-vector kept dimensions are coded (None: nothing per vector)."""
        if self.width_strategy != "mag" or self.kept == self.hidden:
            return None
        return widthcode.choose_encoding(self.hidden, self.kept)

    def arrays(self) -> list[ArraySpec]:
        """Per-row arrays (first axis: examples) in writing order."""
        ids = np.uint16 if self.vocab_size <= 65536 else np.int32
        specs = [
            ArraySpec("input_ids", (self.seq_len,), np.dtype(ids), "inputs"),
            ArraySpec("length", (), np.dtype(np.int16), "inputs"),
            ArraySpec("token_type_ids", (self.seq_len,), np.dtype(np.uint8), "inputs"),
            ArraySpec("labels", (), np.dtype(np.float32 if self.regression else np.int64), "inputs"),
            ArraySpec("example_id", (), np.dtype(np.int64), "inputs"),
            ArraySpec("logits", (self.num_logits,), np.dtype(np.float32), "logits"),
            ArraySpec("positions", (self.depth, self.tokens), np.dtype(np.int16), "positions"),
            ArraySpec("values", (self.depth, self.tokens, self.kept), np.dtype(np.float16), "values"),
        ]
        if self.width_encoding is not None:
            nbytes = widthcode.code_bytes(self.width_encoding, self.hidden, self.kept)
            specs.append(ArraySpec("width_code", (self.depth, self.tokens, nbytes), np.dtype(np.uint8), "mask"))
        return specs

    def static_bytes(self) -> int:
        """Bytes stored once per store (the static rand/uniform dimensions)."""
        return 4 * self.kept if self.width_strategy in ("rand", "uniform") and self.kept < self.hidden else 0

    def rows_per_chunk(self, num_examples: int | None = None) -> int:
        """About CHUNK_TARGET_BYTES for the largest array; no more rows than the store has."""
        largest = max(a.row_bytes for a in self.arrays())
        rows = max(1, CHUNK_TARGET_BYTES // largest)
        return rows if num_examples is None else max(1, min(rows, num_examples))

    def bytes_by_array(self, num_examples: int) -> dict[str, int]:
        """Exact bytes of chunk data on disk (edge chunks are written whole)."""
        rows = self.rows_per_chunk(num_examples)
        padded = math.ceil(num_examples / rows) * rows
        out = {a.name: padded * a.row_bytes for a in self.arrays()}
        if self.static_bytes():
            out["static_dims"] = self.static_bytes()
        return out

    def bytes_by_group(self, num_examples: int) -> dict[str, int]:
        groups = {a.name: a.group for a in self.arrays()} | {"static_dims": "mask"}
        out = {"inputs": 0, "logits": 0, "positions": 0, "values": 0, "mask": 0}
        for name, nbytes in self.bytes_by_array(num_examples).items():
            out[groups[name]] += nbytes
        return out
