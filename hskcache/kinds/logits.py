"""The teacher's logits: the prediction stage's soft targets."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from hskcache.storage.layout import ArraySpec
from hskcache.kinds.base import Kind, TeacherForward, register

if TYPE_CHECKING:
    from hskcache.store.shape import StoreShape
    from hskcache.storage.packed import PackedBatch


class Logits(Kind):
    """The teacher's logits: the prediction stage's soft targets (none in a task-agnostic store)."""

    name = "logits"
    order = 10
    groups = ("logits",)

    def arrays(self, shape: StoreShape) -> list[ArraySpec]:
        if shape.general:  # a bare encoder has no head
            return []
        return [ArraySpec("logits", (shape.num_logits,), np.dtype(np.float32), "logits",
                          disk_ratio=1.08)]  # measured on movie-review stores, as the HSK's (kinds.hsk)

    def encode(self, forward: TeacherForward) -> dict[str, np.ndarray]:
        return {"logits": forward.out.logits.float().cpu().numpy()}

    def expand(self, tensors: dict[str, Tensor], batch: PackedBatch) -> dict[str, Tensor]:
        return {"logits": tensors["logits"]}

register(Logits())
