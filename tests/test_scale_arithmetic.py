"""tools/scale_arithmetic.py: the large-corpus arithmetic of docs/scale.md, checked against hand
counts of BERT's parameters and of the relation and HSK arrays' bytes, and its FLOPs against torch's
FlopCounterMode on transformers' BertModel."""
from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

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


@functools.cache
def counted_flops(e: scale.Encoder, seq_len: int) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs per token that torch's FlopCounterMode counts on transformers'
    BertModel of this shape (no pooler: the general stage reads hidden states), built on the meta device."""
    config = BertConfig(vocab_size=e.vocab, hidden_size=e.width, num_hidden_layers=e.layers,
                        num_attention_heads=e.heads, intermediate_size=e.ffn, max_position_embeddings=e.positions)
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        hidden = BertModel(config, add_pooling_layer=False)(input_ids=torch.zeros(1, seq_len, dtype=torch.long))
        forward = counter.get_total_flops()
        hidden.last_hidden_state.sum().backward()
        return forward // seq_len, counter.get_total_flops() // seq_len


@pytest.mark.parametrize("encoder", [BASE, *scale.STUDENTS.values(), scale.Encoder(3, 48, 4, 96)])
@pytest.mark.parametrize("seq_len", [128, 512])
def test_forward_flops_match_torch_flop_counter(encoder, seq_len):
    forward, both = counted_flops(encoder, seq_len)
    assert encoder.forward_flops(seq_len) == pytest.approx(forward, rel=1e-3)
    assert 3 * encoder.forward_flops(seq_len) == pytest.approx(both, rel=1e-3)  # backward = twice the forward
    # the rule it replaces, 2 × all parameters, counts the embedding tables: far off for a small student
    if encoder.width < 768:
        assert 2 * encoder.parameters() > 1.4 * forward


def choices(student_layers: int = 4, teacher_layers: int = 12, seq_len: int = 512) -> dict[str, scale.StoreChoice]:
    return {c.name: c for c in scale.store_choices(student_layers, teacher_layers, seq_len)}


def row_bytes(choice: scale.StoreChoice | str, group: str | None = None, teacher: scale.Encoder = BASE) -> int:
    """Bytes per sequence of a choice (by name prefix, L'=4 under BASE) at length 512, of one array group or all."""
    if isinstance(choice, str):
        choice = next(c for name, c in choices().items() if name.startswith(choice))
    return sum(a.row_bytes for a in scale.store_shape(choice, teacher, 512).arrays() if group in (None, a.group))


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
    full = scale.StoreChoice("full HSK alone", 4, (5, 512, 1.0))
    assert row_bytes(full) - row_bytes(full, "inputs") == 5 * 512 * 768 * 2 + 5 * 512 * 2
    assert row_bytes("TinyBERT") - row_bytes(full) == 4 * (layer + 512 * 2)
    # every teacher layer at (13,50,0.2): 13 × 50 vectors of 154 fp16 values (mag: a width code each)
    assert row_bytes("HSK (13,50,0.2)", "values") == 13 * 50 * 154 * 2


def test_store_choices_follow_the_teacher_and_student_depths():
    # a 24-layer teacher: every layer is 25 pairs of round(0.2 × 1024) = 205 values per vector
    large = scale.Encoder(24, 1024, 16, 4096)
    every = next(c for name, c in choices(4, 24).items() if name.startswith("HSK (25,50,0.2): every teacher layer"))
    assert every.student_layers == 24
    assert row_bytes(every, "values", large) == 25 * 50 * 205 * 2
    # L' = 2: TinyBERT's full HSK at 3 pairs, N^D of the middle HSK at most L'+1
    names = choices(2, 12)
    assert "HSK (3,50,0.2), L'=2" in names and "TinyBERT: full HSK (3,all,1.0) + att at every pair, L'=2" in names
    full = scale.StoreChoice("full HSK alone", 2, (3, 512, 1.0))
    assert row_bytes(full) - row_bytes(full, "inputs") == 3 * 512 * 768 * 2 + 3 * 512 * 2


def test_general_table_prints_its_inputs_flops_and_hours(capsys):
    assert scale.main(["general", "--tokens", "1e9", "--tflops", "V100=50", "X=200"]) == 0
    out = capsys.readouterr().out
    sequences = -(-10**9 // 512)
    tokens = sequences * 512
    assert f"{sequences:,} sequences of 512" in out and f"{hand_count(BASE):,} parameters" in out
    # FLOPs as torch counts them on BertModel: the teacher's forward once; each student's forward + backward
    teacher, _ = counted_flops(BASE, 512)
    flops = float(re.search(r"per token, ([\d.e+]+) FLOPs", out)[1])
    assert flops == pytest.approx(teacher * tokens, rel=5e-3)
    for gpu, rate in (("V100", 50), ("X", 200)):
        hours = float(re.search(rf"^{gpu}\s+{rate}\s+([\d,.]+)$", out, re.M)[1].replace(",", ""))
        assert hours == pytest.approx(teacher * tokens / (rate * 1e12) / 3600, abs=0.05)
    assert "576 V100-hours" in out and "2,200–2,900 V100-hours" in out
    assert all(name in out for name in choices())
    for name, student in scale.STUDENTS.items():  # E = 3 epochs, k = 1 and 4 students, then k → ∞
        _, step = counted_flops(student, 512)
        cells = next(l for l in out.splitlines() if l.startswith(name))[len(name):].replace(",", "").split()
        values = [float(c.rstrip("×")) for c in cells]
        assert values[0] == hand_count(student)
        for i, k in enumerate((1, 4)):
            online, cached = k * 3 * (teacher + step) * tokens, teacher * tokens + k * 3 * step * tokens
            assert values[2 + 3 * i: 5 + 3 * i] == pytest.approx([online, cached, online / cached], rel=5e-3)
        assert values[-1] == pytest.approx((teacher + step) / step, rel=5e-3)


@pytest.mark.parametrize("argv, says", [
    (["general", "--tflops", "V100=fast"], "--tflops 'V100=fast': write GPU=TFLOPS"),
    (["general", "--tflops", "V100=40", "--epochs", "0"], "--epochs 0: give a number of epochs above 0"),
    (["general", "--tflops", "V100=40", "--teacher-heads", "5"], "--teacher-heads 5 must divide"),
    (["general", "--tflops", "V100=40", "--teacher-heads", "0"], "--teacher-heads 0: give a size of at least 1"),
    (["general", "--tflops", "V100=40", "--teacher-width", "-768"], "--teacher-width -768: give a size of at least 1"),
    (["general", "--tflops", "V100=40", "--teacher-ffn", "0", "--teacher-layers", "0"],
     "--teacher-layers 0, --teacher-ffn 0: give sizes of at least 1"),
    (["general", "--tflops", "V100=40", "--tokens", "nan"], "--tokens nan: give a size"),
    (["general", "--tflops", "V100=40", "--teacher-layers", "2"],
     "--student-layers 4 is deeper than the teacher's --teacher-layers 2"),
    (["mnli", "--extract-rate", "1", "--train-rate", "1", "--seq-len", "0"], "--seq-len 0: give a size of at least 2"),
    (["mnli", "--extract-rate", "0", "--train-rate", "1"], "give rates above 0"),
    (["mnli", "--extract-rate", "1", "--train-rate", "1", "--ranks", "8", "0"], "--ranks 0: give a size"),
    (["mnli", "--extract-rate", "1", "--train-rate", "1", "--configs", "4,50"], "configuration '4,50' is malformed"),
])
def test_bad_arguments_are_one_line(argv, says, capsys):
    assert scale.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and says in err


def test_a_missing_table_is_one_line_without_traceback():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "scale_arithmetic.py")], capture_output=True, text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "required: table" in run.stderr
