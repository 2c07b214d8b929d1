"""A regression student's output bias recentred before the prediction stage (students/training/calibration.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

import hskcache
from conftest import make_teacher, write_csv
from helpers import quiet_runtime
from hskcache.errors import UserError
from hskcache.kinds.hsk import HSKRead
from students.training.calibration import output_layer, recentre
from students.models.student import build_tinybert
from students.training.selection import HOLDOUT_SEED, holdout_rows
from students.training.trainer import TrainConfig, train
from tiny_task import extract, task_rows


def tiny_regressor(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=1)
    return BertForSequenceClassification(config)


def test_recentre_moves_the_mean_output_to_the_teachers_and_nothing_else(device):
    model = tiny_regressor().to(device)
    generator = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(5, 40, (8, 6), generator=generator).to(device),
                "attention_mask": torch.ones(8, 6, dtype=torch.long, device=device),
                "logits": (4.0 + torch.randn(8, 1, generator=generator)).to(device)} for _ in range(3)]

    def outputs(batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        student = torch.cat([outputs(b) for b in batches])
    teacher = torch.cat([b["logits"] for b in batches])
    model.train()  # recentre evaluates without dropout and gives the mode back
    shift = recentre(model, batches, outputs)
    assert model.training
    assert shift == pytest.approx((teacher - student).mean().item(), abs=1e-5)
    model.eval()
    with torch.no_grad():
        after = torch.cat([outputs(b) for b in batches])
    assert after.mean().item() == pytest.approx(teacher.mean().item(), abs=1e-4)
    assert torch.allclose(after - student, torch.full_like(after, shift), atol=1e-5)  # a shift, the ranking kept
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["classifier.bias"]


def test_a_model_without_a_biased_output_layer_is_refused():
    model = tiny_regressor()
    model.classifier = torch.nn.Linear(16, 1, bias=False)
    with pytest.raises(UserError, match="--regression-head as-is"):
        output_layer(model, 1)
    assert output_layer(tiny_regressor(), 1) is not None


def regression_store(root):
    """A tiny regression teacher (random weights; its outputs are what the student follows) and its store."""
    rows = [{"sentence": r["sentence"], "label": 3.0 + r["label"] + 0.25 * (i % 4)}
            for i, r in enumerate(task_rows(96, 0))]
    data = write_csv(root / "train.csv", rows)
    teacher = make_teacher(root / "teacher", num_labels=1)
    model = AutoModelForSequenceClassification.from_pretrained(teacher)
    with torch.no_grad():
        model.classifier.bias.fill_(5.0)  # far from an extracted or random student's mean output
    model.save_pretrained(teacher)
    return teacher, extract(teacher, data, root / "store", "--device", "cpu")


def test_training_recentres_a_regression_student_on_the_training_rows(tmp_path, device):
    """The student trains on `device` in fp32; the expected shift is computed on the CPU."""
    teacher, store_path = regression_store(tmp_path)
    store = hskcache.open_store(store_path)
    assert store.regression
    student = tmp_path / "student"
    build_tinybert(teacher, layers=2, hidden=16, ffn=32, heads=2, out_dir=student)
    settings = dict(student=str(student), reads={"hsk": HSKRead(None)}, max_steps=1, pred_batch_size=16,
                    select_on="train-holdout:0.25", runtime=quiet_runtime(device, "fp32"))

    # The independent computation: the untrained student on every store row but the held-out ones.
    model = AutoModelForSequenceClassification.from_pretrained(student).eval()
    batch = store.get(np.arange(store.num_examples), depth=1, tokens=1)
    with torch.no_grad():
        outputs = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    held = holdout_rows(np.arange(store.num_examples), 0.25, HOLDOUT_SEED)
    keep = ~np.isin(batch["example_id"].numpy(), held)
    expected = (batch["logits"][keep].float().reshape(-1) - outputs[keep].reshape(-1)).mean().item()
    assert abs(expected) > 1.0  # the teacher's bias of 5 is far from the student's mean output

    train(TrainConfig(out=str(tmp_path / "recentred"), **settings), store)
    metrics = json.loads((tmp_path / "recentred" / "metrics.json").read_text())
    assert metrics["config"]["regression_head"] == "recentre"
    assert metrics["stages"]["pred"]["recentred_output_bias"] == pytest.approx(expected, abs=1e-4)

    train(TrainConfig(out=str(tmp_path / "as-is"), regression_head="as-is", **settings), store)
    plain = json.loads((tmp_path / "as-is" / "metrics.json").read_text())
    assert "recentred_output_bias" not in plain["stages"]["pred"]


def test_an_unknown_regression_head_is_refused(tmp_path):
    with pytest.raises(UserError, match="--regression-head 'centre' is unknown"):
        TrainConfig(student=str(tmp_path), out=str(tmp_path / "run"), regression_head="centre")
