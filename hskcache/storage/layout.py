"""The rules of a store's arrays and their bytes (`ArraySpec`), shared by the writer and the budget.

Every array is chunked along examples only, with one row count per chunk
shared by all arrays, so the *uncompressed* bytes are exactly chunks × chunk
bytes and `hskcache budget --plan` predicts them before anything is
extracted (`hskcache.store.shape.StoreShape` lists a store's arrays; this module is a leaf). Each array names its codec (a key of `store.group.CODECS`); by default
every array is zstd-compressed (`--compress none` turns that off, and then
the bytes on disk are the plan, plus a 4-byte checksum per chunk). The arrays are the knowledge kinds'
(`hskcache.kinds.KINDS`, each listing its `ArraySpec`s).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hskcache.errors import UserError

# Raw bytes of one chunk of the largest array. Large chunks amortise the
# per-chunk cost of reading (about 0.5 ms per array and chunk in zarr) at
# BERT-base sizes; a reader holds a window of a few chunks.
CHUNK_TARGET_BYTES = 8 * 1024 * 1024
# Every chunk of every array ends with its CRC-32C (zarr's crc32c codec, hskcache.storage.chunks); the
# byte arithmetic below counts the data, so a chunk file is its data plus these bytes.
CHECKSUM_BYTES = 4

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
    codec: str = "zstd"  # key of store.group.CODECS
    fill: int = 0
    disk_ratio: float = 1.0  # raw / on-disk bytes with its codec, measured on real stores by
    # `python tools/bench/compression.py --store STORE` (docs/benchmarks.md, "Compression"): what
    # `hskcache budget` estimates a planned store's disk bytes with; 1.0 where none was measured

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


_UNITS = ("B", "KiB", "MiB", "GiB")


def human(nbytes: int) -> str:
    """Binary units up to GiB (the paper's Table 3 is in GiB, even at 1011)."""
    value, unit = float(nbytes), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f} {_UNITS[unit]}"
