"""The Zarr v3 group: create, resume, commit chunks, read rows. numpy only.

Rows are written a whole chunk at a time, and a chunk counts only once its
commit marker exists: element c of the `commits` array, one object per chunk,
written after every array's rows of chunk c. So a run killed at any point
leaves committed chunks intact, and several writers (torchrun ranks, `--shard`
jobs) each commit their own chunks without waiting on one another. The store
is complete when every chunk is committed; then one writer sets
`attrs["complete"]`.

The store lives wherever `storage.backends.Location` can reach: a local folder or an
fsspec URL (s3://, gs://, memory://, file://).

Each array's codec is named by its `layout.ArraySpec` and built from
`CODECS`; the level is the one measured in docs/design.md ("Codecs").
"""
from __future__ import annotations

import functools

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.errors import ContainsArrayAndGroupError, ContainsArrayError, ContainsGroupError

from hskcache.storage.chunks import BadChunk, ChunkDecoder, ChunkProblem
from hskcache.errors import UserError
from hskcache.kinds import KINDS, Student
from hskcache.store.shape import StoreShape, estimated_disk
from hskcache.store.meta import StoreMeta
from hskcache.storage.backends import Location, faults
from hskcache.storage.layout import human

SCHEMA_VERSION = 6  # 2: settings `store` and `width_seed`; 3: codecs, width_code/values/compress settings;
# 4: a crc32c checksum on every chunk (hskcache.storage.chunks); 5: each knowledge kind's settings and record under
# its name (`config.kinds`, `kinds`; were the flat att_* settings and `relations`); 6: task-agnostic stores
# (`general`, `corpus`; no logits or labels arrays, which a schema-5 reader would take for damage)
# Older schemas this one reads, each with what its attributes lack (a schema-5 store is a task store).
UPGRADES: dict[int, dict[str, Any]] = {5: {"general": False, "corpus": None}}
FORMAT = "hskcache"
COMMITS = "commits"  # per-chunk commit markers (uint8, one chunk per store chunk)
# docs/design.md ("Codecs"): level 1 keeps 93-100% of level 3's ratio and writes about twice as fast;
# negative levels skip entropy coding and leave fp16 values and bitmasks nearly uncompressed.
ZSTD_LEVEL = 1
BLOSC_LEVEL = 5
# Codec name (layout.ArraySpec.codec) -> the Zarr v3 compressor of an array (none: stored raw).
CODECS: dict[str, Callable[[], list]] = {
    "zstd": lambda: [ZstdCodec(level=ZSTD_LEVEL)],
    # fp16 values: bit-shuffled, the sign and exponent bits of neighbouring values line
    # up and LZ4 finds them; decodes 2-3x faster than zstd for a few % more bytes
    # (docs/design.md, "Codecs"). Blosc takes the element size from the array's dtype.
    "blosc-lz4-bitshuffle": lambda: [BloscCodec(cname="lz4", clevel=BLOSC_LEVEL, shuffle="bitshuffle")],
    "none": lambda: [],
}


def compressors(codec: str) -> list:
    """An array's bytes-to-bytes codecs: its compressor (`CODECS`), then zarr's crc32c
    checksum of the stored bytes, which every reader verifies (`hskcache.storage.chunks`)."""
    return [*CODECS[codec](), Crc32cCodec()]


def schema_error(path: str, version: Any) -> UserError:
    readable = ", ".join(map(str, [*UPGRADES, SCHEMA_VERSION]))
    return UserError(f"store {path} was written with store schema {version}, this hskcache reads schemas {readable} "
                     "(a checksum on every chunk; each kind's settings under its name); re-extract it: rerun its "
                     "`hskcache extract` command with --overwrite")


def corrupt_metadata(url: str, name: str, fix: str) -> UserError:
    return UserError(f"store {url}: its metadata file {name} is corrupt; {fix}")


def _is_store(location: Location) -> bool:
    """Whether the root's zarr.json is an hskcache group's; one that is there but unreadable is corrupt."""
    raw = location.read_bytes("zarr.json")
    if raw is None:
        return False
    try:
        meta = json.loads(raw)
    except ValueError:
        raise corrupt_metadata(location.url, "zarr.json", f"remove {location.url} and rerun its `hskcache extract` "
                               "command (the store cannot be resumed without it)") from None
    return isinstance(meta, dict) and meta.get("attributes", {}).get("format") == FORMAT


def open_arrays(location: Location, read_only: bool = True) -> tuple[zarr.Group, dict[str, zarr.Array]]:
    """The store's group and every array in it; arrays whose zarr.json is missing or corrupt
    are one line naming them."""
    group = zarr.open_group(location.zarr_store(read_only=read_only), mode="r" if read_only else "r+")
    arrays, bad = {}, []
    for name in location.folders():
        try:
            arrays[name] = group[name]
        except (ValueError, KeyError, TypeError):  # zarr: no zarr.json, JSON that does not parse, or lacks a field
            bad.append(f"{name}/zarr.json")
    if bad:
        raise corrupt_metadata(location.url, ", ".join(bad), "rerun its `hskcache extract` command, which writes "
                               "an array's metadata again from the store's settings")
    return group, arrays


def existing_store(url: str) -> Location:
    """The location of an existing hskcache store; one line saying why not otherwise."""
    location = Location.parse(url)
    if not location.exists():
        bucket = location.missing_bucket()
        raise UserError(f"store {url} does not exist" + (f": its bucket {bucket} does not exist; create the bucket "
                                                          "or fix the URL" if bucket else ""))
    if not _is_store(location):
        raise UserError(f"{url} is not an hskcache store (no hskcache zarr.json); run `hskcache extract` first")
    return location


def read_meta(attrs: dict[str, Any], url: str) -> StoreMeta:
    """A store's metadata, checked: its schema first (an older one it reads gets what it lacks,
    `UPGRADES`), then every field (`StoreMeta.from_attrs`)."""
    version = attrs.get("schema_version")
    if not (version == SCHEMA_VERSION or isinstance(version, int) and version in UPGRADES):
        raise schema_error(url, version)
    return StoreMeta.from_attrs(UPGRADES.get(version, {}) | attrs, url)


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


# What zarr raises when another writer created the node first (a group, an array, or the file itself).
ALREADY_EXISTS = (ContainsGroupError, ContainsArrayError, ContainsArrayAndGroupError, FileExistsError)


def _created(make: Callable[[], Any]) -> None:
    """Create a node unless another writer already has: every writer creates the same metadata."""
    try:
        make()
    except ALREADY_EXISTS:
        pass


def _group(location: Location, attrs: dict[str, Any]) -> zarr.Group:
    """The store's group: created with `attrs`, or opened as it is (resumed, or another writer made it
    first), so a store's bookkeeping is never reset by a writer that starts later."""
    store = location.zarr_store(read_only=False)
    try:
        return zarr.create_group(store, attributes=attrs, overwrite=False)
    except ALREADY_EXISTS:
        return zarr.open_group(store, mode="r+")


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

    def _chunk_len(self, chunk: int) -> int:
        return rows_in((chunk,), self.chunk_rows, self.num_examples)

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
            if location.is_empty():
                return "new"
            if not _is_store(location):  # a second look: another writer may have created it meanwhile
                raise UserError(f"--store {url} exists and is not an hskcache store; choose a new path")
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
        with faults(url):
            state = cls.check(url, meta, overwrite)
            location = Location.parse(url)
            if state == "replace":
                location.remove()
            group = _group(location, {**meta.to_attrs(), "format": FORMAT, "schema_version": SCHEMA_VERSION,
                                      "rows_committed": 0, "complete": False})
            rows = shape.rows_per_chunk(num_examples)
            arrays = [dict(name=spec.name, shape=(num_examples, *spec.row_shape), chunks=(rows, *spec.row_shape),
                           dtype=spec.dtype, fill_value=spec.fill, compressors=compressors(spec.codec))
                      for spec in shape.arrays()]
            arrays.append(dict(name=COMMITS, shape=(-(-num_examples // rows),), chunks=(1,), dtype=np.uint8,
                               fill_value=0, compressors=compressors("none")))
            for spec in arrays:
                _created(lambda: group.create_array(**spec, config={"write_empty_chunks": True}))
            for spec in shape.static_arrays():  # `static`: their data, by name; written where a chunk is missing
                data = np.asarray(static[spec.name], dtype=spec.dtype)
                _created(lambda: group.create_array(spec.name, shape=data.shape, dtype=data.dtype,
                                                    compressors=compressors(spec.codec)))
                arr = group[spec.name]
                if any(not location.exists(chunk_key(arr, spec.name, c)) for c in range(num_chunks(arr))):
                    arr[:] = data
            open_arrays(location, read_only=False)  # a resumed store's array metadata must read back

    @classmethod
    def attach(cls, url: str, shape: StoreShape, num_examples: int, chunks: Iterable[int] | None = None) -> StoreWriter:
        """Open a store that `create` made, to write `chunks` of it."""
        with faults(url):
            location = Location.parse(url)
            return cls(location, zarr.open_group(location.zarr_store(read_only=False), mode="r+"), shape,
                       num_examples, chunks)

    def write(self, start: int, rows: dict[str, np.ndarray]) -> None:
        """Rows start..start+n (in the store's dtypes); those of this writer's pending
        chunks are kept, and every chunk that is now whole is committed."""
        with faults(self.location.url, self._space_left):
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

    def _space_left(self) -> str:
        """About how much more the chunks still to write take on disk (said when the disk is full)."""
        raw = {a.name: len(self.todo) * self.chunk_rows * a.row_bytes for a in self.shape.arrays()}
        return (f"about {human(sum(estimated_disk(self.shape, raw).values()))} more is needed for the "
                f"{len(self.todo)} chunks of rows left, at the measured compression ratios")

    def _commit(self, chunk: int, block: dict[str, np.ndarray]) -> None:
        lo = chunk * self.chunk_rows
        for name, value in block.items():
            self.group[name].with_config({"write_empty_chunks": True})[lo:lo + len(value)] = value
        self.group[COMMITS][chunk] = 1  # after every array's rows: the chunk counts from here on
        del self._pending[chunk]
        self.todo.remove(chunk)

    def finish(self) -> bool:
        """Mark the store complete if every chunk is committed (by any writer); whether it is."""
        with faults(self.location.url):
            if len(committed_chunks(self.location)) < self.num_chunks:
                return False
            self.group.attrs.update({"rows_committed": self.num_examples, "complete": True})
            return True


class StoreData:
    """Read-only numpy access to a store's rows, every chunk checked (`hskcache.storage.chunks`):
    a complete store, or with `complete=False` (`hskcache verify`) a partial one."""

    def __init__(self, url: str, complete: bool = True):
        with faults(url):
            location = existing_store(url)
            self.group, arrays = open_arrays(location)
            attrs = dict(self.group.attrs)
        self.url = url
        self.location = location
        self.meta = read_meta(attrs, url)
        self.complete = _progress(attrs)[0]
        if complete and not self.complete:
            raise UserError(
                f"store {url} is incomplete ({_rows_committed(location, attrs, self.meta)}/{self.meta.num_examples} "
                "rows); rerun the same `hskcache extract` command to finish it"
            )
        self.shape = shape = StoreShape.of_store(self.meta)  # once: the readers and `verify` use it
        # a reader needs every array; `hskcache verify` reports them
        gone = [n for n in [COMMITS, *([a.name for a in shape.arrays() + shape.static_arrays()] if complete else [])]
                if n not in arrays]
        if gone:
            raise UserError(f"store {url}: the array{'s' if len(gone) > 1 else ''} {', '.join(gone)} "
                            f"(its folder) is missing; run `hskcache verify --store {url} --repair`, then rerun its "
                            "`hskcache extract` command")
        self.commits = arrays.pop(COMMITS)
        self.arrays = arrays
        every = {**arrays, COMMITS: self.commits}
        self._decoders = {name: ChunkDecoder.of(arr) for name, arr in every.items()}
        self._dtypes = {name: np.dtype(arr.dtype).newbyteorder("<") for name, arr in every.items()}

    @property
    def num_examples(self) -> int:
        return self.meta.num_examples

    @functools.cached_property
    def chunk_rows(self) -> int:
        return chunk_rows(self.arrays, self.shape)

    def _array(self, name: str) -> zarr.Array:
        return self.commits if name == COMMITS else self.arrays[name]

    def read(self, names: list[str], rows: np.ndarray | slice) -> dict[str, np.ndarray]:
        """Rows of the named per-row arrays: a slice, or an index array (random access);
        each chunk they fall in is read once, checked (`read_chunk`)."""
        idx = np.arange(self.num_examples)[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        out = {name: np.empty((len(idx), *self.arrays[name].shape[1:]), dtype=self._dtypes[name]) for name in names}
        chunk_of = idx // self.chunk_rows
        order = np.argsort(chunk_of, kind="stable")  # positions grouped by chunk: one pass, not one scan per chunk
        chunks, starts = np.unique(chunk_of[order], return_index=True)
        for chunk, at in zip(chunks.tolist(), np.split(order, starts[1:])):
            block = self.read_chunk(names, chunk)
            for name in names:
                out[name][at] = block[name][idx[at] - chunk * self.chunk_rows]
        return out

    def row_layout(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape of one row, dtype) of an array as `read_chunk` returns it."""
        return tuple(self.arrays[name].shape[1:]), self._dtypes[name]

    def read_chunk(self, names: list[str], chunk: int, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The rows of chunk `chunk` of the named arrays, each chunk decoded once: into
        `out[name]` where given (C-contiguous, the whole chunk's shape), else a new buffer.

        The chunks' bytes are fetched with one fsspec `cat` (on an object store its
        requests are in flight together), checked and decoded by their `ChunkDecoder`
        in the caller's thread (an array without one is read through zarr). A chunk
        that is missing, truncated or corrupt raises `BadChunk`, never fill values."""
        result, problems = self.load_chunk(names, chunk, out or {})
        for name, problem in problems.items():
            raise BadChunk(self.url, name, chunk, problem)
        return result

    def load_chunk(self, names: list[str], chunk: int, out: dict[str, np.ndarray] | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """(decoded rows, what is wrong with the others) of chunk `chunk` of the named
        arrays (`commits` included): `read_chunk` without raising, for `hskcache verify`."""
        out = out or {}
        keys = {name: chunk_key(self._array(name), name, chunk) for name in names}
        with faults(self.url):
            fetched = self.location.cat(list(keys.values()))
        result, problems = {}, {}
        for name in names:
            arr, data = self._array(name), fetched[keys[name]]
            lo = chunk * arr.chunks[0]
            hi = min(lo + arr.chunks[0], arr.shape[0])
            if isinstance(data, FileNotFoundError):
                problems[name] = "missing"
                continue
            if isinstance(data, Exception):  # not a missing file: the storage failed
                with faults(self.url):
                    raise data
            target = out[name] if name in out else np.empty(arr.chunks, dtype=self._dtypes[name])
            try:
                if self._decoders[name] is not None:
                    self._decoders[name].decode(data, target)
                else:  # a codec chain only zarr decodes (it verifies the crc32c itself)
                    target[:hi - lo] = arr[lo:hi]
            except (ChunkProblem, ValueError, RuntimeError) as exc:
                problems[name] = str(exc) if isinstance(exc, ChunkProblem) else f"unreadable ({exc})"
                continue
            result[name] = target[:hi - lo]
        return result, problems

    def static_dims(self) -> np.ndarray | None:
        """The static rand/uniform dimensions (a once-per-store array), checked like every chunk."""
        if "static_dims" not in self.arrays:
            return None
        arr = self.arrays["static_dims"]
        return np.concatenate([self.read_chunk(["static_dims"], c)["static_dims"]
                               for c in range(num_chunks(arr))])


def num_chunks(arr: zarr.Array) -> int:
    """Chunks of an array chunked along its first axis only (every array of a store)."""
    return -(-arr.shape[0] // arr.chunks[0])


def chunk_key(arr: zarr.Array, name: str, chunk: int) -> str:
    """The file of an array's chunk, relative to the store's root (zarr's chunk key encoding)."""
    return f"{name}/{arr.metadata.encode_chunk_key((chunk,) + (0,) * (arr.ndim - 1))}"


def chunk_rows(arrays: Mapping[str, zarr.Array] | zarr.Group, shape: StoreShape) -> int:
    """Rows per chunk, shared by every per-row array: read from the first one present, since a damaged
    store (`hskcache verify`) may have lost any of them."""
    for spec in shape.arrays():
        if spec.name in arrays:
            return int(arrays[spec.name].chunks[0])
    raise UserError("no per-row array is left in the store; extract it again")


def rows_in(chunks: Iterable[int], chunk_rows: int, num_examples: int) -> int:
    """Rows held by these chunks (the last one may be short)."""
    return sum(min(chunk_rows, num_examples - c * chunk_rows) for c in chunks)


def _rows_committed(location: Location, attrs: dict[str, Any], meta: StoreMeta) -> int:
    """Rows in committed chunks (all rows once complete)."""
    n = meta.num_examples
    group = zarr.open_group(location.zarr_store(read_only=True), mode="r")
    complete, recorded = _progress(attrs)
    if complete or COMMITS not in group:
        return recorded
    return rows_in(committed_chunks(location), chunk_rows(group, StoreShape.of_store(meta)), n)


def describe(url: str) -> dict[str, Any]:
    """What `hskcache inspect` prints; works on incomplete stores too."""
    with faults(url):
        location = existing_store(url)
        attrs = dict(open_arrays(location)[0].attrs)
        meta = read_meta(attrs, url)
        sizes = location.sizes()
        committed = _rows_committed(location, attrs, meta)
    return {
        "path": str(url),
        "complete": _progress(attrs)[0],
        "rows_committed": committed,
        "num_examples": meta.num_examples,
        "teacher": meta.teacher,
        "teacher_layers": list(meta.teacher_layers),
        "students": Student.of(meta).served(),  # the student depths its layers and relations serve
        "general": meta.general,
        "teaches": _what_it_teaches(meta),
        "schema_version": attrs.get("schema_version"),
        "config": meta.to_attrs()["config"],
        "kinds": {name: KINDS[name].describe(record) for name, record in meta.kinds.items()},
        "bytes": _array_bytes(sizes),
        "total_bytes": sum(sizes.values()),
    }


def _what_it_teaches(meta: StoreMeta) -> str:
    """Task or task-agnostic, in one line (`hskcache inspect`)."""
    if not meta.general:
        head = "regression" if meta.regression else f"{meta.num_labels} classes"
        return f"task ({head}: logits and labels stored)"
    cut = (f"; {meta.corpus.passages:,} passages cut into {meta.corpus.sequences:,} sequences of up to "
           f"{meta.corpus.sequence_tokens} text tokens") if meta.corpus else ""
    return f"task-agnostic (general): from a bare encoder, no logits or labels{cut}"


def description_lines(info: dict[str, Any]) -> list[str]:
    """`describe`'s dictionary as the lines `hskcache inspect` prints."""
    lines = [f"store       {info['path']}",
             f"complete    {info['complete']} ({info['rows_committed']}/{info['num_examples']} rows committed)",
             f"teacher     {info['teacher']}  layers {info['teacher_layers']}",
             f"students    {info['students']}",
             f"teaches     {info['teaches']}",
             f"schema      {info['schema_version']}",
             "config      " + ", ".join(f"{k}={v}" for k, v in (info["config"] or {}).items())]
    lines += [f"{name:<12}{text}" for name, text in info["kinds"].items()]  # each kind's record
    lines += ["bytes per array:"]
    lines += [f"  {name:<16}{nbytes:>16,}" for name, nbytes in info["bytes"].items()]
    return lines + [f"  {'total':<16}{info['total_bytes']:>16,}"]
