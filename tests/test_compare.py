"""tools/compare.py: its metrics and student-teacher gap against values worked out by hand.

The two models are tiny students whose classifier ignores its input (zero weights, a bias
that favours one class), so each predicts one class on every row whatever the text: their
accuracy and F1 on four hand-labelled rows follow from the labels alone.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import write_csv
from students.models.student import build_tinybert

_spec = importlib.util.spec_from_file_location("compare", Path(__file__).resolve().parents[1] / "tools" / "compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def constant_classifier(teacher: Path, out: Path, always: int) -> Path:
    """A student folder whose logits are its bias alone, largest for class `always`."""
    build_tinybert(teacher, layers=1, hidden=16, ffn=32, heads=2, out_dir=out, seed=always)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([1.0, -1.0] if always == 0 else [-1.0, 1.0]))
    model.save_pretrained(out)
    return out


def test_metrics_and_gap_match_a_hand_computation(task, tmp_path, capsys, device):
    dev = write_csv(tmp_path / "dev.csv", [{"sentence": "the film", "label": 0}, {"sentence": "a plot", "label": 0},
                                           {"sentence": "it was", "label": 0}, {"sentence": "great", "label": 1}])
    teacher = constant_classifier(task.teacher, tmp_path / "teacher", always=0)
    student = constant_classifier(task.teacher, tmp_path / "student", always=1)
    out = tmp_path / "compare.json"
    assert compare.main(["--model", f"teacher={teacher}", "--model", f"student={student}", "--data", str(dev),
                         "--max-length", "16", "--json", str(out), "--device", device]) == 0
    rows = json.loads(out.read_text())
    # teacher, always class 0: 3 of 4 right -> accuracy 0.75; no predicted positive -> F1 of class 1 is 0
    assert rows["teacher"]["eval"] == pytest.approx({"accuracy": 0.75, "f1": 0.0})
    # student, always class 1: 1 of 4 right -> accuracy 0.25; TP 1, FP 3, FN 0 -> F1 = 2·1 / (2·1 + 3 + 0) = 0.4
    assert rows["student"]["eval"] == pytest.approx({"accuracy": 0.25, "f1": 0.4})
    # gap in points of the first metric (accuracy): 100 × (0.75 − 0.25) = 50
    assert rows["student"]["gap_points"] == pytest.approx(50.0)
    assert "student-teacher gap: 50.00 points of accuracy" in capsys.readouterr().out
