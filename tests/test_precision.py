"""`--dtype`: one precision rule for the teacher, training and eval, recorded in the store."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

import hskcache
from hskcache.cli.main import main
from hskcache.device import autocast, pick_dtype
from hskcache.errors import UserError
from students.evaluation.evaluate import predict


def test_default_dtype_follows_the_device():
    assert pick_dtype(None, torch.device("cuda")) == "bf16"
    assert pick_dtype(None, torch.device("cpu")) == "fp32"
    assert pick_dtype("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(UserError, match="--dtype 'fp16' is unknown"):
        pick_dtype("fp16", torch.device("cpu"))


def test_extraction_dtype_is_recorded_and_used(tmp_path, teacher_dir, single_csv, device):
    common = ["extract", "--teacher", str(teacher_dir), "--data", str(single_csv), "--student-layers", "2",
              "--tokens", "4", "--max-length", "16", "--quiet", "--device", device]
    default = pick_dtype(None, torch.device(device))  # fp32 on CPU, bf16 on CUDA
    other = "fp32" if default == "bf16" else "bf16"
    assert main([*common, "--store", str(tmp_path / default)]) == 0
    assert main([*common, "--store", str(tmp_path / other), "--dtype", other]) == 0
    full, half = (hskcache.open_store(tmp_path / name) for name in ("fp32", "bf16"))
    assert full.config.dtype == "fp32" and half.config.dtype == "bf16"
    a, b = (s.get(np.arange(8))["logits"] for s in (full, half))
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.05)  # bf16 rounding, nothing else
    # Resuming with another precision would mix two kinds of rows: refused.
    assert main([*common, "--store", str(tmp_path / default), "--dtype", other]) == 2


# Logits of the same model from other batch shapes (or threads, or devices) are other float computations
# (matrix-multiply blocking depends on the shape and the processor): equal within these, never bit for bit.
FP32 = dict(rtol=1e-5, atol=1e-6)  # far above fp32 summation-order noise; these logits are ~0.02
BF16 = dict(rtol=1e-2, atol=1e-3)  # a flipped bf16 rounding of a hidden state moves these logits ~1e-4


def test_eval_precision(teacher_dir, device):
    """`predict` in batches of 2 against one forward of the batch of 4, in fp32 and under bf16 autocast."""
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    torch.manual_seed(0)
    inputs = {"input_ids": torch.randint(5, 30, (4, 10)), "attention_mask": torch.ones(4, 10, dtype=torch.long),
              "token_type_ids": torch.zeros(4, 10, dtype=torch.long)}
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()  # the fp32 reference, on the CPU
        on = torch.device(device)
        model.to(on)
        with autocast(on, "bf16"):
            expected_bf16 = model(**{k: v.to(on) for k, v in inputs.items()}).logits.float().cpu().numpy()
    fp32, bf16 = predict(model, inputs, 2, on, "fp32"), predict(model, inputs, 2, on, "bf16")
    np.testing.assert_allclose(fp32, expected, **FP32)
    np.testing.assert_allclose(bf16, expected_bf16, **BF16)
    assert np.abs(bf16 - expected).max() > 10 * FP32["atol"]  # the bf16 forward really ran in bf16
    default = predict(model, inputs, 2, on)  # bf16 on CUDA, fp32 on CPU
    np.testing.assert_allclose(default, bf16 if device == "cuda" else fp32, **(BF16 if device == "cuda" else FP32))
