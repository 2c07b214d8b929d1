"""Metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from hskcache.errors import UserError
from students.evaluation.metrics import average_ranks, compute_metrics, primary_metric


def _logits(predicted, classes=2):
    return np.eye(classes)[predicted] * 2.0 - 1.0


# TP=4, FN=2, FP=1, TN=3
LABELS = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
PREDICTED = np.array([1, 1, 1, 1, 0, 0, 1, 0, 0, 0])


def test_binary_confusion_metrics():
    metrics = compute_metrics("mrpc", _logits(PREDICTED), LABELS, False)
    assert metrics == pytest.approx({"accuracy": 7 / 10, "f1": 2 * 4 / (2 * 4 + 1 + 2)})
    cola = compute_metrics("cola", _logits(PREDICTED), LABELS, False)
    mcc = (4 * 3 - 1 * 2) / math.sqrt((4 + 1) * (4 + 2) * (3 + 1) * (3 + 2))
    assert cola == pytest.approx({"accuracy": 0.7, "mcc": mcc})


def test_multiclass_mcc():
    # confusion (true × pred): [[2,0,0],[0,0,1],[0,0,1]]; c=3, s=4, t=(2,1,1), p=(2,0,2)
    metrics = compute_metrics("cola", _logits(np.array([0, 2, 2, 0]), 3), np.array([0, 1, 2, 0]), False)
    assert metrics["mcc"] == pytest.approx((3 * 4 - 6) / math.sqrt((16 - 8) * (16 - 6)))


def test_mcc_is_zero_when_undefined():
    metrics = compute_metrics("cola", _logits(np.ones(4, dtype=int)), np.array([1, 0, 1, 0]), False)
    assert metrics["mcc"] == 0.0


@pytest.mark.parametrize(
    ("task", "classes", "keys"),
    [("sst2", 2, {"accuracy"}), ("qqp", 2, {"accuracy", "f1"}), (None, 2, {"accuracy", "f1"}),
     ("my-task", 2, {"accuracy", "f1"}), (None, 3, {"accuracy"}), ("mnli", 3, {"accuracy"})],
)
def test_metric_names(task, classes, keys):
    labels = np.arange(6) % classes
    assert set(compute_metrics(task, _logits(labels, classes), labels, False)) == keys


def test_pearson_and_spearman_with_ties():
    # ranks of x with ties averaged: 1, 2.5, 2.5, 4; y ranks: 1, 3, 2, 4
    x = np.array([[1.0], [2.0], [2.0], [3.0]])
    y = np.array([10.0, 30.0, 20.0, 40.0])
    metrics = compute_metrics("stsb", x, y, True)
    assert metrics["spearman"] == pytest.approx(4.5 / math.sqrt(4.5 * 5.0))
    # pearson: dx = -1,0,0,1 ; dy = -15,5,-5,15 -> 30 / sqrt(2 * 500)
    assert metrics["pearson"] == pytest.approx(30 / math.sqrt(2 * 500))
    assert set(compute_metrics(None, x[:, 0], y, True)) == {"pearson", "spearman"}


def test_average_ranks():
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_constant_predictions_give_zero_correlation():
    metrics = compute_metrics("stsb", np.ones(4), np.array([1.0, 2.0, 3.0, 4.0]), True)
    assert metrics == {"pearson": 0.0, "spearman": 0.0}


def test_unlabeled_rows_are_rejected():
    with pytest.raises(UserError):
        compute_metrics("sst2", _logits(np.array([0, 1])), np.array([-1, 1]), False)
    with pytest.raises(UserError):
        compute_metrics("stsb", np.ones(2), np.array([np.nan, 1.0]), True)


def test_primary_metric():
    assert primary_metric("cola", False) == "mcc"
    assert primary_metric("stsb", True) == "spearman"
    assert primary_metric(None, True) == "spearman"
    assert primary_metric("mrpc", False) == "accuracy"
    assert primary_metric("sst2", False) == "accuracy"
