"""MiniLMv2's multi-head self-attention relations: Q-Q (`qq`) and K-K (`kk`).

A teacher layer's queries (keys), concatenated over its heads, are re-split
into R relation heads of d_r = d / R columns each (`--relation-heads R`,
default the teacher's head count), and each relation head's
softmax(Q_r Q_rᵀ / √d_r) over the real keys is stored as MiniLM's `att`/`val`
rows are: at the same query rows (`rel_positions`, shared), each row's top-k
keys plus the rest mass, read exactly at fewer rows and keys. The store
records R as the kind's heads (`RelationSpec.heads`). Because R belongs to
the knowledge, not to either model, a student with any head count re-splits
its own queries (keys) into the same R (`students/kinds/qk.py`). The
projections are the hooks' (`hskcache.teacher.hooks`): for a rotary family
(ModernBERT) that is before the rotary embedding is applied.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from hskcache.selection.attention import RelationSpec, select_projection_relation
from hskcache.errors import UserError
from hskcache.options import setting
from hskcache.kinds.base import TeacherInfo, register
from hskcache.kinds.relation import RelationKind, RelationSettings


@dataclass(frozen=True)
class ProjectionRelationSettings(RelationSettings):
    """The relation kinds' shared settings plus the relation heads of qq and kk."""

    relation_heads: int | None = setting(None, "qq/kk relation heads R: the teacher's concatenated queries (keys) are "
                                         "re-split into R heads of width / R (default: the teacher's head count)",
                                         at_least=1)


class ProjectionRelation(RelationKind):
    """softmax(P_r P_rᵀ / √d_r) of one projection P (query or key) in R relation heads."""

    settings = ProjectionRelationSettings

    def __init__(self, name: str, order: int, projection: str) -> None:
        super().__init__(name, order, (projection,), lambda plan, out, projections, heads, positions, mask:
                         select_projection_relation(plan, projections, heads, positions, mask))

    def resolve(self, settings: ProjectionRelationSettings, teacher: TeacherInfo) -> RelationSpec:
        """The shared relation rows, with R relation heads that must divide the teacher's width."""
        heads = settings.relation_heads or teacher.heads
        if teacher.hidden % heads:
            raise UserError(f"--relation-heads {heads} does not divide the teacher's query/key width "
                            f"{teacher.hidden}; use a divisor of {teacher.hidden}, e.g. its {teacher.heads} heads")
        return replace(super().resolve(settings, teacher), heads=heads)


register(ProjectionRelation("qq", 50, "query"))
register(ProjectionRelation("kk", 60, "key"))
