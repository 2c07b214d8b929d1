"""`--dtype`: one precision rule for the teacher, training and eval, recorded in the store."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

import hskcache
from hskcache.cli import main
from hskcache.device import autocast, pick_dtype
from hskcache.errors import UserError
from students.evaluate import predict


def test_default_dtype_follows_the_device():
    assert pick_dtype(None, torch.device("cuda")) == "bf16"
    assert pick_dtype(None, torch.device("cpu")) == "fp32"
    assert pick_dtype("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(UserError, match="--dtype 'fp16' is unknown"):
        pick_dtype("fp16", torch.device("cpu"))


def test_extraction_dtype_is_recorded_and_used(tmp_path, teacher_dir, single_csv):
    common = ["extract", "--teacher", str(teacher_dir), "--data", str(single_csv), "--student-layers", "2",
              "--tokens", "4", "--max-length", "16", "--quiet"]
    assert main([*common, "--store", str(tmp_path / "fp32")]) == 0
    assert main([*common, "--store", str(tmp_path / "bf16"), "--dtype", "bf16"]) == 0
    full, half = (hskcache.open_store(tmp_path / name) for name in ("fp32", "bf16"))
    assert full.config.dtype == "fp32" and half.config.dtype == "bf16"  # CPU default: fp32
    a, b = (s.get(np.arange(8))["logits"] for s in (full, half))
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.05)  # bf16 rounding, nothing else
    # Resuming with another precision would mix two kinds of rows: refused.
    assert main([*common, "--store", str(tmp_path / "fp32"), "--dtype", "bf16"]) == 2


def test_eval_precision(teacher_dir):
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    inputs = {"input_ids": torch.randint(5, 30, (4, 10)), "attention_mask": torch.ones(4, 10, dtype=torch.long),
              "token_type_ids": torch.zeros(4, 10, dtype=torch.long)}
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()
        with autocast(torch.device("cpu"), "bf16"):
            expected_bf16 = model(**inputs).logits.float().numpy()
    cpu = torch.device("cpu")
    assert np.array_equal(predict(model, inputs, 2, cpu), expected)
    assert np.array_equal(predict(model, inputs, 2, cpu, "bf16"), expected_bf16)
    assert not np.array_equal(expected, expected_bf16)
