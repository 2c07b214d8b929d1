"""Objectives by name (like TextBrewer's loss names): `--objective hsk,att,val:0.5`.

The table (`table()`) is built from the student kinds (`students.kinds.STUDENT_KINDS`),
each declaring its objectives with their losses bound and their stage: `hsk` is
the HSK MSE; the relation objectives compare the student's attention (or value
relation) rows at the stored query rows with the teacher's top-k-plus-rest
rows, summed over the stored relation layers, each matched to the student
layer the store records; `pred` and `label` (the logits') are the prediction stage's.
"""
from __future__ import annotations

from dataclasses import dataclass

from hskcache.errors import UserError
from students.kinds import STUDENT_KINDS
from students.kinds.base import Loss
from students.stages import HSK, StageSpec, Weighted


@dataclass(frozen=True)
class KindObjective:
    """One entry of the table: an objective with the kind it compares."""

    kind: str  # a key of students.kinds.STUDENT_KINDS
    loss: Loss
    paper: str
    stage: StageSpec


def table() -> dict[str, KindObjective]:
    """Every objective by name, from the student kinds registered now (a kind registered later, e.g. a
    test's toy kind, is in the next call's table); a name declared twice is refused."""
    table: dict[str, KindObjective] = {}
    for kind in STUDENT_KINDS.values():
        for name, o in kind.objectives.items():
            if name in table:
                raise ValueError(f"objective {name!r} is declared by kinds {table[name].kind} and {kind.name}")
            table[name] = KindObjective(kind.name, o.loss, o.paper, o.stage)
    return table


def choices(stage: StageSpec) -> tuple[str, ...]:
    """The objectives a stage's flag chooses among."""
    return tuple(name for name, o in table().items() if o.stage is stage)


def parse_objective(text: str, stage: StageSpec = HSK) -> Weighted:
    """`hsk,att,val` or with weights `hsk:1,att:0.5` -> (("hsk", 1.0), ("att", 0.5)): one stage's objectives."""
    flag, names, example = stage.flag, choices(stage), stage.example
    out = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        name, _, weight = part.partition(":")
        if name not in names:
            raise UserError(f"{flag} {text}: unknown objective {name!r}; use a comma list of "
                            f"{', '.join(names)} (each optionally name:weight)")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise UserError(f"{flag} {text}: weight {weight!r} of {name} is not a number") from None
        if not value > 0:
            raise UserError(f"{flag} {text}: the weight of {name} must be positive")
        out.append((name, value))
    if not out or len({n for n, _ in out}) != len(out):
        raise UserError(f"{flag} {text}: give each objective once, e.g. {example}")
    return tuple(out)


def format_objective(objective: Weighted) -> str:
    return ",".join(name if weight == 1.0 else f"{name}:{weight:g}" for name, weight in objective)


def kinds(objective: Weighted) -> tuple[str, ...]:
    """The knowledge kinds an objective compares with the student, in registry order."""
    entries = table()
    names = {entries[name].kind for name, _ in objective}
    return tuple(k for k in STUDENT_KINDS if k in names)
