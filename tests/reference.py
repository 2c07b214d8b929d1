"""An independent, loop-based recomputation of SPEC.md's selection, for tests.

Deliberately written without hskcache.selection.hsk: plain Python over a plain
forward pass, so that a bug in the vectorised code cannot hide in both.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def teacher_outputs(teacher_dir, texts_a, texts_b, max_length):
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="eager").eval()
    enc = tok(texts_a, texts_b, max_length=max_length, truncation=True, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True, output_attentions=True)
    return enc, out, tok


def expected_selection(enc, out, sep_id, teacher_layers, num_layers, depth, tokens, strategy, width, width_strategy, seed=0):
    """positions (B, depth, tokens) with -1, and dense hsk (B, depth, tokens, d) per SPEC.md."""
    lp = len(teacher_layers) - 1
    top_map = [math.floor(l * num_layers / lp + 0.5) for l in range(lp + 1)]
    pairs = list(range(lp + 1))[-depth:]
    d = out.hidden_states[0].shape[-1]
    k = max(1, math.floor(width * d + 0.5))
    if width_strategy == "rand":
        static = sorted(torch.randperm(d, generator=torch.Generator().manual_seed(seed))[:k].tolist())
    elif width_strategy == "uniform":
        static = sorted(math.floor(i * d / k + 0.5) - 1 for i in range(1, k + 1))
    batch = enc["input_ids"].shape[0]
    positions = -np.ones((batch, depth, tokens), dtype=np.int64)
    hsk = np.zeros((batch, depth, tokens, d), dtype=np.float32)
    for b in range(batch):
        length = int(enc["attention_mask"][b].sum())
        ids = enc["input_ids"][b].tolist()
        for j, l in enumerate(pairs):
            state_layer = teacher_layers[l]
            rank_layer = top_map[l] if strategy == "att-nosep-top" else state_layer
            att = out.attentions[max(rank_layer, 1) - 1][b]  # (heads, S, S)
            score = [float(att[:, 0, p].mean()) for p in range(len(ids))]
            eligible = [p for p in range(length) if not (strategy in ("att-nosep", "att-nosep-top") and ids[p] == sep_id)]
            if strategy == "left":
                chosen = eligible[:tokens]
            else:
                chosen = sorted(eligible, key=lambda p: (-score[p], p))[:tokens]
            for t, p in enumerate(chosen):
                positions[b, j, t] = p
                vec = out.hidden_states[state_layer][b, p].numpy()
                keep = static if width_strategy != "mag" else sorted(np.argsort(-np.abs(vec), kind="stable")[:k].tolist())
                hsk[b, j, t, keep] = vec[keep].astype(np.float16).astype(np.float32)
    return positions, hsk


def ranked_rows(enc, out, sep_id, b, rank_layer, rows, strategy):
    """The query positions of one example, most important first (SPEC "Length")."""
    length = int(enc["attention_mask"][b].sum())
    ids = enc["input_ids"][b].tolist()
    att = out.attentions[max(rank_layer, 1) - 1][b]
    score = [float(att[:, 0, p].mean()) for p in range(len(ids))]
    eligible = [p for p in range(length) if not (strategy != "att" and ids[p] == sep_id)]
    return sorted(eligible, key=lambda p: (-score[p], p))[:rows]


def coarsened_row(dist, length, k):
    """Top-k real keys of one distribution (descending, ties to the lower key), their
    probabilities and the summed probability of the other real keys."""
    order = sorted(range(length), key=lambda p: (-float(dist[p]), p))[:k]
    rest = sum(float(dist[p]) for p in range(length) if p not in order)
    return order, [float(dist[p]) for p in order], rest


def projection_relation_row(values, q, length, heads):
    """softmax(v_q · v_j / √d_h) over the real keys j, per head, from projection vectors (S, heads × d_h):
    values (val), queries (qq) or keys (kk)."""
    d = values.shape[-1] // heads
    out = []
    for h in range(heads):
        v = values[:, h * d:(h + 1) * d].double()
        scores = [float(v[q] @ v[j]) / math.sqrt(d) for j in range(length)]
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        out.append([e / sum(exps) for e in exps])
    return out


def hsk_mse(states, positions, mask, hsk, weight, mode):
    """SPEC's HSK loss by loops: Σ over stored layers j of the mean squared error of the student's
    states at the stored positions times `weight` (d_S, d_T) against the stored vectors; `zero-fill`
    counts every activation of a non-empty token, `masked` only the kept ones. `states[j]` (B, S, d_S)
    is the student layer matched to stored layer j; the rest are the batch's arrays (numpy)."""
    total = 0.0
    for j in range(positions.shape[1]):
        squared, count = 0.0, 0
        for b in range(positions.shape[0]):
            for n in range(positions.shape[2]):
                p = positions[b, j, n]
                if p < 0:
                    continue
                predicted = states[j][b, p] @ weight
                for k in range(hsk.shape[-1]):
                    if mode == "zero-fill" or mask[b, j, n, k]:
                        squared += (float(predicted[k]) - float(hsk[b, j, n, k])) ** 2
                        count += 1
        total += squared / count if count else 0.0
    return total
