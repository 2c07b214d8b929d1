"""Reading a store back as torch tensors: random access and a streaming iterator.

One extraction serves every (N^D, N^L, N^W) at or below it: depth keeps the
top stored pairs, tokens a prefix of the importance-ordered positions, and
width re-ranks the kept activations by magnitude (or takes a prefix of the
static rand order).
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from . import widthcode
from .errors import UserError
from .layout import kept_width
from .selection import densify, static_dims, top_magnitude
from .store import StoreData

INPUT_ARRAYS = ["input_ids", "length", "token_type_ids", "labels", "example_id", "logits"]


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


def default_window_chunks(batch_size: int, chunk_rows: int) -> int:
    """Chunks shuffled together: enough rows to mix well, memory bounded by the window."""
    return max(4, -(-8 * batch_size // chunk_rows))


class RowDecoder:
    """Rows in the store's dtypes (numpy) → the batch dictionary (torch), at any
    (depth, tokens, width) at or below what the rows hold.

    Shared by `HSKStore` and the online baseline, which builds the very rows the
    writer would write and decodes them here, so both feed the trainer the same values.
    """

    def __init__(self, attrs: dict[str, Any], static: np.ndarray | None, where: str):
        self.hidden: int = attrs["hidden_size"]
        self.kept: int = attrs["kept"]
        self.depth: int = len(attrs["stored_layers"])
        self.tokens: int = int(attrs["config"]["tokens"])
        self.width: float = float(attrs["config"]["width"])
        self.width_strategy: str = attrs["config"]["width_strategy"]
        self.seed: int = attrs["config"]["width_seed"]
        self.width_encoding: str | None = attrs["width_encoding"]
        self.static = static
        self.where = where

    def resolve(self, depth: int | None, tokens: int | None, width: float | None) -> tuple[int, int, int]:
        """(depth, tokens, kept) of a read; None means as stored. The one check of
        whether a read can be served: every reader and the trainer's `--hsk` use it."""
        depth = self.depth if depth is None else depth
        tokens = self.tokens if tokens is None else tokens
        kept = self.kept if width is None else kept_width(width, self.hidden)
        stored = f"the store holds depth {self.depth}, tokens {self.tokens}, width {self.width} ({self.where})"
        if not 1 <= depth <= self.depth:
            raise UserError(f"depth {depth} is not available: {stored}")
        if not 1 <= tokens <= self.tokens:
            raise UserError(f"tokens {tokens} is not available: {stored}")
        if (width is not None and not 0 < width <= 1) or kept > self.kept:
            raise UserError(f"width {width} is not available: {stored}")
        if kept < self.kept and self.width_strategy != "mag":
            self._width_dims(kept)  # a static strategy's smaller width must be a subset of the stored one
        return depth, tokens, kept

    def _width_dims(self, kept: int) -> np.ndarray:
        """Static strategies: the stored columns that a smaller width keeps."""
        stored = np.sort(self.static) if self.static is not None else np.arange(self.hidden)
        if kept == self.kept:
            return np.arange(len(stored))
        wanted = np.sort(static_dims(self.width_strategy, self.hidden, kept, self.seed).numpy())
        columns = np.searchsorted(stored, wanted)
        if not np.array_equal(stored[np.minimum(columns, len(stored) - 1)], wanted):
            raise UserError(f"{self.width_strategy} width {kept}/{self.hidden} is not a subset of the stored "
                            f"dimensions; extract at that width")
        return columns

    def to_torch(self, raw: dict[str, np.ndarray], depth: int, tokens: int, kept: int) -> dict[str, torch.Tensor]:
        seq = raw["input_ids"].shape[1]
        out = {
            "input_ids": torch.from_numpy(raw["input_ids"].astype(np.int64)),
            "attention_mask": torch.from_numpy((np.arange(seq) < raw["length"][:, None]).astype(np.int64)),
            "token_type_ids": torch.from_numpy(raw["token_type_ids"].astype(np.int64)),
            "labels": torch.from_numpy(raw["labels"]),
            "example_id": torch.from_numpy(raw["example_id"]),
            "logits": torch.from_numpy(raw["logits"]),
        }
        first = self.depth - depth
        positions = torch.from_numpy(raw["positions"][:, first:, :tokens].astype(np.int64))
        values = torch.from_numpy(raw["values"][:, first:, :tokens].astype(np.float32))
        if self.width_encoding is not None:
            codes = raw["width_code"][:, first:, :tokens]
            flat = widthcode.decode(codes.reshape(-1, codes.shape[-1]), self.hidden, self.kept, self.width_encoding)
            dims = torch.from_numpy(flat).reshape(values.shape)
        else:
            base = np.sort(self.static) if self.static is not None else np.arange(self.hidden)
            dims = torch.from_numpy(base.astype(np.int64))
        if kept < self.kept:
            if self.width_strategy == "mag":
                values, dims = top_magnitude(values, dims.expand_as(values), kept)
            else:
                columns = torch.from_numpy(self._width_dims(kept))
                values, dims = values[..., columns], dims[columns]
        out["positions"] = positions
        out["hsk"], out["hsk_mask"] = densify(values, dims, positions, self.hidden)
        return out


class HSKStore:
    """A complete store opened read-only."""

    def __init__(self, path: str | Path):
        self._data = StoreData(path)
        a = self._data.attrs
        self.path = Path(path)
        self.config: dict[str, Any] = a["config"]
        self.teacher_layers: list[int] = a["teacher_layers"]
        self.student_layers: int = len(self.teacher_layers) - 1
        self.stored_layers: list[int] = a["stored_layers"]
        self.hidden: int = a["hidden_size"]
        self.kept: int = a["kept"]
        self.width_encoding: str | None = a["width_encoding"]
        self.regression: bool = a["regression"]
        self.num_labels: int = a["num_labels"]
        self.attrs = a
        self._decoder = RowDecoder(a, self._data.static_dims(), str(self.path))

    @property
    def num_examples(self) -> int:
        return self._data.num_examples

    @property
    def depth(self) -> int:
        return len(self.stored_layers)

    @property
    def tokens(self) -> int:
        return int(self.config["tokens"])

    @property
    def width(self) -> float:
        return float(self.config["width"])

    @property
    def chunk_rows(self) -> int:
        return self._data.chunk_rows

    def _read_chunk(self, chunk: int, names: list[str]) -> dict[str, np.ndarray]:
        lo = chunk * self.chunk_rows
        return self._data.read(names, slice(lo, min(lo + self.chunk_rows, self.num_examples)))

    def _arrays(self) -> list[str]:
        return INPUT_ARRAYS + ["positions", "values"] + (["width_code"] if self.width_encoding else [])

    def resolve(self, depth: int | None = None, tokens: int | None = None,
                width: float | None = None) -> tuple[int, int, int]:
        """(depth, tokens, kept) of a read, or a UserError if this store cannot serve it."""
        return self._decoder.resolve(depth, tokens, width)

    def get(self, indices, depth: int | None = None, tokens: int | None = None, width: float | None = None) -> dict[str, torch.Tensor]:
        """Rows `indices` at (depth, tokens, width) at or below what was stored."""
        depth, tokens, kept = self._decoder.resolve(depth, tokens, width)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.num_examples):
            raise UserError(f"row index out of range: the store has {self.num_examples} rows")
        raw = self._data.read(self._arrays(), idx)
        return self._decoder.to_torch(raw, depth, tokens, kept)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return self.num_examples // batch_size if drop_last else -(-self.num_examples // batch_size)

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                depth: int | None = None, tokens: int | None = None, width: float | None = None,
                start_batch: int = 0, drop_last: bool = False, window_chunks: int | None = None,
                prefetch: int = 4, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        """Stream batches: whole chunks in seeded random order, rows shuffled across
        a window of chunks, read and decoded by a background thread.

        `rank` of `world_size` (data-parallel training) yields its share of every
        batch and reads only its own chunks (`epoch_batches`)."""
        depth, tokens, kept = self._decoder.resolve(depth, tokens, width)
        if window_chunks is None:
            window_chunks = default_window_chunks(batch_size, self.chunk_rows)
        names = self._arrays()
        plan = epoch_batches(self.num_examples, self.chunk_rows, window_chunks, batch_size, shuffle, seed, epoch,
                             start_batch, drop_last, rank, world_size)
        out: queue.Queue = queue.Queue(maxsize=prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                held: dict[int, dict[str, np.ndarray]] = {}
                for batches in plan:
                    if not batches:
                        continue
                    needed = sorted(set((np.concatenate(batches) // self.chunk_rows).tolist()))
                    held = {c: held[c] if c in held else self._read_chunk(c, names) for c in needed}
                    parts = [held[c] for c in needed] or [self._data.read(names, slice(0, 0))]
                    block = {n: np.concatenate([part[n] for part in parts]) for n in names}
                    offset = dict(zip(needed, np.cumsum([0] + [len(held[c]["length"]) for c in needed])))
                    for rows in batches:
                        if stop.is_set():
                            return
                        local = np.array([offset[r // self.chunk_rows] + r % self.chunk_rows for r in rows.tolist()],
                                         dtype=np.int64)
                        out.put(self._decoder.to_torch({n: block[n][local] for n in names}, depth, tokens, kept))
                out.put(None)
            except BaseException as exc:  # surface reader errors in the consumer
                out.put(exc)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    out.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)


def open_store(path: str | Path) -> HSKStore:
    """Open a complete store read-only (a clear error if incomplete or not a store)."""
    return HSKStore(path)
