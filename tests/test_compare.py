"""tools/compare.py: the student-teacher gap it prints is the difference of the two models' own accuracies."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from students.evaluate import evaluate, open_for_eval
from students.models import build_tinybert

_spec = importlib.util.spec_from_file_location("compare", Path(__file__).resolve().parents[1] / "tools" / "compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def test_gap_is_teacher_minus_student_accuracy(task, tmp_path, capsys, device):
    build_tinybert(task.teacher, layers=2, hidden=16, ffn=32, heads=2, out_dir=tmp_path / "student", seed=1)
    out = tmp_path / "compare.json"
    assert compare.main(["--model", f"teacher={task.teacher}", "--model", f"student={tmp_path / 'student'}",
                         "--data", str(task.dev), "--max-length", "16", "--json", str(out), "--device", device]) == 0
    accuracy = {}
    for name, folder in (("teacher", task.teacher), ("student", tmp_path / "student")):
        model, eval_set = open_for_eval(str(folder), str(task.dev), 16, torch.device(device))
        accuracy[name] = evaluate(model, eval_set, 64, torch.device(device))["accuracy"]
    gap = 100 * (accuracy["teacher"] - accuracy["student"])
    assert json.loads(out.read_text())["student"]["gap_points"] == pytest.approx(gap)
    assert f"student-teacher gap: {gap:.2f} points of accuracy" in capsys.readouterr().out
