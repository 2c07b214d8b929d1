"""`StoreShape`: everything that fixes a store's arrays, and the arrays it lists from the kinds' registry.

The arrays are the knowledge kinds' (`hskcache.kinds.KINDS`, each listing its
`layout.ArraySpec`s for a shape); the chunking and byte arithmetic follow
(`hskcache.storage.layout`'s rules), shared by the writer, the reader and `budget`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping

from hskcache.storage import layout
from hskcache.kinds import KINDS, stored_kinds
from hskcache.storage.layout import ArraySpec

if TYPE_CHECKING:
    from hskcache.store.meta import StoreMeta


@dataclass(frozen=True)
class StoreShape:
    """Everything that fixes the store's array shapes and codecs: the examples' and the teacher's
    sizes, the compression, and what the store records of each kind it holds."""

    seq_len: int
    vocab_size: int
    num_logits: int  # 0: a task-agnostic store (a bare encoder's: no logits, no labels)
    regression: bool
    hidden: int  # d_T
    compress: str = "zstd"
    kinds: Mapping[str, Any] = field(default_factory=dict)  # what the store records of each kind with
    # settings it holds (`Kind.record`: the HSK's `kinds.hsk.HSKRecord`, `attention.RelationSpec`), by kind name

    @classmethod
    def of_store(cls, meta: StoreMeta) -> "StoreShape":
        """The shape a store's metadata records."""
        return cls(meta.config.max_length, meta.tokenizer.vocab_size, meta.num_labels, meta.regression,
                   meta.hidden_size, meta.config.compress, meta.kinds)

    @property
    def general(self) -> bool:
        """A task-agnostic store (`StoreMeta.general`): a bare encoder's, with no logits and no labels."""
        return self.num_logits == 0

    def arrays(self) -> list[ArraySpec]:
        """Per-row arrays (first axis: examples) in writing order: every stored kind's
        (`kinds.KINDS`), an array shared by kinds once."""
        specs = list({a.name: a for kind in stored_kinds(self) for a in kind.arrays(self)}.values())
        if self.compress == "none":
            specs = [replace(s, codec="none") for s in specs]
        return specs

    def static_arrays(self) -> list[ArraySpec]:
        """Arrays stored once per store, not per row (e.g. the HSK's static rand/uniform dimensions)."""
        return [a for kind in stored_kinds(self) for a in kind.static_arrays(self)]

    def static_bytes(self) -> int:
        return sum(a.row_bytes for a in self.static_arrays())

    def rows_per_chunk(self, num_examples: int | None = None) -> int:
        """About CHUNK_TARGET_BYTES for the largest array; no more rows than the store has."""
        largest = max(a.row_bytes for a in self.arrays())
        rows = max(1, layout.CHUNK_TARGET_BYTES // largest)  # read at call time: tests shrink chunks
        return rows if num_examples is None else max(1, min(rows, num_examples))

    def bytes_by_array(self, num_examples: int) -> dict[str, int]:
        """Exact uncompressed bytes of chunk data (edge chunks are written whole); each chunk
        file adds its CHECKSUM_BYTES."""
        rows = self.rows_per_chunk(num_examples)
        padded = math.ceil(num_examples / rows) * rows
        return {a.name: padded * a.row_bytes for a in self.arrays()} | {a.name: a.row_bytes for a in self.static_arrays()}

    def specs(self) -> dict[str, ArraySpec]:
        """Every stored array by name, per row and per store."""
        return {a.name: a for a in self.arrays() + self.static_arrays()}

    def groups(self) -> dict[str, str]:
        """Array name -> budget group."""
        return {name: a.group for name, a in self.specs().items()}

    def bytes_by_group(self, num_examples: int) -> dict[str, int]:
        """Uncompressed bytes per budget group: every kind's groups (the report's columns), stored or not."""
        groups = self.groups()
        out = dict.fromkeys((g for kind in KINDS.values() for g in kind.groups), 0)
        for name, nbytes in self.bytes_by_array(num_examples).items():
            out[groups[name]] = out.get(groups[name], 0) + nbytes
        return out


def estimated_disk(shape: StoreShape, raw: dict[str, int]) -> dict[str, int]:
    """Bytes on disk per array: raw / the measured ratio of its codec and content."""
    specs = shape.specs()
    return {name: nbytes if specs[name].codec == "none" else round(nbytes / specs[name].disk_ratio)
            for name, nbytes in raw.items()}
