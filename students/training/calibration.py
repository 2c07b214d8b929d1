"""A regression student's output bias, moved once so its mean output is the teacher's.

Why: a regression teacher fine-tuned on raw scores (the valence task's 1–9) keeps the scores'
mean in the direction of its pooled features, not in its output bias, which AdamW moves by about
the learning rate per step from its initial 0. A student extracted from it keeps only some of
those features, and the HSK stage moves them further: the valence task's extracted student's
mean output is 4.49 below the teacher's, 4.77 after the HSK stage (docs/results.md,
"Regression"). The bias alone would need some 10^4 steps to cross that gap, and the first steps
of the prediction stage bend the whole network towards the offset instead. One shift of the
bias by the mean of (teacher output − student output) over the training rows removes the offset
before the first step. It keeps the student's ranking of the rows, and a classifier is left as it
is (the soft cross-entropy ignores a shift shared by all classes).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from hskcache.errors import UserError

REGRESSION_HEADS = ("recentre", "as-is")  # --regression-head; recentre is the default


def output_layer(model: nn.Module, outputs: int) -> nn.Linear:
    """The model's last linear layer with `outputs` outputs and a bias: the task head's output
    (a classifier of every Hugging Face sequence-classification family registers its head last)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == outputs
              and m.bias is not None]
    if not layers:
        raise UserError(f"--regression-head recentre: the student has no linear output layer with {outputs} "
                        "output(s) and a bias; pass --regression-head as-is")
    return layers[-1]


@torch.no_grad()
def recentre(model: nn.Module, batches: Iterable[dict[str, Tensor]],
             student_outputs: Callable[[dict[str, Tensor]], Tensor]) -> float:
    """Add mean(teacher logits − student outputs) over `batches` to the output bias; returns the shift.

    `student_outputs` runs the student on a batch (eval mode: no dropout) and gives its (B, 1) output.
    """
    total, rows = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            student = student_outputs(batch).float().reshape(-1)
            total += float((batch["logits"].float().reshape(-1) - student).sum())
            rows += len(student)
    finally:
        model.train(was_training)
    if rows == 0:
        return 0.0
    shift = total / rows
    output_layer(model, 1).bias.add_(shift)
    return shift
