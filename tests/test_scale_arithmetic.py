"""tools/scale_arithmetic.py: the large-corpus arithmetic of docs/scale.md, checked against
transformers' own parameter count and a hand count of the relation arrays' bytes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import scale_arithmetic as scale  # noqa: E402

BASE = scale.Encoder(12, 768, 12, 3072)


@pytest.mark.parametrize("encoder", [BASE, *scale.STUDENTS.values()])
def test_parameters_are_what_bert_model_holds(encoder):
    config = BertConfig(vocab_size=encoder.vocab, hidden_size=encoder.width, num_hidden_layers=encoder.layers,
                        num_attention_heads=encoder.heads, intermediate_size=encoder.ffn,
                        max_position_embeddings=encoder.positions, type_vocab_size=encoder.token_types)
    with torch.device("meta"):
        model = BertModel(config)
    assert encoder.parameters() == sum(p.numel() for p in model.parameters())


def row_bytes(choice: scale.StoreChoice | str, group: str | None = None) -> int:
    """Bytes per sequence of a choice (by name prefix) at length 512, of one array group or all."""
    if isinstance(choice, str):
        choice = next(c for c in scale.STORE_CHOICES if c.name.startswith(choice))
    return sum(a.row_bytes for a in scale.store_shape(choice, BASE, 512).arrays() if group in (None, a.group))


def test_relation_and_hsk_bytes_per_sequence_match_a_hand_count():
    # per relation layer and kind: 12 heads × 512 rows × 512 keys of int16 key + fp16 prob, an fp16 rest mass
    # per row, and the shared int16 query positions once per layer (the layout of hskcache/kinds/relation.py)
    layer = 12 * 512 * 512 * (2 + 2) + 12 * 512 * 2
    small = row_bytes("HSK (1,9,0.1)")
    assert row_bytes("MiniLM: att+val") - small == 2 * layer + 512 * 2
    assert row_bytes("MiniLMv2: qq+kk+val") - small == 3 * layer + 512 * 2
    cut = 12 * 64 * 32 * (2 + 2) + 12 * 64 * 2
    assert row_bytes("MiniLM cut") - small == 2 * cut + 64 * 2
    assert row_bytes("MiniLMv2 cut") - small == 3 * cut + 64 * 2
    # TinyBERT: the full HSK at 5 pairs (fp16 values and int16 positions, nothing per vector), and att at
    # the 4 pairs above the embeddings
    full = scale.StoreChoice("full HSK alone", 4, (5, 0, 1.0))
    assert row_bytes(full) - row_bytes(full, "inputs") == 5 * 512 * 768 * 2 + 5 * 512 * 2
    assert row_bytes("TinyBERT") - row_bytes(full) == 4 * (layer + 512 * 2)
    # every teacher layer at (13,50,0.2): 13 × 50 vectors of 154 fp16 values (mag: a width code each)
    assert row_bytes("HSK (13,50,0.2)", "values") == 13 * 50 * 154 * 2


def test_general_table_prints_its_inputs_flops_and_hours():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "scale_arithmetic.py"), "general", "--tokens", "1e9",
                          "--tflops", "V100=50", "X=200"], capture_output=True, text=True, check=True)
    out = run.stdout
    sequences = -(-10**9 // 512)
    assert f"{sequences:,} sequences of 512" in out and f"{BASE.parameters():,} parameters" in out
    flops = 2 * BASE.parameters() * sequences * 512
    assert f"{flops:.3g} FLOPs" in out
    for gpu, rate in (("V100", 50), ("X", 200)):
        hours = float(re.search(rf"^{gpu}\s+{rate}\s+([\d,.]+)$", out, re.M)[1].replace(",", ""))
        assert hours == pytest.approx(flops / (rate * 1e12) / 3600, abs=0.05)
    assert "576 V100-hours" in out and "2,200–2,900 V100-hours" in out
    assert all(c.name in out for c in scale.STORE_CHOICES)


@pytest.mark.parametrize("argv, says", [
    (["general", "--tflops", "V100=fast"], "--tflops 'V100=fast': write GPU=TFLOPS"),
    (["general", "--tflops", "V100=40", "--epochs", "0"], "must be positive"),
    (["general", "--tflops", "V100=40", "--teacher-heads", "5"], "--teacher-heads 5 must divide"),
    ([], "required: table"),
])
def test_bad_arguments_are_one_line(argv, says):
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "scale_arithmetic.py"), *argv],
                         capture_output=True, text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and says in run.stderr
