"""Honest model selection: which epoch is kept is decided on data that is not reported.

`--select-on` names where: `train-holdout:FRACTION` (a seeded slice of the
training rows, not trained on), `eval` (the reported eval split itself: the
old optimistic behaviour, kept for comparison) or `last` (no selection). The general
stage (`students train --general`) has no labels: it selects on the held-out rows'
distillation loss (`metrics.HOLDOUT_LOSS`, lower is better).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from hskcache.data import TextData, known_labels
from hskcache.errors import UserError
from hskcache.kinds.hsk import HSKRead
from hskcache.storage.packed import PackedBatch
from hskcache.teacher.loading import is_regression
from students.evaluation.evaluate import MODEL_INPUTS, EvalSet

SELECT_ON = ("train-holdout", "eval", "last")


def parse_select_on(text: str, allowed: tuple[str, ...] = SELECT_ON) -> tuple[str, float | None]:
    """`train-holdout:0.1` -> ("train-holdout", 0.1); `eval`/`last` -> (name, None)."""
    name, _, value = text.partition(":")
    usage = " | ".join(f"{a}:FRACTION" if a == "train-holdout" else a for a in allowed)
    if name not in allowed:
        raise UserError(f"--select-on {text!r} is unknown; use {usage}")
    if name != "train-holdout":
        if value:
            raise UserError(f"--select-on {name} takes no value; use {usage}")
        return name, None
    try:
        fraction = float(value)
    except ValueError:
        raise UserError(f"--select-on {text!r} needs a fraction, e.g. train-holdout:0.1") from None
    if not 0 < fraction < 1:
        raise UserError(f"--select-on {text}: the held-out fraction must be in (0, 1), e.g. 0.1")
    return name, fraction


def holdout_rows(candidates: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded, sorted sample of ⌈fraction·n⌉ of `candidates` (at least one, never all)."""
    n = len(candidates)
    count = int(np.ceil(fraction * n))
    if n < 2 or count >= n:
        raise UserError(f"a held-out fraction {fraction} of {n} rows leaves nothing to train on; "
                        "use a smaller fraction or more data")
    return np.sort(np.random.default_rng(seed).choice(candidates, size=count, replace=False))


def holdout_split(data: TextData, fraction: float | None, seed: int) -> tuple[TextData, TextData | None]:
    """(rows to train on, held-out rows); no split when `fraction` is None."""
    if fraction is None:
        return data, None
    held = holdout_rows(np.arange(len(data)), fraction, seed)
    keep = np.setdiff1d(np.arange(len(data)), held)

    def take(rows: np.ndarray) -> TextData:
        return dataclasses.replace(
            data, texts_a=[data.texts_a[i] for i in rows],
            texts_b=None if data.texts_b is None else [data.texts_b[i] for i in rows],
            labels=None if data.labels is None else data.labels[rows])

    return take(keep), take(held)


HOLDOUT_SEED = 0  # every run of a store holds out the same rows, so runs compare on one slice


@dataclass(frozen=True, eq=False)
class Holdout:
    """Store rows kept out of training, and their gold-labeled part as an eval set (None for the
    general stage, which scores them by the distillation loss)."""

    rows: torch.Tensor  # example ids (store rows), sorted
    eval_set: EvalSet | None


def holdout_eval_set(source, fraction: float, config) -> Holdout:
    """Hold out a seeded `fraction` of the store's rows; select on those with a gold label
    (augmented or unlabeled rows have none: they are held out but not scored)."""
    rows = holdout_rows(np.arange(source.num_examples), fraction, HOLDOUT_SEED)
    batch = source.get(rows, kinds={"hsk": HSKRead(None)})  # inputs and labels: no HSK decoded
    labels = batch["labels"].numpy()
    known = known_labels(labels, source.regression)
    if not known.any():
        raise UserError(f"the {len(rows)} held-out rows have no gold labels (unlabeled or augmented data); "
                        "use --select-on last or eval")
    inputs = {k: batch[k][known] for k in MODEL_INPUTS}
    eval_set = EvalSet(inputs, labels[known].astype(np.float32 if source.regression else np.int64),
                       source.meta.task, is_regression(config), f"{int(known.sum())} held-out training rows")
    return Holdout(torch.from_numpy(rows), eval_set)


def holdout_rows_only(source, fraction: float) -> Holdout:
    """The general stage's held-out slice: the same seeded rows, scored by their distillation loss."""
    return Holdout(torch.from_numpy(holdout_rows(np.arange(source.num_examples), fraction, HOLDOUT_SEED)), None)


def drop_rows(batch: dict[str, torch.Tensor] | PackedBatch, rows: torch.Tensor) -> dict[str, torch.Tensor] | PackedBatch:
    """The batch (dense or packed: every tensor is per row) without the rows whose example id is in `rows`."""
    tensors = batch.tensors if isinstance(batch, PackedBatch) else batch
    keep = ~torch.isin(tensors["example_id"], rows)
    if bool(keep.all()):
        return batch
    kept = {k: v[keep] for k, v in tensors.items()}
    return dataclasses.replace(batch, tensors=kept) if isinstance(batch, PackedBatch) else kept
