"""One stored chunk's bytes → its rows, checked: never silently wrong.

Every array of a store (schema 4) ends its codec chain with zarr v3's
`crc32c` codec, which appends the CRC-32C of the (compressed) chunk bytes.
The reader does not go through zarr's codec pipeline (docs/benchmarks.md,
reader); it checks the checksum itself (google-crc32c, the library zarr's
codec uses, at about 15 GB/s) and then decompresses with numcodecs straight
into its buffers. So a flipped byte, a truncated file or a chunk of the wrong
size is a `ChunkProblem`, never decoded values, and a missing chunk of a
complete store is one too, never zarr's fill value. `hskcache.store.group` turns a
problem into `BadChunk`, the one-line error that names the store, the array
and the chunk and says how to repair it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ZstdCodec

from hskcache.errors import UserError
from hskcache.storage.layout import CHECKSUM_BYTES  # zarr's crc32c codec: a little-endian uint32 after the chunk's bytes


# Zarr v3 compressor type -> the numcodecs codec that decodes one chunk's bytes into
# a given buffer (in the reader's own threads, straight into its window of rows). An
# array with any other codecs has no `ChunkDecoder` and is read through zarr.
DECODERS: dict[type, Callable[[], Any]] = {
    ZstdCodec: numcodecs.Zstd,
    BloscCodec: numcodecs.Blosc,
}


class ChunkProblem(ValueError):
    """What is wrong with one chunk (missing, truncated, corrupt, undecodable)."""


class BadChunk(UserError):
    """A chunk of a store that cannot be read as written: one line naming the store,
    the array and the chunk, with the repair."""

    def __init__(self, store: str, array: str, chunk: int, problem: str):
        self.store, self.array, self.chunk, self.problem = store, array, chunk, problem
        super().__init__(f"store {store}: chunk {chunk} of array {array} is {problem}; run "
                         f"`hskcache verify --store {store} --repair` and rerun its `hskcache extract` command, "
                         "or re-extract it with --overwrite")


@dataclass(frozen=True)
class ChunkDecoder:
    """How an array's chunk bytes become its values: verify the checksum, then decompress."""

    decompressor: Any | None  # a numcodecs codec; None: stored uncompressed
    checksum: bool

    @classmethod
    def of(cls, arr: zarr.Array) -> ChunkDecoder | None:
        """The decoder of an array's codec chain, or None where only zarr can read it."""
        serializer = arr.serializer
        if arr.filters or not isinstance(serializer, BytesCodec):
            return None
        if arr.dtype.itemsize > 1 and (serializer.endian is None or serializer.endian.value != "little"):
            return None
        codecs = list(arr.compressors)
        checksum = bool(codecs) and isinstance(codecs[-1], Crc32cCodec)
        codecs = codecs[:-1] if checksum else codecs
        if len(codecs) > 1:
            return None
        if not codecs:
            return cls(None, checksum)
        make = DECODERS.get(type(codecs[0]))
        return cls(make(), checksum) if make else None

    @staticmethod
    def checked(data: np.ndarray) -> np.ndarray:
        """A stored chunk's bytes without their checksum, once it matches them."""
        if len(data) < CHECKSUM_BYTES:
            raise ChunkProblem(f"truncated ({len(data)} bytes, shorter than its checksum)")
        body, stored = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
        if google_crc32c.value(body) != int.from_bytes(stored.tobytes(), "little"):
            raise ChunkProblem("corrupt or truncated (its crc32c checksum does not match)")
        return body

    def decode(self, data: bytes, out: np.ndarray) -> np.ndarray:
        """`data` (a whole chunk as stored) decoded into `out` (C-contiguous, the chunk's shape)."""
        body = np.frombuffer(data, dtype=np.uint8)
        if self.checksum:
            body = self.checked(body)
        flat = out.reshape(-1).view(np.uint8)
        if self.decompressor is None:
            if len(body) != flat.size:
                raise ChunkProblem(f"truncated or padded ({len(body)} bytes, not {flat.size})")
            flat[:] = body
            return out
        try:
            self.decompressor.decode(body, out=out)
        except (RuntimeError, ValueError) as exc:  # numcodecs: a stream that does not decode (or to another size)
            raise ChunkProblem(f"undecodable ({exc})") from None
        return out
