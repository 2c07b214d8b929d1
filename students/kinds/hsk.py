"""The student side of the HSK: the student's hidden states at the stored positions, projected by W."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import Tensor

from hskcache.kinds.hsk import HSKRead

from students.losses import projected_hsk_loss

from students.kinds.base import Objective, StudentForward, StudentKind, register

if TYPE_CHECKING:
    from students.training.trainer import TrainConfig


def gather_projected(states: Tensor, positions: Tensor, projection: Callable[[Tensor], Tensor]) -> Tensor:
    """Student states (B, S, d_S) at the stored positions (B, N_L; -1 empty reads
    token 0), projected to the teacher's width: (B, N_L, d_T). Only those tokens are projected."""
    index = positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, states.shape[-1])
    return projection(states.gather(1, index))


class HSK(StudentKind):
    name = "hsk"
    objectives = {"hsk": Objective(
        lambda student, batch, s: projected_hsk_loss(student, batch["hsk"], batch["positions"], batch["hsk_mask"],
                                                     s.width_loss, s.denominator),
        "HSK MSE (Hid-Seq on the selected tokens and activations)")}
    hidden_states = True

    def read(self, run: TrainConfig, compared: bool) -> dict[str, Any]:
        """The HSK at --hsk (its read settings, `hskcache.kinds.hsk.HSKRead`) when an objective compares it
        (a stage runs only where it is read), else none (`HSKRead(None)`): a stage that compares no HSK
        (the prediction stage, a relation-only stage 1) has the source fetch and decode none of its arrays."""
        return {"kinds": {self.name: run.reads[self.name] if compared else HSKRead(None)}}

    def student(self, forward: StudentForward, batch: dict[str, Tensor]) -> list[Tensor]:
        """The projected student vectors at the stored positions, one (B, N_L, d_T) per stored
        layer: stored layer j of a depth-n read belongs to student layer L' - n + 1 + j."""
        positions = batch["positions"]
        hidden = forward.out.hidden_states
        n, top = positions.shape[1], len(hidden) - 1
        return [gather_projected(hidden[top - n + 1 + j].float(), positions[:, j], forward.projection)
                for j in range(n)]


register(HSK())
