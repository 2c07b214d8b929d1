"""GLUE-style evaluation metrics (SPEC "Metrics"), numpy only."""

from __future__ import annotations

import numpy as np

from hskcache.errors import UserError

GLUE_TASKS = frozenset({
    "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli-mm", "mnli_matched", "mnli_mismatched",
    "qnli", "rte", "wnli", "ax",
})
F1_TASKS = frozenset({"mrpc", "qqp"})
HOLDOUT_LOSS = "loss"  # the general stage's selection metric: the held-out rows' distillation loss
LOWER_IS_BETTER = frozenset({HOLDOUT_LOSS})


def compute_metrics(task: str | None, preds: np.ndarray, labels: np.ndarray, is_regression: bool) -> dict[str, float]:
    """Metrics for one evaluation split.

    `preds` are logits (N, C) for classification (argmax taken here) or outputs
    (N,) / (N, 1) for regression. Accuracy always for classification; F1 for
    MRPC, QQP and any binary task outside GLUE; MCC for CoLA; Pearson and
    Spearman for STS-B and every regression task.
    """
    preds = np.asarray(preds)
    labels = np.asarray(labels)
    if is_regression:
        values = preds.reshape(len(preds), -1)[:, 0].astype(np.float64)
        truth = labels.astype(np.float64)
        if np.isnan(truth).any():
            raise UserError("evaluation labels contain NaN (unlabeled rows); evaluate on a labeled split")
        return {"pearson": pearson(values, truth), "spearman": spearman(values, truth)}
    if (labels < 0).any():
        raise UserError("evaluation labels contain -1 (unlabeled rows); evaluate on a labeled split")
    predicted = preds.argmax(-1)
    metrics = {"accuracy": float((predicted == labels).mean())}
    binary = preds.shape[-1] == 2
    if task in F1_TASKS or (binary and task not in GLUE_TASKS):
        metrics["f1"] = f1_binary(predicted, labels)
    if task == "cola":
        metrics["mcc"] = matthews(predicted, labels)
    return metrics


def primary_metric(task: str | None, is_regression: bool) -> str:
    """The metric that picks the best checkpoint: the paper's dev metric.

    Spearman for regression (STS-B), MCC for CoLA, accuracy otherwise (the paper
    reports accuracy on the MRPC/QQP dev sets; F1 is reported alongside).
    """
    if is_regression:
        return "spearman"
    return "mcc" if task == "cola" else "accuracy"


def improves(metric: str, score: float, best: float | None) -> bool:
    """Whether `score` is a better checkpoint than `best` (None: none yet) by `metric`'s direction."""
    return best is None or (score < best if metric in LOWER_IS_BETTER else score > best)


def f1_binary(predicted: np.ndarray, labels: np.ndarray) -> float:
    """F1 of class 1; 0 when there is no true or predicted positive."""
    tp = float(((predicted == 1) & (labels == 1)).sum())
    fp = float(((predicted == 1) & (labels != 1)).sum())
    fn = float(((predicted != 1) & (labels == 1)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation, multi-class form (Gorodkin); 0 when undefined."""
    classes = int(max(predicted.max(), labels.max())) + 1
    confusion = np.zeros((classes, classes), dtype=np.float64)
    np.add.at(confusion, (labels, predicted), 1)
    correct, total = np.trace(confusion), confusion.sum()
    true_counts, pred_counts = confusion.sum(1), confusion.sum(0)
    numerator = correct * total - pred_counts @ true_counts
    denominator = np.sqrt((total**2 - pred_counts @ pred_counts) * (total**2 - true_counts @ true_counts))
    return float(numerator / denominator) if denominator else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant (e.g. an untrained
    model), so checkpoint comparison never sees NaN."""
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx @ dx) * (dy @ dy))
    return float(dx @ dy / denominator) if denominator else 0.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation: Pearson of the ranks, ties sharing their mean rank."""
    return pearson(average_ranks(x), average_ranks(y))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; equal values get the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]
