"""The student side of the kinds and the stage registry: objectives come from the student kinds with
their losses bound, names are checked when a flag is read, and each stage says what it trains."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hskcache.errors import UserError
from hskcache.kinds import KINDS
from students.kinds import STUDENT_KINDS, Objective, StudentKind
from students.losses import HSKProjection
from students.training.objectives import choices, parse_objective, table
from students.stages import HSK, PRED, STAGES


def test_student_kinds_follow_the_stored_kinds():
    """Every student kind compares a stored kind, in the store registry's order; every objective's
    loss is a callable, and each stage's flag chooses among its own objectives only."""
    assert list(STUDENT_KINDS) == [k for k in KINDS if k in STUDENT_KINDS]
    assert {"logits", "hsk", "att", "val"} <= set(STUDENT_KINDS)
    entries = table()
    assert all(callable(e.loss) and e.stage in STAGES.values() for e in entries.values())
    assert set(choices(HSK)) | set(choices(PRED)) == set(entries)
    assert not set(choices(HSK)) & set(choices(PRED))
    assert {"hsk", "att", "val", "att-mse"} <= set(choices(HSK)) and {"pred", "label"} <= set(choices(PRED))


def test_unknown_or_misplaced_objective_is_one_line():
    assert parse_objective("hsk,att:0.5") == (("hsk", 1.0), ("att", 0.5))
    with pytest.raises(UserError, match=r"--objective hsk,attention: unknown objective 'attention'") as err:
        parse_objective("hsk,attention")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="--pred-objective hsk: unknown objective 'hsk'"):
        parse_objective("hsk", PRED)  # a stage-1 objective is not a stage-2 one


def test_an_objective_name_is_declared_once(monkeypatch):
    class Twin(StudentKind):
        name = "inputs"
        objectives = {"hsk": Objective(lambda student, batch, s: torch.zeros(()), "a second hsk")}

    monkeypatch.setitem(STUDENT_KINDS, "inputs", Twin())
    with pytest.raises(ValueError, match="objective 'hsk' is declared by kinds"):
        table()


def test_stages_say_what_they_train():
    """Stage 1 trains W beside the student (the optimizer's order: student first); stage 2 the student
    alone; their seed bases keep their data orders apart."""
    student, projection = nn.Linear(3, 2), HSKProjection(3, 4)
    assert HSK.parameters(student, projection) == [*student.parameters(), *projection.parameters()]
    assert PRED.parameters(student, projection) == list(student.parameters())
    assert list(STAGES) == ["hsk", "pred"] and HSK.seed_base != PRED.seed_base
    assert PRED.selects and not HSK.selects
