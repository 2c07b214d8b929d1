"""What the relation kinds' student sides share (MiniLM's att and val, MiniLMv2's qq and kk): the student's rows at the
stored query rows, compared with the teacher's top-k-plus-rest rows (`students.losses.distribution_loss`)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from torch import Tensor

from hskcache.selection.attention import gather_rows, relation, split_heads
from hskcache.errors import UserError
from hskcache.kinds import KINDS, Student
from students.losses import distribution_loss

from students.kinds.base import Loss, Objective, StudentForward, StudentKind

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from hskcache.selection.attention import RelationSpec
    from hskcache.store.meta import StoreMeta


def relation_loss(kind: str, name: str) -> Loss:
    """`distribution_loss` `kind` (kl, mse) of relation kind `name`, summed over the stored relation layers
    (the student's rows, one per layer)."""
    def loss(student: list[Tensor], batch: dict[str, Tensor], s) -> Tensor:
        return sum(distribution_loss(kind, batch[f"{name}_keys"][:, j], batch[f"{name}_probs"][:, j],
                                     batch[f"{name}_rest"][:, j], batch["rel_positions"][:, j], rows, s.denominator)
                   for j, rows in enumerate(student))
    return loss


class RelationStudent(StudentKind):
    """Per head, softmax(left_q · right_k / √d_h) of two recorded projections (`pair`) at the stored
    query rows, in the student layer the store matches to each stored relation layer."""

    def __init__(self, name: str, objectives: Mapping[str, Objective], pair: tuple[str, str]) -> None:
        self.name, self.objectives, self.pair = name, objectives, pair
        self.captures = tuple(sorted(set(pair)))

    def spec(self, meta: StoreMeta) -> RelationSpec | None:
        """What the source records of this relation kind (None: it does not hold it)."""
        return meta.kinds.get(self.name)

    def capture_layers(self, meta: StoreMeta, depth: int) -> tuple[int, ...]:
        """The student layer matched to each stored relation layer, for a student of `depth` layers (the
        store's rule, `hskcache.kinds.relation.RelationKind.student_pairs`: the read takes the same layers)."""
        return KINDS[self.name].student_pairs(self.spec(meta), Student.of(meta, depth), "the student's layers")[1]

    def check(self, meta: StoreMeta, config: PretrainedConfig, student: str) -> None:
        """Fewer student heads average groups of teacher heads: their count must divide the teacher's."""
        heads, teacher = config.num_attention_heads, self.spec(meta).heads
        if teacher % heads:
            raise UserError(f"student {student} has {heads} attention heads, which do not divide the teacher's "
                            f"{teacher}; build a student whose head count divides {teacher}")

    def student(self, forward: StudentForward, batch: dict[str, Tensor]) -> list[Tensor]:
        """The student's rows at the stored query rows of each relation layer, (B, H_S, R, S) each."""
        left, right = self.pair
        rows = batch["rel_positions"]
        out = []
        for j, layer in enumerate(self.capture_layers(forward.meta, forward.depth)):
            captured = forward.captured[layer]
            a, b = split_heads(captured[left], forward.heads), split_heads(captured[right], forward.heads)
            out.append(relation(gather_rows(a, rows[:, j]), b, forward.attention_mask))
        return out
