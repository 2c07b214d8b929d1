"""The online baseline: the trainer's batch source computed live from the teacher.

Everything but where the knowledge comes from is the offline path's own code:
the rows are the ones `hskcache extract` would write (`prepare`, `batch_rows`:
same selection, values through fp16, width codes), decoded by the reader's
`RowDecoder`, in the order a store with these settings would yield them
(`epoch_batches` with the store's rows per chunk and window). So an online run
and an offline run from the matching store train on the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from hskcache.teacher.config import ExtractConfig
from hskcache.data import no_labels, tokenize_batch
from hskcache.teacher.extract import batch_rows, prepare, store_meta
from hskcache.kinds import Read
from hskcache.storage.packed import PackedBatch, expand
from hskcache.store.reader import KindReads, RowDecoder, batches_per_epoch, default_window_chunks, epoch_batches


class OnlineSource:
    """The `BatchSource` interface of `students.training.trainer`, with the teacher loaded."""

    def __init__(self, cfg: ExtractConfig) -> None:
        data, self.teacher, self.plan, self.shape, teacher_layers, corpus = prepare(cfg)
        self.meta = store_meta(cfg, data, self.teacher, self.plan, self.shape, teacher_layers, corpus)
        self.student_layers = self.meta.student_layers
        self.hidden = self.teacher.hidden
        self.regression = self.teacher.regression
        self.num_labels = self.teacher.num_labels
        self.num_examples = len(data)
        self.chunk_rows = self.shape.rows_per_chunk(len(data))
        static = self.plan.static_dims()
        self._decoder = RowDecoder(self.meta, None if static is None else static.numpy(), f"online {cfg.teacher}")
        self._data = data
        self._labels = data.labels if data.labels is not None else no_labels(len(data), self.regression)
        self._max_length = cfg.max_length

    def resolve(self, depth: int | None = None, tokens: int | None = None, width: float | None = None,
                kinds: KindReads | None = None, student_layers: int | None = None) -> Read:
        return self._decoder.resolve(depth, tokens, width, kinds, student_layers)

    def labels(self) -> np.ndarray:
        """Every row's gold label, as `HSKStore.labels`."""
        return self._labels

    @property
    def kinds(self) -> dict:
        """What the store would record of each opt-in kind (`HSKStore.kinds`)."""
        return self._decoder.records

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return batches_per_epoch(self.num_examples, batch_size, drop_last)

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                depth: int | None = None, tokens: int | None = None, width: float | None = None,
                start_batch: int = 0, drop_last: bool = False, rank: int = 0,
                world_size: int = 1, packed: bool = False, pin_memory: bool = False,
                kinds: KindReads | None = None, student_layers: int | None = None
                ) -> Iterator[dict[str, torch.Tensor] | PackedBatch]:
        """The batches `HSKStore.batches` would yield with the same arguments."""
        read = self._decoder.resolve(depth, tokens, width, kinds, student_layers)
        window = default_window_chunks(batch_size, self.chunk_rows)
        plan = epoch_batches(self.num_examples, self.chunk_rows, window, batch_size, shuffle, seed, epoch, start_batch,
                             drop_last, rank, world_size)
        for batches in plan:
            for rows in batches:
                batch = self._decoder.pack(self._raw(rows), read)
                batch = batch.pin_memory() if pin_memory and torch.cuda.is_available() else batch
                yield batch if packed else expand(batch)

    def get(self, indices, depth: int | None = None, tokens: int | None = None,
            width: float | None = None, kinds: KindReads | None = None,
            student_layers: int | None = None) -> dict[str, torch.Tensor]:
        """The rows `HSKStore.get` would return (the teacher runs on them now)."""
        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        read = self._decoder.resolve(depth, tokens, width, kinds, student_layers)
        return self._decoder.to_torch(self._raw(rows), read)

    def _raw(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The teacher's stored rows for data rows `rows`, computed now."""
        texts_a, texts_b = self._data.texts_a, self._data.texts_b
        encoded = tokenize_batch(self.teacher.tokenizer, [texts_a[i] for i in rows],
                                 None if texts_b is None else [texts_b[i] for i in rows], self._max_length)
        return batch_rows(self.teacher, self.plan, self.shape, encoded, self._labels[rows], rows)
