"""The student side of MiniLMv2's Q-Q and K-K relations (`qq`, `kk`; the store side is `hskcache/kinds/qk.py`).

The student's concatenated queries (keys) are re-split into the store's R
relation heads (the kind's `RelationSpec.heads`), not into its own attention
heads, so its head count is free; only its query/key width must split into R.
Its rows are then the relation kinds' (`relations.RelationStudent`) and are
compared as for `att`/`val`: KL on the teacher's top-k-plus-rest coarsening,
summed over the stored relation layers.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from torch import Tensor

from hskcache.errors import UserError

from students.kinds.base import Objective, StudentForward, register
from students.kinds.relations import RelationStudent, relation_loss

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from hskcache.store.meta import StoreMeta


class ProjectionRelationStudent(RelationStudent):
    """softmax(P_r P_rᵀ / √d_r) of the student's projection P (query or key) in the store's R relation heads."""

    def __init__(self, name: str, projection: str, paper: str) -> None:
        super().__init__(name, {name: Objective(relation_loss("kl", name), paper)}, (projection, projection))

    def check(self, meta: StoreMeta, config: PretrainedConfig, student: str) -> None:
        """The student's query/key width (heads × head size) must split into the store's R relation heads."""
        heads = self.spec(meta).heads
        head_size = getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)  # ROSITA records it
        width = config.num_attention_heads * head_size
        if width % heads:
            raise UserError(f"student {student}'s query/key width {width} does not split into the store's {heads} "
                            f"relation heads ({self.name}); build a student whose width divides by {heads}, or "
                            "extract with a --relation-heads that divides both widths")

    def student(self, forward: StudentForward, batch: dict[str, Tensor]) -> list[Tensor]:
        """The relation rows at the stored query rows, (B, R, N, S) per relation layer: the projection split
        into the store's R relation heads instead of the student's attention heads."""
        return super().student(replace(forward, heads=self.spec(forward.meta).heads), batch)


register(ProjectionRelationStudent("qq", "query", "Q-Q KL (MiniLMv2): the queries' relation in the store's R "
                                   "relation heads, exact on the top-k-plus-rest coarsening"))
register(ProjectionRelationStudent("kk", "key", "K-K KL (MiniLMv2): the keys' relation in the store's R relation "
                                   "heads, exact on the top-k-plus-rest coarsening"))
