"""Hidden-state knowledge: the selected layers × tokens × activations (`hskcache.selection`),
coded by `hskcache.packed` (values fp16 or int8, kept dimensions as a width code)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import widthcode
from ..layout import ArraySpec
from ..packed import encode_hsk, expand_hsk
from ..selection import WIDTH_STRATEGIES, select_hsk
from .base import Cut, Kind, Read, TeacherForward, register

if TYPE_CHECKING:
    from ..shape import StoreShape
    from ..packed import PackedBatch


# Measured disk ratios (`ArraySpec.disk_ratio`) on stores of the packaged MiniLM (d_T = 384) over 3000
# movie reviews, max length 64: fp16 values (blosc-lz4, bit-shuffled), bitmasks and positions at
# (1,9,0.1), the most conservative for values (1.25 at (4,16,0.2)); bitmasks compress less as N^W
# grows (1.59 at N^W = 0.2); int8 values, their scales and rank codes at (4,16,0.2). Indices: none.
VALUE_RATIOS = {"fp16": 1.21, "int8": 1.25}
WIDTH_CODE_RATIOS = {"bitmask": 2.05, "rank": 1.16}


class HSK(Kind):
    """Hidden-state knowledge: the selected layers × tokens × activations (`hskcache.selection`),
    coded by `hskcache.packed` (values fp16 or int8, kept dimensions as a width code)."""

    name = "hsk"
    order = 20
    groups = ("positions", "values", "mask")
    listed = True  # `--knowledge hsk` (always stored: a store is an HSK store)

    def arrays(self, shape: StoreShape) -> list[ArraySpec]:
        vectors = (shape.depth, shape.tokens)
        specs = [
            ArraySpec("positions", vectors, np.dtype(np.int16), "positions", fill=-1, disk_ratio=2.45),
            ArraySpec("values", (*vectors, shape.kept), np.dtype(np.float16 if shape.values == "fp16" else np.int8),
                      "values", "blosc-lz4-bitshuffle" if shape.values == "fp16" else "zstd",
                      disk_ratio=VALUE_RATIOS[shape.values]),
        ]
        if shape.values == "int8":
            specs.append(ArraySpec("value_scale", vectors, np.dtype(np.float16), "values", disk_ratio=1.25))
        if shape.width_encoding is not None:
            nbytes = widthcode.code_bytes(shape.width_encoding, shape.hidden, shape.kept)
            specs.append(ArraySpec("width_code", (*vectors, nbytes), np.dtype(np.uint8), "mask",
                                   disk_ratio=WIDTH_CODE_RATIOS.get(shape.width_encoding, 1.0)))
        return specs

    def static_arrays(self, shape: StoreShape) -> list[ArraySpec]:
        """A static width strategy keeps the same dimensions in every vector: stored once
        (`selection.WIDTH_STRATEGIES`)."""
        if WIDTH_STRATEGIES[shape.width_strategy].static and shape.kept < shape.hidden:
            return [ArraySpec("static_dims", (shape.kept,), np.dtype(np.int32), "mask", codec="none")]
        return []

    def encode(self, forward: TeacherForward) -> dict[str, np.ndarray]:
        """Selection, the value format and bit packing on the teacher's device; other width
        codes are made from the bitmask on the host."""
        shape, out = forward.shape, forward.out
        sel = select_hsk(forward.plan, out.hidden_states, out.attentions, forward.masks["attention_mask"],
                         forward.masks["sep_mask"])
        stored = encode_hsk(sel, shape.hidden, shape.values, shape.width_encoding is not None)
        rows = {name: value.cpu().numpy() for name, value in stored.items()}
        if shape.width_encoding is not None and shape.width_encoding != "bitmask":
            bits = rows["width_code"]
            codes = widthcode.from_bitmask(bits.reshape(-1, bits.shape[-1]), shape.hidden, shape.kept,
                                           shape.width_encoding)
            rows["width_code"] = codes.reshape(*bits.shape[:-1], -1)
        return rows

    def cuts(self, shape: StoreShape, read: Read) -> dict[str, Cut]:
        """The top `depth` stored layers and the first `tokens` positions (rows are importance-ordered)."""
        cut = (slice(None), slice(shape.depth - read.depth, None), slice(None, read.tokens))
        return {a.name: cut for a in self.arrays(shape)}

    def pack(self, shape: StoreShape, rows: dict[str, np.ndarray], names: Sequence[str],
             read: Read) -> dict[str, Tensor]:
        """Rank and index width codes become bitmasks, what a `PackedBatch` carries."""
        out = super().pack(shape, rows, names, read)
        if shape.width_code != "bitmask" and "width_code" in out:  # the store's width encoding is its width code
            codes = rows["width_code"]
            bits = widthcode.to_bitmask(codes.reshape(-1, codes.shape[-1]), shape.hidden, shape.kept, shape.width_code)
            out["width_code"] = torch.from_numpy(np.ascontiguousarray(bits.reshape(*codes.shape[:-1], -1)))
        return out

    def expand(self, tensors: dict[str, Tensor], batch: PackedBatch) -> dict[str, Tensor]:
        return expand_hsk(tensors, batch)

register(HSK())
