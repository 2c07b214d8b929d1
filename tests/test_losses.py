"""Losses against explicit-loop numpy computations."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hskcache.errors import UserError
from reference import hsk_mse
from students.kinds import STUDENT_KINDS, StudentForward
from students.losses import (HSKProjection, LossSettings, label_loss, prediction_loss, regression_mse,
                            soft_cross_entropy)
from students.training.objectives import table


def _hsk_case(seed: int = 0, d_student: int = 3, d_teacher: int = 4):
    """B=2, S=5, N_D=2, N_L=3 with some empty slots and a random width mask."""
    rng = np.random.default_rng(seed)
    states = [rng.normal(size=(2, 5, d_student)).astype(np.float32) for _ in range(2)]
    positions = np.array([[[3, 0, -1], [1, -1, -1]], [[4, 2, 1], [0, 3, -1]]], dtype=np.int64)
    mask = rng.random((2, 2, 3, d_teacher)) < 0.5
    mask &= (positions >= 0)[..., None]
    hsk = np.where(mask, rng.normal(size=mask.shape), 0.0).astype(np.float32)
    return states, positions, mask, hsk


def _projection(d_student, d_teacher, weight):
    projection = HSKProjection(d_student, d_teacher)
    with torch.no_grad():
        projection.linear.weight.copy_(torch.from_numpy(weight.T))
    return projection


def hsk_objective(states, hsk, positions, mask, projection, mode):
    """The `hsk` objective as the trainer runs it: the HSK student kind's projected vectors at the
    stored positions (stored layer j from `states[j]`), then the objective's bound loss."""
    out = SimpleNamespace(hidden_states=(states[0], *states))  # the embeddings, then one state per stored layer
    forward = StudentForward(out, {}, 1, None, projection, None, 1)
    batch = {"hsk": hsk, "positions": positions, "hsk_mask": mask}
    return table()["hsk"].loss(STUDENT_KINDS["hsk"].student(forward, batch), batch, LossSettings(mode, 1.0, False))


def _call(states, positions, mask, hsk, projection, mode):
    return hsk_objective([torch.from_numpy(s) for s in states], torch.from_numpy(hsk), torch.from_numpy(positions),
                         torch.from_numpy(mask), projection, mode)


def test_projection_identity_when_widths_match():
    projection = HSKProjection(4, 4)
    x = torch.randn(2, 3, 4)
    assert list(projection.parameters()) == []
    assert torch.equal(projection(x), x)


def test_projection_is_linear_without_bias():
    projection = HSKProjection(3, 5)
    assert [tuple(p.shape) for p in projection.parameters()] == [(5, 3)]
    assert torch.allclose(projection(torch.zeros(2, 3)), torch.zeros(2, 5))


@pytest.mark.parametrize("mode", ["zero-fill", "masked"])
def test_hsk_loss_matches_loops(mode):
    states, positions, mask, hsk = _hsk_case()
    weight = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    got = _call(states, positions, mask, hsk, _projection(3, 4, weight), mode)
    assert got.item() == pytest.approx(hsk_mse(states, positions, mask, hsk, weight, mode), rel=1e-5)


def test_zero_fill_and_masked_differ():
    states, positions, mask, hsk = _hsk_case()
    weight = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    projection = _projection(3, 4, weight)
    zero_fill = _call(states, positions, mask, hsk, projection, "zero-fill").item()
    masked = _call(states, positions, mask, hsk, projection, "masked").item()
    assert zero_fill != pytest.approx(masked)


def test_hsk_loss_identity_projection():
    states, positions, mask, hsk = _hsk_case(d_student=4)
    got = _call(states, positions, mask, hsk, HSKProjection(4, 4), "zero-fill")
    assert got.item() == pytest.approx(hsk_mse(states, positions, mask, hsk, np.eye(4), "zero-fill"), rel=1e-5)


def test_empty_layer_contributes_zero_and_gradients_are_finite():
    states, positions, mask, hsk = _hsk_case()
    positions[:, 1] = -1
    mask[:, 1] = False
    hsk[:, 1] = 0.0
    weight = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    projection = _projection(3, 4, weight)
    tensors = [torch.from_numpy(s).requires_grad_() for s in states]
    for mode in ("zero-fill", "masked"):
        loss = hsk_objective(tensors, torch.from_numpy(hsk), torch.from_numpy(positions), torch.from_numpy(mask),
                             projection, mode)
        assert loss.item() == pytest.approx(hsk_mse(states, positions, mask, hsk, weight, mode), rel=1e-5)
        loss.backward()
        assert torch.isfinite(tensors[0].grad).all() and torch.equal(tensors[1].grad, torch.zeros_like(tensors[1]))
        assert torch.isfinite(projection.linear.weight.grad).all()


def test_hsk_loss_rejects_unknown_mode():
    states, positions, mask, hsk = _hsk_case()
    with pytest.raises(UserError):
        _call(states, positions, mask, hsk, HSKProjection(3, 4), "average")


def test_soft_cross_entropy_matches_loops():
    student = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = np.array([[0.3, 1.5, -0.2], [2.0, 0.0, 1.0]])
    temperature = 2.0
    expected = 0.0
    for s, t in zip(student, teacher):
        t_exp = [np.exp(v / temperature) for v in t]
        s_exp = [np.exp(v / temperature) for v in s]
        for c in range(3):
            expected -= t_exp[c] / sum(t_exp) * np.log(s_exp[c] / sum(s_exp))
    expected /= 2
    got = soft_cross_entropy(torch.tensor(student), torch.tensor(teacher), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    assert prediction_loss(torch.tensor(student), torch.tensor(teacher), temperature, False).item() == got.item()


def test_regression_mse_matches_hand():
    student = torch.tensor([[0.5], [2.0], [-1.0]])
    teacher = torch.tensor([1.0, 1.0, 1.0])
    expected = (0.25 + 1.0 + 4.0) / 3
    assert regression_mse(student, teacher).item() == pytest.approx(expected)
    assert prediction_loss(student, teacher, 1.0, True).item() == pytest.approx(expected)


def test_label_loss_leaves_out_rows_without_a_label():
    student = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.2, 0.1, 0.0]])
    labels = [2, -1, 0]  # the middle row: an augmented one, label unknown
    expected = 0.0
    for s, y in zip(student, labels):
        if y >= 0:
            expected -= np.log(np.exp(s[y]) / np.exp(s).sum())
    expected /= 2  # the labelled rows
    got = label_loss(torch.tensor(student), torch.tensor(labels), False)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    regression = label_loss(torch.tensor([[0.5], [2.0], [9.0]]), torch.tensor([1.0, 1.0, float("nan")]), True)
    assert regression.item() == pytest.approx((0.25 + 1.0) / 2)
    assert label_loss(torch.tensor(student), torch.tensor([-1, -1, -1]), False).item() == 0.0
