"""Attention and value-relation selection against loops over a plain HF forward; exact shrinking."""
from __future__ import annotations

import pytest
import torch
from transformers import (AutoModelForSequenceClassification, ElectraConfig, ElectraForSequenceClassification,
                          MPNetConfig, MPNetForSequenceClassification, RobertaConfig,
                          RobertaForSequenceClassification)

from conftest import PAIRS, SENTENCES
from hskcache.teacher import hooks
from hskcache.selection.attention import (AttentionPlan, attention_rows, gather_rows, relation, select_projection_relation,
                                sep_share, shrink, split_heads)
from hskcache.data import tokenize_batch
from hskcache.errors import UserError
from hskcache.selection.hsk import rank_positions
from hskcache.teacher.loading import load_teacher
from reference import coarsened_row, ranked_rows, teacher_outputs, projection_relation_row

MAX_LEN = 24


def _select(teacher_dir, plan, texts_a, texts_b, device="cpu"):
    """Attention and value-relation selection on `device`, in fp32 (the loops' precision)."""
    teacher = load_teacher(str(teacher_dir), device, "fp32")
    tokens = {k: torch.from_numpy(v) for k, v in tokenize_batch(teacher.tokenizer, texts_a, texts_b, MAX_LEN).items()}
    with hooks.capture(teacher.model, plan.layers, ["value"]) as captured:
        out = teacher.forward(tokens)
    masks = {k: tokens[k].to(teacher.device) for k in ("attention_mask", "sep_mask")}
    positions = rank_positions(plan.token_strategy, plan.rank_layers, plan.rows, out.attentions,
                               masks["attention_mask"], masks["sep_mask"])  # the query rows, as the relation kinds rank them
    att = {"positions": positions} | attention_rows(plan, out.attentions, positions, masks["attention_mask"])
    values = {l: captured[l]["value"] for l in plan.layers}
    val = select_projection_relation(plan, values, teacher.model.config.num_attention_heads, att["positions"],
                                masks["attention_mask"])
    return ({k: v.cpu() for k, v in att.items()}, {k: v.cpu() for k, v in val.items()})


@pytest.mark.parametrize("strategy", ["att-nosep", "att"])
def test_attention_and_value_relation_match_loops(teacher_dir, strategy, device):
    texts_a, texts_b = [a for a, _ in PAIRS[:6]], [b for _, b in PAIRS[:6]]
    plan = AttentionPlan(layers=(1, 2), rank_layers=(1, 2), rows=5, keys=4, token_strategy=strategy)
    att, val = _select(teacher_dir, plan, texts_a, texts_b, device)
    enc, out, tok = teacher_outputs(teacher_dir, texts_a, texts_b, MAX_LEN)
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="eager").eval()
    heads = model.config.num_attention_heads
    checked_rest = 0
    for b in range(len(texts_a)):
        length = int(enc["attention_mask"][b].sum())
        for j, l in enumerate(plan.layers):
            rows = ranked_rows(enc, out, tok.sep_token_id, b, l, plan.rows, strategy)
            assert att["positions"][b, j].tolist() == rows + [-1] * (plan.rows - len(rows))
            value_layer = model.bert.encoder.layer[l - 1].attention.self.value
            with torch.no_grad():
                values = value_layer(out.hidden_states[l - 1][b])  # the layer's input, projected
            for n, q in enumerate(rows):
                relations = projection_relation_row(values, q, length, heads)
                for h in range(heads):
                    for got, dist in ((att, out.attentions[l - 1][b, h, q]), (val, relations[h])):
                        keys, probs, rest = coarsened_row(dist, length, plan.keys)
                        assert got["keys"][b, j, h, n].tolist() == keys
                        assert got["probs"][b, j, h, n].tolist() == pytest.approx(probs, abs=1e-6)
                        assert got["rest"][b, j, h, n].item() == pytest.approx(rest, abs=1e-6)
                        checked_rest += rest > 0.01
            for n in range(len(rows), plan.rows):  # empty rows keep nothing
                for got in (att, val):
                    assert (got["keys"][b, j, :, n] == -1).all() and (got["rest"][b, j, :, n] == 0).all()
    assert checked_rest > 0  # the rest mass was really exercised


def test_smaller_reads_are_exact(teacher_dir, device):
    texts = SENTENCES[:8]
    big = AttentionPlan((2,), (2,), rows=6, keys=8, token_strategy="att-nosep")
    small = AttentionPlan((2,), (2,), rows=3, keys=2, token_strategy="att-nosep")
    got_big, val_big = _select(teacher_dir, big, texts, None, device)
    got_small, val_small = _select(teacher_dir, small, texts, None, device)
    assert torch.equal(got_big["positions"][..., :3], got_small["positions"])
    for b_sel, s_sel in ((got_big, got_small), (val_big, val_small)):
        keys, probs, rest = shrink(b_sel["keys"], b_sel["probs"], b_sel["rest"], rows=3, k=2)
        assert torch.equal(keys, s_sel["keys"])
        assert torch.allclose(probs, s_sel["probs"])
        assert torch.allclose(rest, s_sel["rest"], atol=1e-6)


def test_relation_from_queries_and_keys_is_the_attention(teacher_dir, device):
    """The student-side attention (from captured Q and K) equals HF's eager attention on BERT (on `device`, fp32)."""
    teacher = load_teacher(str(teacher_dir), device, "fp32")
    tokens = {k: torch.from_numpy(v) for k, v in tokenize_batch(teacher.tokenizer, SENTENCES[:5], None, MAX_LEN).items()}
    with hooks.capture(teacher.model, [1, 2]) as captured:
        out = teacher.forward(tokens)
    heads = teacher.model.config.num_attention_heads
    positions = torch.tensor([[0, 2, 1]] * 5, device=teacher.device)
    for l in (1, 2):
        q, k = split_heads(captured[l]["query"], heads), split_heads(captured[l]["key"], heads)
        got = relation(gather_rows(q, positions), k, tokens["attention_mask"].to(teacher.device))
        assert torch.allclose(got, gather_rows(out.attentions[l - 1], positions), atol=1e-6)


SHAPE = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


@pytest.mark.parametrize("model", [
    lambda: RobertaForSequenceClassification(RobertaConfig(max_position_embeddings=40, **SHAPE)),
    lambda: ElectraForSequenceClassification(ElectraConfig(embedding_size=16, **SHAPE)),
    lambda: MPNetForSequenceClassification(MPNetConfig(**SHAPE)),
], ids=["roberta", "electra", "mpnet"])
def test_hooks_capture_values_of_every_family(model, device):
    torch.manual_seed(0)
    net = model().eval().to(device)
    ids = torch.randint(5, 40, (2, 7)).to(device)
    with torch.no_grad(), hooks.capture(net, [1, 2], ["value"]) as captured:
        out = net(input_ids=ids, output_hidden_states=True)
    for l in (1, 2):
        value = hooks.attention_modules(net)[l - 1][2][0]
        expected = out.hidden_states[l - 1] @ value.weight.T + value.bias
        assert torch.allclose(captured[l]["value"], expected, atol=1e-5)
        assert set(captured[l]) == {"value"}


def test_hooks_refuse_unknown_family_and_layers(teacher_dir):
    teacher = load_teacher(str(teacher_dir), "cpu")
    with pytest.raises(UserError, match="out of range"), hooks.capture(teacher.model, [3]):
        pass
    teacher.model.config.model_type = "gpt2"
    with pytest.raises(UserError, match="not a supported encoder family; use one of: bert, roberta"):
        hooks.attention_modules(teacher.model)


def test_sep_share_matches_loop(teacher_dir, device):
    """sep_share on `device` (where attention_stats runs it) against a loop on the CPU."""
    texts_a, texts_b = [a for a, _ in PAIRS[:4]], [b for _, b in PAIRS[:4]]
    enc, out, tok = teacher_outputs(teacher_dir, texts_a, texts_b, MAX_LEN)
    sep = enc["input_ids"] == tok.sep_token_id
    to_sep, to_cls = sep_share([a.to(device) for a in out.attentions], sep.to(device),
                               enc["attention_mask"].to(device))
    assert to_sep.device.type == device
    for l, att in enumerate(out.attentions):
        expected_sep = sum(float(att[b, h, 0, p]) for b in range(4) for h in range(att.shape[1])
                           for p in range(MAX_LEN) if sep[b, p]) / att.shape[1]
        expected_cls = sum(float(att[b, h, 0, 0]) for b in range(4) for h in range(att.shape[1])) / att.shape[1]
        assert to_sep[l].item() == pytest.approx(expected_sep, rel=1e-5)
        assert to_cls[l].item() == pytest.approx(expected_cls, rel=1e-5)


def test_attention_stats_tool(teacher_dir, pair_csv, tmp_path, device):
    """tools/attention_stats.py on `device` (in fp32): [SEP] in the `att` top tokens, counted by a loop over a plain
    CPU forward."""
    import csv
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
    import attention_stats

    stats = attention_stats.attention_stats(str(teacher_dir), str(pair_csv), 10, 3, MAX_LEN, 4, progress=False,
                                            device=device, dtype="fp32")
    with open(pair_csv) as f:
        rows = list(csv.DictReader(f))[:10]
    enc, out, tok = teacher_outputs(teacher_dir, [r["sentence1"] for r in rows], [r["sentence2"] for r in rows], MAX_LEN)
    for l in (1, 2):
        hits = sum(any(enc["input_ids"][b, p] == tok.sep_token_id for p in ranked_rows(enc, out, tok.sep_token_id, b, l, 3, "att"))
                   for b in range(10))
        assert stats["sep_in_top_tokens"][l - 1] == pytest.approx(hits / 10)
    attention_stats.plot(stats, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 0
    json.dumps(stats)
