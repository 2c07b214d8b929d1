"""Att-KL / Val-KL on the top-k-plus-rest coarsening and Att-MSE, against dense loop computations."""
from __future__ import annotations

import math

import pytest
import torch

from hskcache.selection.attention import top_keys
from hskcache.errors import UserError
from reference import coarsened_row
from students.losses import distribution_loss

B, N, S = 3, 4, 7
LENGTHS = [7, 5, 3]  # real keys per example; the rest is padding
POSITIONS = torch.tensor([[0, 3, 1, 2], [4, 0, -1, -1], [1, 0, 2, -1]])


def _dists(heads: int, seed: int) -> torch.Tensor:
    """Random distributions over each example's real keys, (B, heads, N, S)."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, heads, N, S, generator=gen) * 2
    mask = torch.arange(S)[None, :] < torch.tensor(LENGTHS)[:, None]
    return torch.softmax(scores.masked_fill(~mask[:, None, None, :], float("-inf")), dim=-1), mask


def _rows(b: int):
    return [n for n in range(N) if POSITIONS[b, n] >= 0]


def _coarse_loop(teacher, k, b, heads_of_group, n):
    """The exact coarsening of the group-average of the given teacher heads, as (bins {key: p}, rest)."""
    rows = [coarsened_row(teacher[b, h, n], LENGTHS[b], k) for h in heads_of_group]
    common = set(rows[0][0]).intersection(*[set(r[0]) for r in rows[1:]])
    bins = {key: sum(float(teacher[b, h, n, key]) for h in heads_of_group) / len(heads_of_group) for key in common}
    return bins, 1.0 - sum(bins.values())


def _expected(kind, teacher, student, k):
    t_heads, s_heads = teacher.shape[1], student.shape[1]
    size = t_heads // s_heads
    total, count = 0.0, 0
    for b in range(B):
        for n in _rows(b):
            for s in range(s_heads):
                bins, rest = _coarse_loop(teacher, k, b, range(s * size, (s + 1) * size), n)
                q = student[b, s, n].double()
                if kind == "kl":
                    q_rest = sum(float(q[j]) for j in range(LENGTHS[b]) if j not in bins)
                    value = sum(p * math.log(p / float(q[j])) for j, p in bins.items() if p > 0)
                    value += rest * math.log(rest / q_rest) if rest > 1e-6 else 0.0
                    total, count = total + value, count + 1
                else:
                    for j, p in bins.items():
                        total, count = total + (float(q[j]) - p) ** 2, count + 1
    return total / count if count else 0.0


def _loss(kind, teacher, student, mask, k):
    keys, probs, rest = top_keys(teacher, mask, POSITIONS, k)
    return distribution_loss(kind, keys, probs, rest, POSITIONS, student).item()


@pytest.mark.parametrize("kind", ["kl", "mse"])
@pytest.mark.parametrize("t_heads,s_heads", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("k", [1, 3, S])
def test_coarsened_losses_match_dense_loops(kind, t_heads, s_heads, k):
    teacher, mask = _dists(t_heads, 0)
    student, _ = _dists(s_heads, 1)
    assert _loss(kind, teacher, student, mask, k) == pytest.approx(_expected(kind, teacher, student, k), rel=1e-5, abs=1e-6)


def test_all_keys_is_the_dense_kl():
    """With every key kept the coarsened KL is MiniLM's: mean over heads and rows of KL(A_T ‖ A_S)."""
    teacher, mask = _dists(4, 2)
    student, _ = _dists(4, 3)
    dense = [float((teacher[b, h, n, :LENGTHS[b]] * (teacher[b, h, n, :LENGTHS[b]] / student[b, h, n, :LENGTHS[b]]).log()).sum())
             for b in range(B) for n in _rows(b) for h in range(4)]
    assert _loss("kl", teacher, student, mask, S) == pytest.approx(sum(dense) / len(dense), rel=1e-5)


def test_coarsened_kl_is_below_the_dense_kl_and_zero_at_the_teacher():
    teacher, mask = _dists(4, 4)
    student, _ = _dists(4, 5)
    full = _loss("kl", teacher, student, mask, S)
    assert 0 < _loss("kl", teacher, student, mask, 2) < full  # coarsening never increases a KL
    assert _loss("kl", teacher, teacher, mask, 2) == pytest.approx(0.0, abs=1e-6)


def test_heads_that_do_not_divide_are_refused():
    teacher, mask = _dists(4, 0)
    student, _ = _dists(3, 1)
    with pytest.raises(UserError, match="do not divide"):
        _loss("kl", teacher, student, mask, 2)


def test_gradients_are_finite_with_padding_and_empty_rows():
    teacher, mask = _dists(4, 0)
    scores = torch.randn(B, 2, N, S, requires_grad=True)
    student = torch.softmax(scores.masked_fill(~mask[:, None, None, :], float("-inf")), dim=-1)
    keys, probs, rest = top_keys(teacher, mask, POSITIONS, 2)
    distribution_loss("kl", keys, probs, rest, POSITIONS, student).backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0
