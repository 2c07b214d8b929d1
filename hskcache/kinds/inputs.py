"""The examples themselves: token ids, lengths (the attention mask), segments, labels, ids
(a task-agnostic store has no labels)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from hskcache.storage.layout import ArraySpec, narrow
from hskcache.kinds.base import Kind, TeacherForward, register

if TYPE_CHECKING:
    from hskcache.store.shape import StoreShape
    from hskcache.storage.packed import PackedBatch


class Inputs(Kind):
    """The examples themselves: token ids, lengths (the attention mask), segments, labels, ids."""

    name = "inputs"
    order = 0
    groups = ("inputs",)

    def arrays(self, shape: StoreShape) -> list[ArraySpec]:
        ids = np.uint16 if shape.vocab_size <= 1 << 16 else np.int32  # ids 0..vocab_size-1
        labels = [] if shape.general else [  # a task-agnostic store has none
            ArraySpec("labels", (), np.dtype(np.float32 if shape.regression else np.int64), "inputs", disk_ratio=29.06)]
        return [  # disk ratios (zstd-1) measured on movie-review stores, as the HSK's (kinds.hsk)
            ArraySpec("input_ids", (shape.seq_len,), np.dtype(ids), "inputs", disk_ratio=2.93),
            ArraySpec("length", (), np.dtype(np.int16), "inputs", disk_ratio=2.14),
            ArraySpec("token_type_ids", (shape.seq_len,), np.dtype(np.uint8), "inputs", disk_ratio=7384.62),
            *labels,
            ArraySpec("example_id", (), np.dtype(np.int64), "inputs", disk_ratio=6.72),
        ]

    def encode(self, forward: TeacherForward) -> dict[str, np.ndarray]:
        specs = {a.name: a.dtype for a in self.arrays(forward.shape)}
        tokens = forward.tokens
        labels = {} if forward.shape.general else {"labels": forward.labels.astype(specs["labels"])}
        return {
            "input_ids": narrow(tokens["input_ids"], specs["input_ids"], "token id"),
            "length": narrow(tokens["attention_mask"].sum(axis=1), specs["length"], "length"),
            "token_type_ids": narrow(tokens["token_type_ids"], specs["token_type_ids"], "token type id"),
            **labels,
            "example_id": forward.example_ids.astype(np.int64),
        }

    def expand(self, tensors: dict[str, Tensor], batch: PackedBatch) -> dict[str, Tensor]:
        seq = tensors["input_ids"].shape[1]
        return {
            "input_ids": tensors["input_ids"].long(),
            "attention_mask": (torch.arange(seq, device=tensors["length"].device)
                               < tensors["length"].unsqueeze(1)).long(),
            "token_type_ids": tensors["token_type_ids"].long(),
            **({"labels": tensors["labels"]} if "labels" in tensors else {}),
            "example_id": tensors["example_id"],
        }


register(Inputs())
