"""The student side of the teacher's logits: the prediction stage's objectives."""
from __future__ import annotations

from torch import Tensor

from students.losses import label_loss, prediction_loss
from students.stages import PRED

from students.kinds.base import Objective, StudentForward, StudentKind, register


class Logits(StudentKind):
    name = "logits"
    objectives = {
        "pred": Objective(lambda student, batch, s: prediction_loss(student, batch["logits"], s.temperature,
                                                                    s.regression, s.denominator),
                          "soft cross-entropy to the teacher's logits (MSE for regression)", PRED),
        "label": Objective(lambda student, batch, s: label_loss(student, batch["labels"], s.regression,
                                                                s.denominator),
                           "the task loss to the gold labels (cross-entropy, MSE for regression; rows without a "
                           "label, e.g. augmented ones, are left out)", PRED),
    }

    def student(self, forward: StudentForward, batch: dict[str, Tensor]) -> Tensor:
        return forward.out.logits.float()


register(Logits())
