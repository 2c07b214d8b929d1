"""The student-kind interface and its registry: `StudentKind`, `STUDENT_KINDS`, `register`."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from hskcache.kinds import KINDS
from students.stages import HSK, StageSpec

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from hskcache.store.meta import StoreMeta
    from students.losses import LossSettings
    from students.training.trainer import TrainConfig

# (what the kind's `student` gave, the batch dictionary, the run's loss settings) -> the loss
Loss = Callable[[Any, dict[str, Tensor], "LossSettings"], Tensor]


@dataclass
class StudentForward:
    """One student forward, what every kind's `student` reads."""

    out: Any  # the student's output: logits, and hidden_states when a kind asks for them
    captured: dict[int, dict[str, Tensor]]  # recorded projections per student attention layer (hooks.capture)
    heads: int
    attention_mask: Tensor
    projection: Callable[[Tensor], Tensor]  # W: student width -> teacher width
    meta: StoreMeta  # what the source records (e.g. the student layer matched to each stored relation layer)
    depth: int  # the student's layers L'': which stored layers it reads (`hskcache.kinds.Student`)


@dataclass(frozen=True)
class Objective:
    """One `--objective` (or `--pred-objective`) name: its loss, bound, and the stage it belongs to."""

    loss: Loss
    paper: str  # what it is, for the docs and help
    stage: StageSpec = HSK


class StudentKind:
    """The student side of one stored kind (`name`, a key of `hskcache.kinds.KINDS`).
    Subclasses set the class attributes and override `student`."""

    name: str = ""
    objectives: Mapping[str, Objective] = {}
    captures: tuple[str, ...] = ()  # attention projections the student forward must record
    hidden_states: bool = False  # whether the student forward must return its hidden states

    def capture_layers(self, meta: StoreMeta, depth: int) -> tuple[int, ...]:
        """The student attention layers whose `captures` its `student` reads, for a student of `depth` layers."""
        return ()

    def held(self, meta: StoreMeta) -> bool:
        """Whether the source holds this kind: an opt-in kind (`--knowledge`) only when it records it."""
        return not KINDS[self.name].opt_in or self.name in meta.kinds

    def read(self, run: TrainConfig, compared: bool) -> dict[str, Any]:
        """This kind's part of what a stage reads (`BatchSource.batches`' read keywords; `compared`: whether
        one of the stage's objectives compares it): an opt-in kind's read settings when compared."""
        return {"kinds": {self.name: run.reads.get(self.name)}} if compared and KINDS[self.name].opt_in else {}

    def check(self, meta: StoreMeta, config: PretrainedConfig, student: str) -> None:
        """Refuse, in one line, a student (`config`, from folder `student`) its objectives cannot train."""

    def student(self, forward: StudentForward, batch: dict[str, Tensor]) -> Any:
        """What its losses compare with the batch's entries, from the student's forward."""
        raise NotImplementedError


STUDENT_KINDS: dict[str, StudentKind] = {}  # by name, in the order of hskcache.kinds.KINDS


def register(kind: StudentKind) -> StudentKind:
    """Add a kind's student side (its module calls this when imported): once per stored kind."""
    if kind.name not in KINDS:
        raise ValueError(f"student kind {kind.name!r} has no stored kind in hskcache.kinds.KINDS")
    if kind.name in STUDENT_KINDS:
        raise ValueError(f"student kind {kind.name!r} is registered twice")
    order = list(KINDS)
    entries = sorted([*STUDENT_KINDS.values(), kind], key=lambda k: order.index(k.name))
    STUDENT_KINDS.clear()
    STUDENT_KINDS.update((k.name, k) for k in entries)
    return kind
