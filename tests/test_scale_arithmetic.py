"""tools/scale_arithmetic.py: the large-corpus arithmetic of docs/scale.md, checked against hand
counts of BERT's parameters and of the relation and HSK arrays' bytes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import scale_arithmetic as scale  # noqa: E402

BASE = scale.Encoder(12, 768, 12, 3072)


def hand_count(e: scale.Encoder) -> int:
    """BERT's parameters by hand: embeddings (word, position, type, LayerNorm); per layer Q, K, V and
    output projections, the FFN's two, two LayerNorms; the pooler."""
    d, f = e.width, e.ffn
    layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
    return (e.vocab + e.positions + e.token_types) * d + 2 * d + e.layers * layer + d * d + d


@pytest.mark.parametrize("encoder", [BASE, *scale.STUDENTS.values()])
def test_parameters_match_a_hand_count(encoder):
    assert encoder.parameters() == hand_count(encoder)
    assert BASE.parameters() == 109_482_240  # BERT-base's published 110M


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


def test_general_table_prints_its_inputs_flops_and_hours(capsys):
    assert scale.main(["general", "--tokens", "1e9", "--tflops", "V100=50", "X=200"]) == 0
    out = capsys.readouterr().out
    sequences = -(-10**9 // 512)
    params = hand_count(BASE)
    assert f"{sequences:,} sequences of 512" in out and f"{params:,} parameters" in out
    flops = 2 * params * sequences * 512
    assert f"{flops:.3g} FLOPs" in out
    for gpu, rate in (("V100", 50), ("X", 200)):
        hours = float(re.search(rf"^{gpu}\s+{rate}\s+([\d,.]+)$", out, re.M)[1].replace(",", ""))
        assert hours == pytest.approx(flops / (rate * 1e12) / 3600, abs=0.05)
    assert "576 V100-hours" in out and "2,200–2,900 V100-hours" in out
    assert all(c.name in out for c in scale.STORE_CHOICES)
    # online k × E × (2 P_t + 6 P_s) T against cached 2 P_t T + k × E × 6 P_s T, E = 3, k = 1 and 4
    tiny = hand_count(scale.STUDENTS["TinyBERT-4 (4×312)"])
    line = next(l for l in out.splitlines() if l.startswith("TinyBERT-4"))
    for k in (1, 4):
        tokens = sequences * 512
        online, cached = k * 3 * (2 * params + 6 * tiny) * tokens, 2 * params * tokens + k * 3 * 6 * tiny * tokens
        assert f"{online:.3g} {cached:>9.3g} {online / cached:>5.2f}×" in line


@pytest.mark.parametrize("argv, says", [
    (["general", "--tflops", "V100=fast"], "--tflops 'V100=fast': write GPU=TFLOPS"),
    (["general", "--tflops", "V100=40", "--epochs", "0"], "must be positive"),
    (["general", "--tflops", "V100=40", "--teacher-heads", "5"], "--teacher-heads 5 must divide"),
])
def test_bad_arguments_are_one_line(argv, says, capsys):
    assert scale.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and says in err


def test_a_missing_table_is_one_line_without_traceback():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "scale_arithmetic.py")], capture_output=True, text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "required: table" in run.stderr
