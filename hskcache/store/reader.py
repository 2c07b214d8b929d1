"""Reading a store back as torch tensors: random access and a streaming iterator.

One extraction serves every (N^D, N^L, N^W) at or below it (one exception: a
`uniform` width, below) to a student of any depth whose layer map its stored
layers cover (`selection.layers`; `student_layers`, None: the store's own L';
`hskcache inspect` lists the depths a store serves): depth keeps
the top pairs of the student's map, tokens a prefix of the
importance-ordered positions, and width re-ranks the kept activations by
magnitude (`mag`, equal to a direct extraction up to fp16 ties) or takes a
prefix of the static `rand` order. A `uniform` width serves only smaller
widths whose evenly spaced dimensions are among the stored ones (e.g. 0.25
from 0.5, not 0.3): `RowDecoder.resolve` refuses the others.

The CPU side only decompresses chunks and gathers rows, on a thread pool
(zstd and numpy release the GIL); batches leave it packed (`packed.PackedBatch`)
and `packed.expand` builds the dense tensors on the trainer's device.
"""
from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from hskcache.errors import UserError
from hskcache.kinds import KINDS, Read, Student, resolve_reads, stored_kinds
from hskcache.kinds.hsk import HSKRead
from hskcache.store.shape import StoreShape
from hskcache.storage.packed import PackedBatch, expand
from hskcache.store.meta import Settings, StoreMeta
from hskcache.store.group import StoreData

KindReads = Mapping[str, Any]  # kind name -> its read settings (`Kind.read_settings`): the opt-in kinds a read includes


def _chunk_order(num_chunks: int, shuffle: bool, seed: int, epoch: int) -> tuple[np.random.Generator, np.ndarray]:
    """The epoch's generator and its chunk visiting order (the generator's first draw)."""
    rng = np.random.default_rng([seed, epoch])
    return rng, (rng.permutation(num_chunks) if shuffle else np.arange(num_chunks))


def epoch_windows(num_rows: int, chunk_rows: int, window_chunks: int, shuffle: bool, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """Row order of one epoch, window by window (the rows of a window, in the order to yield).

    Chunks are visited in a seeded random order; rows are shuffled within a
    window of `window_chunks` chunks, so memory is bounded by the window and
    not by the store. Pure, so the online baseline reproduces the same batches.
    """
    num_chunks = -(-num_rows // chunk_rows)
    rng, chunks = _chunk_order(num_chunks, shuffle, seed, epoch)
    for start in range(0, num_chunks, window_chunks):
        window = sorted(int(c) for c in chunks[start:start + window_chunks])
        rows = np.concatenate([np.arange(c * chunk_rows, min((c + 1) * chunk_rows, num_rows)) for c in window])
        yield rng.permutation(rows) if shuffle else rows


def chunk_owners(num_rows: int, chunk_rows: int, shuffle: bool, seed: int, epoch: int, world_size: int) -> np.ndarray:
    """The rank that reads each chunk in this epoch: dealt round-robin along the
    epoch's chunk order, so every window is split among the ranks to within one chunk."""
    num_chunks = -(-num_rows // chunk_rows)
    owners = np.empty(num_chunks, dtype=np.int64)
    owners[_chunk_order(num_chunks, shuffle, seed, epoch)[1]] = np.arange(num_chunks) % world_size
    return owners


def epoch_batches(num_rows: int, chunk_rows: int, window_chunks: int, batch_size: int, shuffle: bool,
                  seed: int, epoch: int, start_batch: int = 0, drop_last: bool = False, rank: int = 0,
                  world_size: int = 1) -> Iterator[list[np.ndarray]]:
    """Batches of row ids, window by window: every batch is cut from the concatenated
    window orders, so a batch may span two windows. Windows before start_batch are skipped unread.

    With `world_size` > 1 the batches are the same global batches, each cut down
    to the rows of the chunks that `rank` owns (`chunk_owners`): the ranks read
    disjoint chunks, and their shares of batch i together are batch i of one
    process (a share may be empty). `drop_last` drops a short final global batch.
    """
    owners = chunk_owners(num_rows, chunk_rows, shuffle, seed, epoch, world_size) if world_size > 1 else None

    def share(batches: list[np.ndarray]) -> list[np.ndarray]:
        return batches if owners is None else [b[owners[b // chunk_rows] == rank] for b in batches]

    skip = start_batch * batch_size
    seen = 0
    carry = np.empty(0, dtype=np.int64)
    for rows in epoch_windows(num_rows, chunk_rows, window_chunks, shuffle, seed, epoch):
        first, seen = max(0, skip - seen), seen + len(rows)
        if first >= len(rows):
            continue
        rows = rows[first:]
        rows = np.concatenate([carry, rows])
        cut = len(rows) - len(rows) % batch_size
        carry = rows[cut:]
        yield share([rows[i:i + batch_size] for i in range(0, cut, batch_size)])
    if len(carry) and not drop_last:
        yield share([carry])


def batches_per_epoch(num_rows: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches in one epoch of `epoch_batches`: a short last one counts unless dropped."""
    return num_rows // batch_size if drop_last else -(-num_rows // batch_size)


def is_identity(cut: tuple, row_shape: tuple[int, ...]) -> bool:
    """Whether a cut of a row block (example axis first) keeps every element in place: each axis a slice
    that normalises to the whole axis. Shapes alone do not say it: a deeper student's pairs (1, 2, 2) of
    a 3-pair store keep the shape and not the pairs."""
    return all(isinstance(c, slice) and c.indices(n) == (0, n, 1) for c, n in zip(cut[1:], row_shape))


def default_window_chunks(batch_size: int, chunk_rows: int) -> int:
    """Chunks shuffled together: enough rows to mix well, memory bounded by the window."""
    return max(4, -(-8 * batch_size // chunk_rows))


class RowDecoder:
    """Rows in the store's dtypes (numpy) → a `PackedBatch` (or the dense batch
    dictionary), at any read at or below what the rows hold: every stored kind decodes its own
    arrays (`Kind.cuts`, `pack`, `expand`) at its read (`Kind.resolve_read`).

    Shared by `HSKStore` and the online baseline, which builds the very rows the
    writer would write and decodes them here, so both feed the trainer the same values.
    """

    def __init__(self, meta: StoreMeta, static: np.ndarray | None, where: str):
        self.hidden: int = meta.hidden_size
        self.meta = meta
        self.records: dict[str, Any] = meta.kinds  # what the store records of each kind with settings it holds
        self.shape = StoreShape.of_store(meta)
        self.kinds = stored_kinds(self.shape)  # hskcache.kinds: each decodes its own arrays
        self._arrays = {kind.name: [a.name for a in kind.arrays(self.shape)] for kind in self.kinds}
        self.static = {} if static is None else {"static_dims": static}  # the once-per-store arrays
        self.where = where

    def arrays(self, read: Read) -> list[str]:
        """The stored arrays a batch of this read is made of (an opt-in kind's only when read)."""
        return list(dict.fromkeys(name for kind in self.kinds if kind.read(read) for name in self._arrays[kind.name]))

    def resolve(self, depth: int | None = None, tokens: int | None = None, width: float | None = None,
                kinds: KindReads | None = None, student_layers: int | None = None) -> Read:
        """The read of the HSK at (depth, tokens, width) (None: as stored; the documented keywords of
        `get`/`batches`, which build the HSK's read, `kinds.hsk.HSKRead`) and of each opt-in kind in
        `kinds`, for a student of `student_layers` layers (None: the store's own L'), checked against
        what is stored: the one check of whether a read can be served (every reader and the trainer's
        `--hsk` use it; each kind's `resolve_read`). `kinds["hsk"]`, the HSK's read settings given
        whole, replaces the three keywords; `HSKRead(None)` leaves the HSK out of the read (its arrays
        are neither fetched nor decoded: a prediction stage's or a relation-only stage's read)."""
        kinds = dict(kinds or {})
        if "hsk" in kinds and (depth, tokens, width) != (None, None, None):
            raise UserError("give the HSK's read once: as depth, tokens, width or as kinds['hsk'], not both")
        asked = {"hsk": kinds.pop("hsk", HSKRead((depth, tokens, width))), **kinds}
        asked = {name: read for name, read in asked.items() if name not in KINDS or KINDS[name].reads(read)}
        student = Student.of(self.meta, student_layers)
        return Read(resolve_reads(self.records, asked, self.where, self.shape, self.static, student))

    def slicer(self, read: Read) -> tuple[dict[str, tuple], PackedBatch]:
        """(per-array slice of a row block, PackedBatch template) of a read: the slices (each kind's
        `cuts`) run where rows are gathered, so a smaller read copies fewer bytes."""
        kinds = tuple(kind for kind in self.kinds if kind.read(read))
        cuts = {name: cut for kind in kinds for name, cut in kind.cuts(self.shape, read).items()}
        return cuts, PackedBatch({}, self.hidden, read, kinds)

    def pack(self, raw: dict[str, np.ndarray], read: Read) -> PackedBatch:
        cuts, template = self.slicer(read)
        return self.pack_sliced({n: raw[n][cuts[n]] for n in cuts}, template)

    def pack_sliced(self, rows: dict[str, np.ndarray], template: PackedBatch) -> PackedBatch:
        """Gathered rows (already sliced) → the tensors of each kind of the read (`Kind.pack`:
        e.g. rank and index codes become bitmasks, relations are decoded to the read's keys)."""
        tensors: dict[str, torch.Tensor] = {}
        for kind in template.kinds:
            tensors.update(kind.pack(self.shape, rows, self._arrays[kind.name], template.read))
        return replace(template, tensors=tensors)

    def to_torch(self, raw: dict[str, np.ndarray], read: Read) -> dict[str, torch.Tensor]:
        """The dense batch dictionary, on the CPU."""
        return expand(self.pack(raw, read))


def default_threads() -> int:
    return len(os.sched_getaffinity(0))


class HSKStore:
    """A complete store opened read-only."""

    def __init__(self, path: str | Path):
        self._data = StoreData(str(path))
        meta = self.meta = self._data.meta
        self.path = str(path)  # a directory or an fsspec URL
        self.config: Settings = meta.config
        self.teacher_layers: list[int] = list(meta.teacher_layers)
        self.student_layers: int = meta.student_layers
        self.stored_layers: list[int] = list(meta.stored_layers)
        self.hidden: int = meta.hidden_size
        self.regression: bool = meta.regression
        self.num_labels: int = meta.num_labels
        self._decoder = RowDecoder(meta, self._data.static_dims(), str(self.path))

    @property
    def num_examples(self) -> int:
        return self._data.num_examples

    @property
    def depth(self) -> int:
        return len(self.stored_layers)

    @property
    def tokens(self) -> int:
        return self.meta.kinds["hsk"].tokens

    @property
    def width(self) -> float:
        return self.meta.kinds["hsk"].width

    @property
    def kept(self) -> int:
        return self.meta.kinds["hsk"].kept

    @property
    def width_encoding(self) -> str | None:
        return self.meta.kinds["hsk"].width_encoding

    @property
    def chunk_rows(self) -> int:
        return self._data.chunk_rows

    def _decode_chunk(self, chunk: int, cuts: dict[str, tuple], out: dict[str, np.ndarray],
                      scratch: threading.local) -> None:
        """Decode chunk `chunk` into `out` (its rows' place in a window), cut to the read:
        arrays read whole are decoded in place; a cut one is decoded whole into this
        thread's scratch buffer (reused from chunk to chunk), then its cut copied."""
        into = {n: out[n] for n in cuts if cuts[n] == (slice(None),)}
        for n in cuts:
            if n not in into:
                if not hasattr(scratch, n):
                    shape, dtype = self._data.row_layout(n)
                    setattr(scratch, n, np.empty((self.chunk_rows, *shape), dtype))
                into[n] = getattr(scratch, n)
        raw = self._data.read_chunk(list(cuts), chunk, into)
        for n, cut in cuts.items():
            if cut != (slice(None),):
                part = raw[n][cut]
                out[n][:len(part)] = part

    def resolve(self, depth: int | None = None, tokens: int | None = None, width: float | None = None,
                kinds: KindReads | None = None, student_layers: int | None = None) -> Read:
        """The read (`kinds.Read`: each kind's resolved read), or a UserError if this store cannot serve it."""
        return self._decoder.resolve(depth, tokens, width, kinds, student_layers)

    @property
    def kinds(self) -> dict[str, Any]:
        """What the store records of each kind with settings it holds (`Kind.record`), by kind name."""
        return self._decoder.records

    def get(self, indices, depth: int | None = None, tokens: int | None = None, width: float | None = None,
            kinds: KindReads | None = None, student_layers: int | None = None) -> dict[str, torch.Tensor]:
        """Rows `indices` at (depth, tokens, width) at or below what was stored (the dense batch):
        keywords that build the HSK's read (`kinds.hsk.HSKRead`); `kinds` adds opt-in kinds, each with
        its read settings (e.g. {"att": RelationRead((rows, keys))}; {"hsk": HSKRead(None)}: no HSK, its
        arrays not decoded, `resolve`); `student_layers`: the depth of the student it serves (None: the
        store's own), whose layer map the pairs are read from."""
        read = self._decoder.resolve(depth, tokens, width, kinds, student_layers)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.num_examples):
            raise UserError(f"row index out of range: the store has {self.num_examples} rows")
        raw = self._data.read(self._decoder.arrays(read), idx)
        return self._decoder.to_torch(raw, read)

    def labels(self) -> np.ndarray:
        """Every row's gold label (-1, or NaN for regression: none), the labels array alone."""
        return self._data.read(["labels"], slice(None))["labels"]

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return batches_per_epoch(self.num_examples, batch_size, drop_last)

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                depth: int | None = None, tokens: int | None = None, width: float | None = None,
                start_batch: int = 0, drop_last: bool = False, window_chunks: int | None = None,
                prefetch: int = 4, rank: int = 0, world_size: int = 1, packed: bool = False,
                threads: int | None = None, pin_memory: bool = False,
                shard: tuple[int, int] = (0, 1), kinds: KindReads | None = None,
                student_layers: int | None = None) -> Iterator[dict[str, torch.Tensor] | PackedBatch]:
        """Stream batches: whole chunks in seeded random order, rows shuffled across
        a window of chunks. Chunks are decompressed and batches gathered on a pool
        of `threads` (default: every core this process may use), `prefetch` batches
        and one window of chunks ahead of the consumer; the order is the same for
        any thread count. `depth`, `tokens`, `width`: the HSK's read (`kinds.hsk.HSKRead`), None
        as stored; `kinds`: each opt-in kind's (and the HSK's, as `get`); `student_layers`: as `get`.
        `packed`: yield `PackedBatch`es for `packed.expand` on the trainer's device, else dense batches.
        `shard=(i, n)`: only batches i, i+n, ... (a DataLoader worker's share, see `dataset`).

        `rank` of `world_size` (data-parallel training) yields its share of every
        batch and reads only its own chunks (`epoch_batches`)."""
        read = self._decoder.resolve(depth, tokens, width, kinds, student_layers)
        if window_chunks is None:
            window_chunks = default_window_chunks(batch_size, self.chunk_rows)
        cuts, template = self._decoder.slicer(read)
        plan = epoch_batches(self.num_examples, self.chunk_rows, window_chunks, batch_size, shuffle, seed, epoch,
                             start_batch, drop_last, rank, world_size)
        pool = ThreadPoolExecutor(max(1, threads or default_threads()), thread_name_prefix="hskcache-reader")
        pin = pin_memory and torch.cuda.is_available()
        scratch = threading.local()  # each decoding thread's whole-chunk buffers of the arrays a read cuts
        cr = self.chunk_rows
        layout = {}  # array -> (row shape of the read, dtype)
        for n, (shape, dtype) in {n: self._data.row_layout(n) for n in cuts}.items():
            layout[n] = (np.empty((0, *shape), dtype)[cuts[n]].shape[1:], dtype)
            if is_identity(cuts[n], shape):  # the cut keeps everything, in order: decode in place
                cuts[n] = (slice(None),)

        def make(pieces: list[tuple[dict[str, np.ndarray], list[Future], np.ndarray | None, np.ndarray]], n_rows: int):
            for _, decoded, _, _ in pieces:
                for future in decoded:
                    future.result()
            if len(pieces) == 1:  # one window: one gather per array
                window, _, _, index = pieces[0]
                rows = {n: window[n][index] for n in cuts}
            else:  # rows from two windows (or none: a data-parallel rank's empty share), put in place
                rows = {n: np.empty((n_rows, *shape), dtype) for n, (shape, dtype) in layout.items()}
                for window, _, where, index in pieces:
                    for n in cuts:
                        rows[n][where] = window[n][index]
            batch = self._decoder.pack_sliced(rows, template)
            batch = batch.pin_memory() if pin else batch
            return batch if packed else expand(batch)

        num_chunks = -(-self.num_examples // cr)
        read = np.zeros(num_chunks, dtype=bool)  # chunks already submitted this epoch
        # Each window's chunks are decoded into one buffer per array (its rows, chunk
        # after chunk), so a batch is one gather per array. Kept: this window's and the
        # last (a batch may span two).
        window_of = np.zeros(num_chunks, dtype=np.int64)  # chunk -> its window
        start_of = np.zeros(num_chunks, dtype=np.int64)  # chunk -> its first row in its window's buffers
        buffers: dict[int, dict[str, np.ndarray]] = {}  # window -> its buffers (this window's and the last)
        decoding_of: dict[int, list[Future]] = {}  # window -> the decodes of its chunks
        window_ids = itertools.count()
        pending: deque[Future] = deque()
        windows = iter(plan)
        index = 0  # of the batches this iterator yields, for sharding

        def submit_window() -> bool:
            nonlocal index
            batches = next(windows, None)
            if batches is None:
                return False
            rows_of_window = np.concatenate(batches) if batches else np.empty(0, dtype=np.int64)
            chunk_all = rows_of_window // cr
            # Chunks not read yet (a batch cut across two windows reuses the previous window's).
            chunks = [c for c in np.unique(chunk_all).tolist() if not read[c]]
            if chunks:
                for w in list(buffers)[:-1]:  # all but the last window
                    del buffers[w], decoding_of[w]
                w = next(window_ids)
                buffers[w] = {n: np.empty((len(chunks) * cr, *shape), dtype) for n, (shape, dtype) in layout.items()}
                decoding_of[w] = [pool.submit(self._decode_chunk, c, cuts,
                                              {n: buffer[i * cr:(i + 1) * cr] for n, buffer in buffers[w].items()},
                                              scratch)
                                  for i, c in enumerate(chunks)]
                window_of[chunks], start_of[chunks] = w, np.arange(len(chunks)) * cr
                read[chunks] = True
            place_all = start_of[chunk_all] + rows_of_window % cr  # the rows' places in their windows' buffers
            owner_all = window_of[chunk_all]
            end = 0
            for rows in batches:
                start, end = end, end + len(rows)
                mine = index % shard[1] == shard[0]
                index += 1
                if not mine:
                    continue
                place, owner = place_all[start:end], owner_all[start:end]
                if len(rows) and (owner == owner[0]).all():
                    pieces = [(buffers[int(owner[0])], decoding_of[int(owner[0])], None, place)]
                else:  # rows of two windows (or none)
                    pieces = []
                    for w in np.unique(owner).tolist():
                        at = np.nonzero(owner == w)[0]
                        pieces.append((buffers[w], decoding_of[w], at, place[at]))
                pending.append(pool.submit(make, pieces, len(rows)))
            return True

        try:
            more = True
            while True:
                while more and len(pending) < prefetch:
                    more = submit_window()
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    def dataset(self, batch_size: int, **kwargs) -> "StoreBatches":
        """The same batches as a `torch.utils.data.IterableDataset`: use it with
        `DataLoader(ds, batch_size=None, num_workers=n)`; worker i yields batches
        i, i+n, ..., so the loader's order equals `batches(...)`'s. Each worker
        reads the windows its batches come from (decoding is repeated across workers;
        the thread pool of `batches` does not repeat it)."""
        return StoreBatches(str(self.path), batch_size, kwargs)


class StoreBatches(torch.utils.data.IterableDataset):
    """`HSKStore.batches` as an IterableDataset (each DataLoader worker opens the store itself)."""

    def __init__(self, path: str, batch_size: int, kwargs: dict[str, Any]):
        super().__init__()
        self.path, self.batch_size, self.kwargs = path, batch_size, kwargs

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        shard = (0, 1) if info is None else (info.id, info.num_workers)
        threads = self.kwargs.get("threads") or (1 if info is not None else None)
        yield from HSKStore(self.path).batches(self.batch_size, **(self.kwargs | {"shard": shard, "threads": threads}))


def open_store(path: str | Path) -> HSKStore:
    """Open a complete store read-only (a clear error if incomplete or not a store):
    a local directory or an fsspec URL (s3://bucket/store, gs://..., memory://...)."""
    return HSKStore(path)
