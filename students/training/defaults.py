"""Recipe defaults that measurements chose (docs/training.md, "Defaults"): learning rates by how the
student was initialised, and the prediction stage's objectives, so `students train` works without tuning.

The paper's rates (SPEC Table 4: 5e-5 for the HSK stage, 2e-5 for predictions)
assume a general-distilled TinyBERT and long schedules; a randomly initialised
student stays at the majority class with them over a few epochs, while a
student extracted from the teacher already sits near a good solution and is
pushed away from it by the rate a random one needs. Each entry was chosen by
measurement on the movie-review task (docs/results.md, "Default learning
rates"); `--hsk-lr` / `--pred-lr` override them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from hskcache.data import known_labels
from students.models.etd import EXTRACTING_INITS
from students.stages import Weighted

# init -> (HSK-stage rate, prediction-stage rate)
LEARNING_RATES: dict[str, tuple[float, float]] = {
    "random": (5e-4, 5e-4),  # 2 + 2 epochs: learns at 5e-4, stays at the majority class at 2e-4 and 5e-5
    "etd-impt": (2e-4, 2e-4),  # best dev accuracy of 1e-4, 2e-4, 5e-4 (seed 0)
    "etd-rand": (2e-4, 2e-4),  # same extraction, other dimensions: ETD-Impt's rate
    "teacher-layers": (5e-5, 5e-5),  # the teacher's own layers at full width: its fine-tuning rate
    "rosita": (5e-4, 5e-4),  # pruned teacher layers: the rate of the earlier ROSITA results
    "checkpoint": (5e-5, 2e-5),  # a general-distilled encoder: the paper's setting
}


def student_init(info: dict[str, Any]) -> str:
    """The LEARNING_RATES key of a student folder's metadata (students/models/student.py writes it). A general
    student (`students train --general` wrote it: `stage: general`) is a general-distilled encoder, whatever it
    was built from: "checkpoint", as the `students build --init FOLDER` student made from it, so both routes to
    the task stage train at the same rates."""
    if info.get("kind") == "rosita":
        return "rosita"
    if info.get("stage") == "general":
        return "checkpoint"
    init = info.get("init")
    if init is None or init == "random":
        return "random"
    return init if init in EXTRACTING_INITS else "checkpoint"


def learning_rates(info: dict[str, Any]) -> tuple[float, float]:
    return LEARNING_RATES[student_init(info)]


# The prediction stage without --pred-objective: the gold labels' task loss at weight 0.5 beside the
# teacher's soft labels wherever the source has gold labels (docs/results.md: on the movie reviews
# +1.5 test points over the soft labels alone, three seeds; on the valence regression task, see
# "Regression"), else the soft labels alone (SPEC, TinyBERT). The weight 0.5 was fixed before any run.
WITH_LABELS: Weighted = (("pred", 1.0), ("label", 0.5))
SOFT_ONLY: Weighted = (("pred", 1.0),)


def prediction_objective(labels: np.ndarray, regression: bool) -> Weighted:
    """WITH_LABELS if any row has a gold label (class >= 0, or a number for regression), else SOFT_ONLY."""
    return WITH_LABELS if bool(np.any(known_labels(labels, regression))) else SOFT_ONLY
