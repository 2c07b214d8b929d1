"""The Zarr v3 group: create, resume, commit chunks, read rows. numpy only.

Rows are written a whole chunk at a time, and a chunk counts only once its
commit marker exists: element c of the `commits` array, one object per chunk,
written after every array's rows of chunk c. So a run killed at any point
leaves committed chunks intact, and several writers (torchrun ranks, `--shard`
jobs) each commit their own chunks without waiting on one another. The store
is complete when every chunk is committed; then one writer sets
`attrs["complete"]`.

The store lives wherever `storage.Location` can reach: a local folder or an
fsspec URL (s3://, gs://, memory://, file://).

Each array's codec is named by its `layout.ArraySpec` and built from
`CODECS`; the level is the one measured in docs/design.md ("Codecs").
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec
from zarr.errors import ContainsArrayError

from .errors import UserError
from .layout import StoreShape
from .meta import StoreMeta
from .storage import Location

SCHEMA_VERSION = 3  # 2: settings `store` and `width_seed`; 3: codecs, width_code/values/compress settings
FORMAT = "hskcache"
COMMITS = "commits"  # per-chunk commit markers (uint8, one chunk per store chunk)
# docs/design.md ("Codecs"): level 1 keeps 93-100% of level 3's ratio and writes about twice as fast;
# negative levels skip entropy coding and leave fp16 values and bitmasks nearly uncompressed.
ZSTD_LEVEL = 1
BLOSC_LEVEL = 5
# Codec name (layout.ArraySpec.codec) -> the Zarr v3 compressors of an array.
CODECS: dict[str, Callable[[], list | None]] = {
    "zstd": lambda: [ZstdCodec(level=ZSTD_LEVEL)],
    # fp16 values: bit-shuffled, the sign and exponent bits of neighbouring values line
    # up and LZ4 finds them; decodes 2-3x faster than zstd for a few % more bytes
    # (docs/design.md, "Codecs"). Blosc takes the element size from the array's dtype.
    "blosc-lz4-bitshuffle": lambda: [BloscCodec(cname="lz4", clevel=BLOSC_LEVEL, shuffle="bitshuffle")],
    "none": lambda: None,
}
# Zarr v3 compressor type -> the numcodecs codec that decodes one chunk's bytes into
# a given buffer. The reader decodes whole chunks with these, in its own threads and
# straight into its window of rows, instead of through zarr's codec pipeline (its event
# loop, its own buffer, then a copy; docs/benchmarks.md, reader); an array with any
# other codecs is read through zarr.
DECODERS: dict[type, Callable[[], Any]] = {
    ZstdCodec: numcodecs.Zstd,
    BloscCodec: numcodecs.Blosc,
}


class _Raw:
    """The decoder of an array stored without a compressor."""

    @staticmethod
    def decode(data: bytes, out: np.ndarray) -> np.ndarray:
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)
        return out


def schema_error(path: str, version: Any) -> UserError:
    return UserError(f"store {path} was written with store schema {version}, this hskcache reads schema {SCHEMA_VERSION}; "
                     "re-extract it: rerun its `hskcache extract` command with --overwrite")


def _is_store(location: Location) -> bool:
    meta = location.read_json("zarr.json")
    return isinstance(meta, dict) and meta.get("attributes", {}).get("format") == FORMAT


def read_meta(attrs: dict[str, Any], url: str) -> StoreMeta:
    """A store's metadata, checked: its schema first, then every field (`StoreMeta.from_attrs`)."""
    if attrs.get("schema_version") != SCHEMA_VERSION:
        raise schema_error(url, attrs.get("schema_version"))
    return StoreMeta.from_attrs(attrs, url)


def _progress(attrs: dict[str, Any]) -> tuple[bool, int]:
    """The store's own bookkeeping: (complete, rows_committed as last recorded)."""
    return bool(attrs.get("complete")), int(attrs.get("rows_committed") or 0)


def on_disk_bytes(url: str) -> dict[str, int]:
    """Bytes of every array (chunks and metadata), from one listing of the store."""
    return _array_bytes(Location.parse(url).sizes())


def _array_bytes(sizes: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, size in sizes.items():
        name, sep, _ = key.partition("/")
        if sep and name != COMMITS:
            out[name] = out.get(name, 0) + size
    return dict(sorted(out.items()))


def committed_chunks(location: Location) -> set[int]:
    """The chunks whose commit marker exists (one fresh listing)."""
    try:
        names = location.fs.ls(location.path + f"/{COMMITS}/c", detail=False, refresh=True)
    except FileNotFoundError:
        return set()
    return {int(name.rstrip("/").rsplit("/", 1)[-1]) for name in names}


def chunk_span(num_chunks: int, part: int, parts: int) -> range:
    """The contiguous chunks writer `part` of `parts` owns (the first ones get one more when uneven)."""
    return range(part * num_chunks // parts, (part + 1) * num_chunks // parts)


class StoreWriter:
    """Commits whole chunks of a new or partially written store.

    `chunks` are the chunks this writer owns (default: all); committed ones are
    skipped. Rows may arrive in any batches (`write`); a chunk is written and
    marked once all its rows are there."""

    def __init__(self, location: Location, group: zarr.Group, shape: StoreShape, num_examples: int,
                 chunks: Iterable[int] | None = None):
        self.location = location
        self.group = group
        self.shape = shape
        self.num_examples = num_examples
        self.chunk_rows = shape.rows_per_chunk(num_examples)
        self.num_chunks = -(-num_examples // self.chunk_rows)
        done = committed_chunks(location)
        owned = range(self.num_chunks) if chunks is None else chunks
        self.todo = [c for c in owned if c not in done]
        self._pending: dict[int, tuple[int, dict[str, list[np.ndarray]]]] = {}  # chunk -> (rows held, parts)
        self._cursor = 0

    @property
    def rows_committed(self) -> int:
        return sum(self._chunk_len(c) for c in committed_chunks(self.location))

    def _chunk_len(self, chunk: int) -> int:
        return min(self.chunk_rows, self.num_examples - chunk * self.chunk_rows)

    def todo_rows(self) -> list[tuple[int, int]]:
        """The row ranges [lo, hi) still to write, one per run of consecutive chunks."""
        out: list[tuple[int, int]] = []
        for c in self.todo:
            lo, hi = c * self.chunk_rows, c * self.chunk_rows + self._chunk_len(c)
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        return out

    @staticmethod
    def check(url: str, meta: StoreMeta, overwrite: bool) -> str:
        """What opening `url` for these settings means: "new", "resume" or "replace";
        a clear error when refused. Reads only."""
        location = Location.parse(url)
        if location.is_file():
            raise UserError(f"--store {url} is a file; pass a directory path or URL for the store")
        if not _is_store(location):
            if not location.is_empty():
                raise UserError(f"--store {url} exists and is not an hskcache store; choose a new path")
            return "new"
        if overwrite:
            return "replace"
        stored = read_meta(location.read_json("zarr.json")["attributes"], url)
        if stored.identity != meta.identity:
            raise UserError(f"store {url} was written with different settings or teacher/data; "
                            "pass --overwrite to replace it or choose another --store")
        return "resume"

    @classmethod
    def create(cls, url: str, shape: StoreShape, num_examples: int, meta: StoreMeta,
               static: Mapping[str, np.ndarray], overwrite: bool) -> None:
        """Check, then create what is missing (or everything, when replacing).

        Every creator writes the same metadata, and nothing is deleted unless
        replacing, so writers that start together may all call this."""
        state = cls.check(url, meta, overwrite)
        location = Location.parse(url)
        if state == "replace":
            location.remove()
        if state == "resume":
            return
        rows = shape.rows_per_chunk(num_examples)
        group = zarr.open_group(location.zarr_store(read_only=False), mode="a", attributes={
            **meta.to_attrs(), "format": FORMAT, "schema_version": SCHEMA_VERSION, "rows_committed": 0, "complete": False})
        arrays = [dict(name=spec.name, shape=(num_examples, *spec.row_shape), chunks=(rows, *spec.row_shape),
                       dtype=spec.dtype, fill_value=spec.fill, compressors=CODECS[spec.codec]())
                  for spec in shape.arrays()]
        arrays.append(dict(name=COMMITS, shape=(-(-num_examples // rows),), chunks=(1,), dtype=np.uint8,
                           fill_value=0, compressors=None))
        for spec in arrays:
            try:
                group.create_array(**spec, config={"write_empty_chunks": True})
            except ContainsArrayError:  # another writer made it first
                pass
        for spec in shape.static_arrays():  # `static`: their data, by name
            try:
                group.create_array(spec.name, data=np.asarray(static[spec.name], dtype=spec.dtype),
                                   compressors=CODECS[spec.codec]())
            except ContainsArrayError:
                pass

    @classmethod
    def open(cls, url: str, shape: StoreShape, num_examples: int, meta: StoreMeta,
             static: Mapping[str, np.ndarray], overwrite: bool, chunks: Iterable[int] | None = None) -> StoreWriter:
        """Resume a store with identical settings, else create one (refusing to clobber): one writer alone."""
        cls.create(url, shape, num_examples, meta, static, overwrite)
        return cls.attach(url, shape, num_examples, chunks)

    @classmethod
    def attach(cls, url: str, shape: StoreShape, num_examples: int, chunks: Iterable[int] | None = None) -> StoreWriter:
        """Open a store that `create` made, to write `chunks` of it."""
        location = Location.parse(url)
        return cls(location, zarr.open_group(location.zarr_store(read_only=False), mode="r+"), shape,
                   num_examples, chunks)

    def write(self, start: int, rows: dict[str, np.ndarray]) -> None:
        """Rows start..start+n (in the store's dtypes); those of this writer's pending
        chunks are kept, and every chunk that is now whole is committed."""
        n = len(next(iter(rows.values())))
        todo = set(self.todo)
        for c in range(start // self.chunk_rows, -(-(start + n) // self.chunk_rows)):
            if c not in todo:
                continue
            held, parts = self._pending.get(c, (0, {}))
            lo = max(start, c * self.chunk_rows + held)  # rows already held are not taken twice
            hi = min(start + n, c * self.chunk_rows + self._chunk_len(c))
            if lo >= hi:
                continue
            if lo != c * self.chunk_rows + held:
                raise ValueError(f"rows of chunk {c} must arrive in order: expected row {c * self.chunk_rows + held}")
            for name, value in rows.items():
                parts.setdefault(name, []).append(value[lo - start:hi - start])
            self._pending[c] = (held + hi - lo, parts)
            if held + hi - lo == self._chunk_len(c):
                self._commit(c, {name: np.concatenate(p) for name, p in parts.items()})

    def append(self, rows: dict[str, np.ndarray]) -> None:
        """Rows in order from the first row (one writer of a whole store)."""
        self.write(self._cursor, rows)
        self._cursor += len(next(iter(rows.values())))

    def _commit(self, chunk: int, block: dict[str, np.ndarray]) -> None:
        lo = chunk * self.chunk_rows
        for name, value in block.items():
            self.group[name].with_config({"write_empty_chunks": True})[lo:lo + len(value)] = value
        self.group[COMMITS][chunk] = 1  # after every array's rows: the chunk counts from here on
        del self._pending[chunk]
        self.todo.remove(chunk)

    def finish(self) -> bool:
        """Mark the store complete if every chunk is committed (by any writer); whether it is."""
        if len(committed_chunks(self.location)) < self.num_chunks:
            return False
        self.group.attrs.update({"rows_committed": self.num_examples, "complete": True})
        return True


class StoreData:
    """Read-only numpy access to a complete store."""

    def __init__(self, url: str):
        location = Location.parse(url)
        if not location.exists():
            raise UserError(f"store {url} does not exist")
        if not _is_store(location):
            raise UserError(f"{url} is not an hskcache store (no hskcache zarr.json); run `hskcache extract` first")
        self.location = location
        self.group = zarr.open_group(location.zarr_store(read_only=True), mode="r")
        attrs = dict(self.group.attrs)
        self.meta = read_meta(attrs, url)
        if not _progress(attrs)[0]:
            raise UserError(
                f"store {url} is incomplete ({_rows_committed(location, attrs, self.meta)}/{self.meta.num_examples} "
                "rows); rerun the same `hskcache extract` command to finish it"
            )
        self.arrays = {name: self.group[name] for name in self.group.array_keys() if name != COMMITS}
        self._decoders = {name: self._decoder(arr) for name, arr in self.arrays.items()}
        self._dtypes = {name: np.dtype(arr.dtype).newbyteorder("<") for name, arr in self.arrays.items()}

    @property
    def num_examples(self) -> int:
        return self.meta.num_examples

    @property
    def chunk_rows(self) -> int:
        return int(self.arrays["values"].chunks[0])

    def read(self, names: list[str], rows: np.ndarray | slice) -> dict[str, np.ndarray]:
        """Rows of the named arrays through zarr: a slice, or an index array (random access)."""
        sel = rows if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        return {name: self.arrays[name].get_orthogonal_selection((sel,) + (slice(None),) * (self.arrays[name].ndim - 1))
                for name in names}

    def row_layout(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape of one row, dtype) of an array as `read_chunk` returns it."""
        return tuple(self.arrays[name].shape[1:]), self._dtypes[name]

    def read_chunk(self, names: list[str], chunk: int, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The rows of chunk `chunk` of the named arrays, each chunk decoded once: into
        `out[name]` where given (C-contiguous, the whole chunk's shape), else a new buffer.

        The chunks' bytes are fetched with one fsspec `cat` (on an object store its
        requests are in flight together) and decoded by `DECODERS`, in the caller's
        thread; an array whose codecs have no decoder there (or a chunk never written)
        is read through zarr."""
        out = out or {}
        lo = chunk * self.chunk_rows
        hi = min(lo + self.chunk_rows, self.num_examples)
        keys = {name: self._chunk_key(name, chunk) for name in names if self._decoders[name]}
        fetched = self.location.cat(list(keys.values()))
        result = {}
        for name in names:
            arr = self.arrays[name]
            data = fetched.get(keys.get(name))
            if isinstance(data, bytes):
                target = out[name] if name in out else np.empty(arr.chunks, dtype=self._dtypes[name])
                self._decoders[name].decode(data, out=target)
                result[name] = target[:hi - lo]
            elif name in out:
                out[name][:hi - lo] = arr[lo:hi]
                result[name] = out[name][:hi - lo]
            else:
                result[name] = arr[lo:hi]
        return result

    def _chunk_key(self, name: str, chunk: int) -> str:
        """The file of an array's chunk, relative to the store's root (zarr's chunk key encoding)."""
        arr = self.arrays[name]
        return f"{name}/{arr.metadata.encode_chunk_key((chunk,) + (0,) * (arr.ndim - 1))}"

    @staticmethod
    def _decoder(arr: zarr.Array) -> Any:
        """The decoder of an array's chunks (`DECODERS`), or None: read through zarr."""
        serializer = arr.serializer
        if arr.filters or not isinstance(serializer, BytesCodec) or len(arr.compressors) > 1:
            return None
        if arr.dtype.itemsize > 1 and (serializer.endian is None or serializer.endian.value != "little"):
            return None
        if not arr.compressors:
            return _Raw()
        make = DECODERS.get(type(arr.compressors[0]))
        return make() if make else None

    def static_dims(self) -> np.ndarray | None:
        return self.arrays["static_dims"][:] if "static_dims" in self.arrays else None


def _rows_committed(location: Location, attrs: dict[str, Any], meta: StoreMeta) -> int:
    """Rows in committed chunks (all rows once complete)."""
    n = meta.num_examples
    group = zarr.open_group(location.zarr_store(read_only=True), mode="r")
    complete, recorded = _progress(attrs)
    if complete or COMMITS not in group:
        return recorded
    rows = int(group["values"].chunks[0])
    return sum(min(rows, n - c * rows) for c in committed_chunks(location))


def describe(url: str) -> dict[str, Any]:
    """What `hskcache inspect` prints; works on incomplete stores too."""
    location = Location.parse(url)
    if not _is_store(location):
        raise UserError(f"{url} is not an hskcache store; run `hskcache extract` first")
    attrs = dict(zarr.open_group(location.zarr_store(read_only=True), mode="r").attrs)
    meta = read_meta(attrs, url)
    sizes = location.sizes()
    return {
        "path": str(url),
        "complete": _progress(attrs)[0],
        "rows_committed": _rows_committed(location, attrs, meta),
        "num_examples": meta.num_examples,
        "teacher": meta.teacher,
        "teacher_layers": list(meta.teacher_layers),
        "schema_version": SCHEMA_VERSION,
        "width_encoding": meta.width_encoding,
        "config": meta.to_attrs()["config"],
        "bytes": _array_bytes(sizes),
        "total_bytes": sum(sizes.values()),
    }
