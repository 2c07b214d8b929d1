"""Evaluating a student on labeled data with the task's metrics (SPEC "Metrics").

Eval data is tokenized with the *student's* tokenizer (saved in its folder), so
`students eval` and train-time eval need neither the teacher nor the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from hskcache.data import TextData, check_labels, load_texts, tokenize_batch
from hskcache.device import autocast, pick_dtype
from hskcache.errors import UserError
from hskcache.teacher.families import takes_token_types
from hskcache.teacher.loading import check_max_length, is_regression
from students.evaluation.metrics import compute_metrics

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
Batch = TypeVar("Batch", torch.Tensor, np.ndarray)


@dataclass(frozen=True, eq=False)
class EvalSet:
    """A labeled split, tokenized once and kept in memory (dev sets are small)."""

    inputs: dict[str, torch.Tensor]
    labels: np.ndarray
    task: str | None
    regression: bool
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def load_eval_set(
    data: str,
    config,
    tokenizer,
    max_length: int,
    split: str = "validation",
    text_cols: Sequence[str] | None = None,
    label_col: str | None = None,
    label_names: Sequence[str] | None = None,
    task: str | None = None,
) -> EvalSet:
    """Load and tokenize `data`, checked against the model `config`'s head and positions.

    `label_names` numbers string labels like the training data; `task` (e.g. the
    store's GLUE task) picks the metrics when the data itself names none.
    """
    check_max_length(max_length, config, "student")
    texts = load_texts(data, split, text_cols, label_col, label_names)
    if texts.labels is None:
        raise UserError(f"eval data {data} has no labels; pass --label-col naming its label column")
    return encode_eval_set(texts, config, tokenizer, max_length, f"eval data {data}", task)


def encode_eval_set(texts: TextData, config, tokenizer, max_length: int, where: str,
                    task: str | None = None) -> EvalSet:
    """Labeled `texts` tokenized for the model `config`, labels checked against its head
    (`where` names the data in a refusal): one encoding for every eval set."""
    regression = is_regression(config)
    check_labels(texts.labels, config.num_labels, regression, where, "model", named=texts.label_names is not None)
    labels = texts.labels.astype(np.float32) if regression else texts.labels
    enc = tokenize_batch(tokenizer, texts.texts_a, texts.texts_b, max_length)
    inputs = {k: torch.from_numpy(enc[k]) for k in MODEL_INPUTS}
    if not takes_token_types(config):  # as the store holds them: none (zeros)
        inputs["token_type_ids"].zero_()
    return EvalSet(inputs, labels, task or texts.task, regression, texts.source)


def trim_padding(inputs: Mapping[str, Batch]) -> dict[str, Batch]:
    """A batch's model inputs (torch or numpy, (B, S) each) cut to its longest real sequence:
    padding is right-aligned and masked, so a model's outputs are unchanged and short
    texts cost less. The one home of that cut (training, prediction, importance scoring)."""
    width = int(inputs["attention_mask"].sum(1).max())
    return {k: v[:, :width] for k, v in inputs.items()}


def trimmed(inputs: dict[str, torch.Tensor], rows: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """`rows` of `inputs` on `device`, cut to their longest real sequence (`trim_padding`)."""
    return {k: v.to(device) for k, v in trim_padding({k: v[rows] for k, v in inputs.items()}).items()}


@torch.no_grad()
def predict(model: nn.Module, inputs: dict[str, torch.Tensor], batch_size: int, device: torch.device,
            dtype: str | None = None) -> np.ndarray:
    """Logits (N, C) in float32, the forward in `dtype` (default: the device's, see
    `hskcache.device.pick_dtype`); each batch is trimmed to its longest real
    sequence (padding is right-aligned and masked, so outputs are unchanged)."""
    was_training = model.training
    model.eval()
    precision = autocast(device, pick_dtype(dtype, device))
    outputs = []
    for rows in torch.arange(len(inputs["input_ids"])).split(batch_size):
        with precision:
            outputs.append(model(**trimmed(inputs, rows, device)).logits.float().cpu())
    model.train(was_training)
    return torch.cat(outputs).numpy()


def evaluate(model: nn.Module, eval_set: EvalSet, batch_size: int, device: torch.device,
             dtype: str | None = None) -> dict[str, float]:
    """The task's metrics (SPEC "Metrics") of `model` on `eval_set`."""
    logits = predict(model, eval_set.inputs, batch_size, device, dtype)
    return compute_metrics(eval_set.task, logits, eval_set.labels, eval_set.regression)


def open_for_eval(model_dir: str, data: str, max_length: int | None, device: torch.device, split: str = "validation",
                  text_cols: Sequence[str] | None = None, label_col: str | None = None) -> tuple[nn.Module, EvalSet]:
    """A model folder (student or teacher, or one written by `students export`, or an .onnx file
    in one) and `data` tokenized with its own tokenizer, labels numbered by its head and metrics
    of the task it was distilled for."""
    from hskcache.teacher.loading import load_tokenizer, named_labels, usable_positions
    from students.models.student import load_student, student_task
    from students.deploy.serving import open_exported

    model = open_exported(model_dir)
    if model is None:
        model = load_student(model_dir).to(device)
    else:
        model_dir = str(model.folder)
    max_length = max_length or min(128, usable_positions(model.config))
    eval_set = load_eval_set(data, model.config, load_tokenizer(model_dir, model.config, "model"), max_length, split=split,
                             text_cols=text_cols, label_col=label_col, label_names=named_labels(model.config),
                             task=student_task(model_dir))
    return model, eval_set

