"""Attention and value-relation knowledge (MiniLM), coarsened, as pure tensor functions.

A dense attention map is heads × |x| × |x| values per layer. We keep, per
head, only the query rows of the N^L most important tokens (ranked exactly as
for the HSK, `selection.hsk.rank_positions`) and, per row, the top-k keys by
probability plus the probability mass of all other keys (the "rest"). The
k + 1 numbers are then an exact distribution over a coarsening of the keys
(k singletons and one bin for the rest), so a KL divergence against it is
exact on that coarsening (`coarsen` does the same to the student).

Keys are stored in descending probability (ties toward the lower position),
so a smaller k' is a prefix and its rest is the stored rest plus the dropped
probabilities; rows are stored in descending importance, so fewer rows are a
prefix too (`shrink`). Everything here works on any leading batch dimensions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from hskcache.selection.hsk import rank_tokens

UINT8_EMPTY = 255  # an empty key slot in a uint8 key array (-1 in int16 ones)


@dataclass(frozen=True)
class AttentionPlan:
    """Which attention layers, query rows and keys one extraction keeps."""

    layers: tuple[int, ...]  # teacher attention layers, 1-based (layer l produces hidden state l)
    rank_layers: tuple[int, ...]  # hidden-state index whose [CLS] attention ranks each layer's rows
    rows: int  # query rows per layer and head (N^L of the attention)
    keys: int  # kept keys per row
    token_strategy: str


@dataclass(frozen=True)
class RelationSpec:
    """What a store holds of one relation kind (`StoreMeta.kinds`), resolved against the teacher:
    the relation kinds of one store share it (and their query rows)."""

    layers: tuple[int, ...]  # teacher attention layers (1-based)
    student_layers: tuple[int, ...]  # the student attention layer matched to each
    rank_layers: tuple[int, ...]  # hidden-state index whose [CLS] attention ranks each layer's rows
    heads: int
    rows: int
    keys: int
    seq_len: int
    token_strategy: str

    @property
    def plan(self) -> AttentionPlan:
        return AttentionPlan(self.layers, self.rank_layers, self.rows, self.keys, self.token_strategy)

    @property
    def key_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.seq_len <= UINT8_EMPTY else np.int16)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, S, heads × d_h) projection output -> (B, heads, S, d_h)."""
    batch, seq, width = x.shape
    return x.view(batch, seq, heads, width // heads).transpose(1, 2)


def gather_rows(x: Tensor, positions: Tensor) -> Tensor:
    """Rows `positions` (B, N; -1 empty, gives zeros) of x (B, H, S, *) -> (B, H, N, *)."""
    index = positions.clamp(min=0)[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[-1])
    rows = torch.gather(x, 2, index)
    return rows.masked_fill((positions < 0)[:, None, :, None], 0.0)


def relation(left: Tensor, right: Tensor, key_mask: Tensor) -> Tensor:
    """softmax(left rightᵀ / √d_h) over the real keys: (B, H, N, d), (B, H, S, d), (B, S) -> (B, H, N, S).

    With left = values at the query rows and right = all values this is
    MiniLM's value relation; with queries and keys it is the attention
    distribution (without any additive position bias)."""
    scores = left.float() @ right.float().transpose(-1, -2) / math.sqrt(left.shape[-1])
    scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


def top_keys(rows: Tensor, key_mask: Tensor, positions: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Coarsen distributions rows (B, H, N, S) to their top k real keys plus the rest.

    Returns keys (B, H, N, k) int64, descending probability, ties toward the
    lower position, -1 where a row has fewer real keys; their probabilities
    (0 where -1); the summed probability of every other real key (B, H, N).
    An empty query slot (positions (B, N) is -1) keeps no key and no rest.
    """
    eligible = (key_mask.bool()[:, None, None, :] & (positions >= 0)[:, None, :, None]).expand_as(rows)
    keys = rank_tokens(rows, eligible, k)
    probs = torch.gather(rows, -1, keys.clamp(min=0)).masked_fill(keys < 0, 0.0)
    kept = densify_keys(keys, probs, rows.shape[-1])[1]
    rest = rows.float().masked_fill(kept | ~eligible, 0.0).sum(-1)
    return keys, probs, rest


def shrink(keys: Tensor, probs: Tensor, rest: Tensor, rows: int | None, k: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """The first `rows` query rows and top `k` keys of stored (..., N, K) rows:
    exact, because rows and keys are stored in descending order."""
    if rows is not None:
        keys, probs, rest = keys[..., :rows, :], probs[..., :rows, :], rest[..., :rows]
    if k is not None and k < keys.shape[-1]:
        rest = rest + probs[..., k:].float().sum(-1)
        keys, probs = keys[..., :k], probs[..., :k]
    return keys, probs, rest


def densify_keys(keys: Tensor, probs: Tensor, seq: int) -> tuple[Tensor, Tensor]:
    """Scatter kept keys into (..., seq): probabilities (0 elsewhere) and the kept mask."""
    index = keys.clamp(min=0)
    dense = torch.zeros(*keys.shape[:-1], seq, dtype=torch.float32, device=keys.device)
    dense.scatter_add_(-1, index, probs.float().masked_fill(keys < 0, 0.0))
    counts = torch.zeros(*keys.shape[:-1], seq, dtype=torch.int32, device=keys.device)
    counts.scatter_add_(-1, index, (keys >= 0).int())  # adding: a -1 slot (index 0) must not unset key 0
    return dense, counts > 0


def group_heads(probs: Tensor, kept: Tensor, rest: Tensor, groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """Average consecutive groups of teacher heads, (B, H, N, S) -> (B, H / g, N, S) with g = H / groups.

    The average of coarsened distributions is known exactly only on the keys
    every head of the group kept; each head's other kept keys go to the rest
    bin. So the result is again an exact coarsening, of the averaged
    distribution (with the full keys it is the plain average)."""
    batch, heads, n, seq = probs.shape
    if heads % groups:
        raise ValueError(f"{heads} teacher heads do not divide into {groups} student heads")
    size = heads // groups
    probs, kept = probs.view(batch, groups, size, n, seq), kept.view(batch, groups, size, n, seq)
    common = kept.all(dim=2)
    mean = probs.masked_fill(~common.unsqueeze(2), 0.0).mean(2)
    moved = probs.masked_fill(common.unsqueeze(2), 0.0).sum(-1)  # kept by this head, not by all
    return mean, common, (rest.view(batch, groups, size, n) + moved).mean(2)


def coarsen(probs: Tensor, kept: Tensor) -> tuple[Tensor, Tensor]:
    """A full distribution (..., S) on the teacher's coarsening: kept probabilities
    (0 elsewhere) and the mass of every other key (...,)."""
    return probs.masked_fill(~kept, 0.0), probs.masked_fill(kept, 0.0).sum(-1)


def attention_rows(plan: AttentionPlan, attentions: Sequence[Tensor], positions: Tensor,
                   attention_mask: Tensor) -> dict[str, Tensor]:
    """keys/probs (B, N_A, H, rows, k) and rest of the attention at query rows `positions` (B, N_A, rows)."""
    out = [top_keys(gather_rows(attentions[l - 1].float(), positions[:, j]), attention_mask, positions[:, j],
                    plan.keys) for j, l in enumerate(plan.layers)]
    keys, probs, rest = (torch.stack(parts, dim=1) for parts in zip(*out))
    return {"keys": keys, "probs": probs, "rest": rest}


def select_projection_relation(plan: AttentionPlan, values: dict[int, Tensor], heads: int, positions: Tensor,
                          attention_mask: Tensor) -> dict[str, Tensor]:
    """softmax(P_r P_rᵀ / √d_r) of one projection P split into `heads` relation heads, at the attention
    rows `positions` (B, N_A, rows): `values[l]` is layer l's projection output (B, S, heads × d_r) —
    the values for MiniLM's value relation (`val`), the queries or keys for MiniLMv2's `qq`/`kk`."""
    out = []
    for j, l in enumerate(plan.layers):
        v = split_heads(values[l], heads)
        rows = relation(gather_rows(v, positions[:, j]), v, attention_mask)
        out.append(top_keys(rows, attention_mask, positions[:, j], plan.keys))
    keys, probs, rest = (torch.stack(parts, dim=1) for parts in zip(*out))
    return {"keys": keys, "probs": probs, "rest": rest}


def sep_share(attentions: Sequence[Tensor], sep_mask: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per layer, summed over examples: the [CLS] row's attention to [SEP] tokens and
    to [CLS] itself, averaged over heads; (L,), (L,). Divide by the batch size."""
    real = attention_mask.bool()
    sep = (sep_mask.bool() & real).float()
    to_sep = torch.stack([(a[:, :, 0, :].float().mean(1) * sep).sum(-1).sum(0) for a in attentions])
    to_cls = torch.stack([a[:, :, 0, 0].float().mean(1).sum(0) for a in attentions])
    return to_sep, to_cls
