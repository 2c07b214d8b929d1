"""Distillation losses: HSK MSE (SPEC "Losses and schedule"), prediction losses, and the
attention / value-relation losses; the student kinds' objectives bind them (`students.kinds`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hskcache.selection.attention import coarsen, densify_keys, group_heads
from hskcache.data import known_labels
from hskcache.errors import UserError

HSK_MODES = ("zero-fill", "masked")
HSK_PROJECTIONS = ("random", "kept")  # the init of W (`HSKProjection`)
Denominator = Callable[[Tensor], Tensor]


def batch_count(count: Tensor) -> Tensor:
    """The denominator of a batch mean: what was counted in this batch (at least 1).

    Every loss divides by a `Denominator` of its count, so data-parallel training
    can pass one that counts the whole global batch across ranks instead.
    """
    return count.clamp(min=1)


class HSKProjection(nn.Module):
    """The learned map W of H^S W: student width d_S to teacher width d_T.

    No bias: SPEC (and the paper's Eq. 3) define a purely linear W, unlike
    TinyBERT's `fit_dense`, which adds one. When d_S == d_T it is the identity
    and owns no parameters, so a ROSITA student is matched to the teacher as is.
    """

    def __init__(self, d_student: int, d_teacher: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_student, d_teacher, bias=False) if d_student != d_teacher else None

    def select(self, kept: list[int]) -> None:
        """W as the selection matrix of the teacher dimensions an extracted student kept:
        student dimension i maps to teacher dimension kept[i], every other teacher dimension to 0.

        An ETD student's residual dimension i *is* the teacher's dimension kept[i], and its
        classifier reads them in that basis; a random W asks the HSK stage to re-encode the
        residual stream in a random basis instead (docs/results.md, "A 12-layer teacher").
        """
        if self.linear is None:
            return
        d_teacher, d_student = self.linear.weight.shape
        if len(kept) != d_student or len(set(kept)) != d_student or not all(0 <= k < d_teacher for k in kept):
            raise UserError(f"the student's kept teacher dimensions ({len(kept)}) are not {d_student} distinct "
                            f"indices below the store's width {d_teacher}; use --hsk-projection random")
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[torch.tensor(kept), torch.arange(d_student)] = 1.0

    def forward(self, states: Tensor) -> Tensor:
        return states if self.linear is None else self.linear(states)


def projected_hsk_loss(
    predicted: list[Tensor],
    hsk: Tensor,
    positions: Tensor,
    hsk_mask: Tensor,
    mode: str,
    denominator: Denominator = batch_count,
) -> Tensor:
    """The HSK MSE from already projected student vectors (`students.kinds.hsk.gather_projected`, one
    per stored layer).

    Each layer's MSE is a mean over the whole batch: `zero-fill` averages every
    activation of every non-empty token against the zero-filled teacher vector
    (the paper); `masked` averages only the kept activations. A layer with
    nothing selected contributes 0. The layers' counts go to `denominator`
    together (one collective when distributed).
    """
    if mode not in HSK_MODES:
        raise UserError(f"unknown HSK loss mode {mode!r}; use one of {', '.join(HSK_MODES)}")
    sums, counts = [], []
    for j, layer in enumerate(predicted):
        present = positions[:, j] >= 0
        if mode == "zero-fill":
            counted = present.unsqueeze(-1).expand_as(layer)
        else:
            counted = hsk_mask[:, j] & present.unsqueeze(-1)
        sums.append(torch.where(counted, (layer - hsk[:, j]) ** 2, 0.0).sum())
        counts.append(counted.sum())
    return (torch.stack(sums) / denominator(torch.stack(counts).to(hsk.dtype))).sum()


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
                       denominator: Denominator = batch_count) -> Tensor:
    """Batch mean of -Σ softmax(t/T) · log_softmax(s/T).

    Not multiplied by T²: SPEC and TinyBERT use the plain soft cross-entropy.
    """
    teacher_probs = F.softmax(teacher_logits / temperature, dim=-1)
    per_row = -(teacher_probs * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1)
    return per_row.sum() / denominator(per_row.new_tensor(float(len(per_row))))


def regression_mse(student: Tensor, teacher: Tensor, denominator: Denominator = batch_count) -> Tensor:
    """MSE to the teacher's regression output; (B,) and (B, 1) are both accepted."""
    squared = (student - teacher.reshape(student.shape)) ** 2
    return squared.sum() / denominator(squared.new_tensor(float(squared.numel())))


def prediction_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, is_regression: bool,
    denominator: Denominator = batch_count,
) -> Tensor:
    """The prediction-stage loss: soft CE for classification, MSE for regression."""
    if is_regression:
        return regression_mse(student_logits, teacher_logits, denominator)
    return soft_cross_entropy(student_logits, teacher_logits, temperature, denominator)


def label_loss(student_logits: Tensor, labels: Tensor, is_regression: bool,
                denominator: Denominator = batch_count) -> Tensor:
    """The task loss to the gold labels, over the rows that have one (class -1 or NaN: unknown)."""
    known = known_labels(labels, is_regression)
    if is_regression:
        per_row = (student_logits.reshape(labels.shape) - torch.nan_to_num(labels)) ** 2
    else:
        per_row = F.cross_entropy(student_logits, labels.long().clamp(min=0), reduction="none")
    return torch.where(known, per_row, 0.0).sum() / denominator(known.sum().to(per_row.dtype))


DISTRIBUTION_LOSSES = ("kl", "mse")


def distribution_loss(kind: str, keys: Tensor, probs: Tensor, rest: Tensor, positions: Tensor,
                      student: Tensor, denominator: Denominator = batch_count) -> Tensor:
    """One layer's attention (or value-relation) loss on the teacher's coarsening.

    `keys`/`probs` (B, H_T, N, k) and `rest` (B, H_T, N) are the stored
    top-k-plus-rest rows at query `positions` (B, N, -1 empty); `student`
    (B, H_S, N, S) holds the student's full distributions at the same rows.
    `kl`: mean over heads and non-empty rows of KL(teacher ‖ student), both
    coarsened to the teacher's kept keys plus one rest bin — exactly the KL
    of the coarsened distributions (MiniLM's L_AT / L_VR when k = S).
    `mse`: mean squared error of the kept probabilities (Att-MSE on
    probabilities). With fewer student heads, consecutive groups of
    H_T / H_S teacher heads are averaged first (`hskcache.selection.attention.group_heads`).
    Means divide by `denominator` of their count (`batch_count`).
    """
    if kind not in DISTRIBUTION_LOSSES:
        raise UserError(f"unknown attention loss {kind!r}; use one of {', '.join(DISTRIBUTION_LOSSES)}")
    t_heads, s_heads = keys.shape[1], student.shape[1]
    if t_heads % s_heads:
        raise UserError(f"the student has {s_heads} attention heads, which do not divide the teacher's "
                        f"{t_heads}; build a student whose head count divides {t_heads}")
    teacher, kept = densify_keys(keys, probs, student.shape[-1])
    rest = rest.float()
    if s_heads != t_heads:
        teacher, kept, rest = group_heads(teacher, kept, rest, s_heads)
    valid = (positions >= 0)[:, None, :].expand(-1, s_heads, -1)
    student = student.float()
    if kind == "mse":
        counted = kept & valid.unsqueeze(-1)
        return torch.where(counted, (student - teacher) ** 2, 0.0).sum() / denominator(counted.sum().float())
    s_kept, s_rest = coarsen(student, kept)
    tiny = torch.finfo(torch.float32).tiny
    kl = ((torch.xlogy(teacher, teacher) - torch.xlogy(teacher, s_kept.clamp(min=tiny))).sum(-1)
          + torch.xlogy(rest, rest) - torch.xlogy(rest, s_rest.clamp(min=tiny)))
    return torch.where(valid, kl, 0.0).sum() / denominator(valid.sum().float())


@dataclass(frozen=True)
class LossSettings:
    """The run's settings that losses read, and the batch-mean denominator."""

    width_loss: str  # HSK_MODES
    temperature: float
    regression: bool
    denominator: Denominator = batch_count
