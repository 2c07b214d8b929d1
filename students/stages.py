"""The training stages (SPEC "Losses and schedule"): one registry, `STAGES`, of what tells them apart.

Stage 1 (`hsk`) matches the student to the stored knowledge its `--objective`
names (the HSK, the relations), with the projection W training beside the
student at a constant rate; stage 2 (`pred`) matches the teacher's logits (and
the gold labels) under a linear decay, and its epochs compete for RUN/best. The general
stage (`GENERAL`, `students train --general`) is stage 1 alone, selecting by its own loss.
A stage runs when every kind it needs is read: its own (`StageSpec.kind`) and
its objectives' (`--hsk none` reads no HSK, so stage 1 is skipped). A
run's `Stage` is one of these with the run's settings for it (epochs, rate,
batch size, objectives, what it reads); the trainer asks it, never its name.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_constant_schedule, get_linear_schedule_with_warmup

Weighted = tuple[tuple[str, float], ...]  # (objective name, weight), as `--objective hsk,att:0.5` gives


@dataclass(frozen=True)
class StageSpec:
    """What one stage is, whatever the run: its name (the log's and metrics.json's label, and the prefix
    of its flags: --hsk-lr), the flag that chooses its objectives, and how it trains."""

    name: str
    flag: str  # the flag choosing its objectives (students.training.objectives.parse_objective)
    example: str  # of that flag's value, for its errors
    seed_base: int  # added to the data epoch and the dropout seed: the stages see different orders,
    # and a pred stage sees the same orders with or without stage 1
    schedule: Callable[[Optimizer, int], LambdaLR]  # (optimizer, the stage's steps) -> its rate schedule
    trains_projection: bool  # whether W (student width -> teacher width) trains with the student
    selects: bool  # whether its epochs compete for RUN/best (after stage 1 alone the head is untrained)
    recentres: bool  # whether a regression head is recentred before it (students.training.calibration)
    kind: str  # the knowledge kind it is built around (the HSK for stage 1: W maps to its width); a run
    # whose read settings do not read that kind (`--hsk none`, `hskcache.kinds.Kind.reads`) skips the stage

    def parameters(self, student: nn.Module, projection: nn.Module) -> list[nn.Parameter]:
        """The parameters it trains, student first (the optimizer's order, which a checkpoint records)."""
        extra: Iterable[nn.Parameter] = projection.parameters() if self.trains_projection else ()
        return [*student.parameters(), *extra]


HSK = StageSpec("hsk", "--objective", "hsk or hsk,att,val", 0,
                lambda optimizer, total: get_constant_schedule(optimizer),
                trains_projection=True, selects=False, recentres=False, kind="hsk")
PRED = StageSpec("pred", "--pred-objective", "pred or pred,label:0.5", 1_000_000,
                 lambda optimizer, total: get_linear_schedule_with_warmup(optimizer, 0, total),
                 trains_projection=False, selects=True, recentres=True, kind="logits")
STAGES: dict[str, StageSpec] = {s.name: s for s in (HSK, PRED)}  # in training order
# `students train --general` (the task-agnostic stage): stage 1 alone, its epochs competing for RUN/best by
# the distillation loss itself on the held-out rows (there is no head, no prediction stage, no label)
GENERAL = replace(HSK, selects=True)


@dataclass(frozen=True)
class Stage:
    """One stage of a run: its `StageSpec` with the run's settings for it."""

    spec: StageSpec
    epochs: int
    lr: float
    batch_size: int
    objective: Weighted  # the weighted objectives its loss sums
    read: Mapping[str, Any]  # what it reads of the source: `BatchSource.batches`' read arguments

    @property
    def name(self) -> str:
        return self.spec.name
