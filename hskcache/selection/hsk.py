"""HSK selection along depth, length and width (SPEC.md), as pure tensor functions.

No I/O and no model code: the extractor applies these to a teacher's outputs
before writing, the reader applies the shrinking functions to stored values,
and the online baseline applies the very same functions to a live teacher.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

TOKEN_STRATEGIES = ("left", "att", "att-nosep", "att-nosep-top")


def round_half_up(x: float) -> int:
    """Python's round() is banker's rounding; SPEC.md rounds half up."""
    return int(math.floor(x + 0.5))


def kept_width(width: float, hidden: int) -> int:
    """K = round(N^W × d_T), at least one activation."""
    return max(1, min(hidden, round_half_up(width * hidden)))


def _rand_dims(hidden: int, kept: int, seed: int) -> torch.Tensor:
    """A seeded permutation's prefix, so a smaller width is a prefix of a larger one."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(hidden, generator=gen)[:kept]


def _uniform_dims(hidden: int, kept: int, seed: int) -> torch.Tensor:
    """round(i × d / k) − 1 for i = 1..k: evenly spaced, the seed unused."""
    return torch.tensor([round_half_up(i * hidden / kept) - 1 for i in range(1, kept + 1)])


@dataclass(frozen=True)
class WidthStrategy:
    """How `--width-strategy NAME` chooses the K kept activations of a vector (SPEC.md, N^W).

    A static strategy keeps the same dimensions in every vector (`dims`, in priority
    order), so a store holds them once (the HSK's `static_dims`) and nothing per vector;
    a per-vector one (`mag`) keeps each vector's own, coded per vector (a width code)."""

    name: str
    static: bool
    dims: Callable[[int, int, int], torch.Tensor] | None = None  # static: (hidden, kept, seed) -> kept dims

    def static_dims(self, hidden: int, kept: int, seed: int) -> torch.Tensor:
        """The shared kept dimensions, in priority order (static strategies only)."""
        if self.dims is None:
            raise ValueError(f"{self.name!r} has no static dimensions")
        return self.dims(hidden, kept, seed)


# The one registry of width strategies: add the next one here.
WIDTH_STRATEGIES: dict[str, WidthStrategy] = {s.name: s for s in (
    WidthStrategy("mag", static=False),  # each vector's K largest magnitudes (`top_magnitude`)
    WidthStrategy("rand", static=True, dims=_rand_dims),
    WidthStrategy("uniform", static=True, dims=_uniform_dims),
)}


def layer_map(student_layers: int, ltop: int) -> list[int]:
    """g(l, L_top) = round_half_up(l × L_top / L') for l = 0..L'."""
    return [round_half_up(l * ltop / student_layers) for l in range(student_layers + 1)]


def rank_layers(token_strategy: str, num_student_layers: int, num_teacher_layers: int,
                student_layers: Sequence[int], stored: Sequence[int]) -> tuple[int, ...]:
    """The hidden-state index whose [CLS] attention ranks what is stored for each student
    layer (the HSK's tokens, a relation's query rows): with `att-nosep-top`, the top-layer
    map g(l, L_top) of that student layer (`layer_map`); otherwise the stored teacher layer itself."""
    if token_strategy != "att-nosep-top":
        return tuple(stored)
    top_map = layer_map(num_student_layers, num_teacher_layers)
    return tuple(top_map[s] for s in student_layers)


@dataclass(frozen=True)
class SelectionPlan:
    """Which teacher states, tokens and activations one extraction keeps."""

    stored_layers: tuple[int, ...]  # teacher layer of each stored pair (top N^D pairs)
    rank_layers: tuple[int, ...]  # teacher layer whose [CLS] attention ranks tokens for each pair
    tokens: int
    token_strategy: str
    kept: int  # K activations per vector
    width_strategy: str
    hidden: int
    seed: int

    @classmethod
    def build(
        cls,
        teacher_layers: Sequence[int],
        num_teacher_layers: int,
        depth: int,
        tokens: int,
        token_strategy: str,
        width: float,
        width_strategy: str,
        hidden: int,
        seed: int = 0,
    ) -> "SelectionPlan":
        stored = tuple(teacher_layers[-depth:])
        students = range(len(teacher_layers))[-depth:]  # the student layer (0 = embeddings) of each stored pair
        rank = rank_layers(token_strategy, len(teacher_layers) - 1, num_teacher_layers, students, stored)
        return cls(stored, rank, tokens, token_strategy, kept_width(width, hidden), width_strategy, hidden, seed)

    def static_dims(self) -> torch.Tensor | None:
        """The shared kept dimensions of a static width strategy, in priority order (None: per vector)."""
        return static_dims(self.width_strategy, self.hidden, self.kept, self.seed)

    def static_arrays(self) -> dict[str, np.ndarray]:
        """This plan's data for the store's once-per-store arrays, by name; the store writes those
        its shape lists (`kinds.hsk.HSK.static_arrays`)."""
        dims = self.static_dims()
        return {} if dims is None else {"static_dims": dims.numpy()}


def cls_importance(attentions: Sequence[torch.Tensor], layers: Sequence[int] | None = None) -> torch.Tensor:
    """(B, len(layers), S): mean over heads of the [CLS] row of each layer's attention,
    for hidden-state indices `layers` (default all, 0..L).

    Entry i scores hidden state H_i with the attention of layer i, and H_0
    (the embeddings) with the attention of layer 1. Only the asked layers are
    read: the extractor ranks with one or a few of them.
    """
    layers = range(len(attentions) + 1) if layers is None else layers
    return torch.stack([attentions[max(i - 1, 0)][:, :, 0, :].float().mean(dim=1) for i in layers], dim=1)


def rank_tokens(scores: torch.Tensor, eligible: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Top n_tokens eligible positions by score, descending; ties toward the lower
    position; -1 where an example has fewer eligible tokens. (..., S) -> (..., n)."""
    masked = scores.float().masked_fill(~eligible, float("-inf"))
    order = torch.sort(masked, dim=-1, descending=True, stable=True).indices[..., :n_tokens]
    ok = torch.gather(eligible, -1, order)
    positions = order.masked_fill(~ok, -1)
    short = n_tokens - positions.shape[-1]
    if short > 0:
        positions = torch.nn.functional.pad(positions, (0, short), value=-1)
    return positions


def rank_positions(
    token_strategy: str,
    rank_layers: Sequence[int],
    n_tokens: int,
    attentions: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    sep_mask: torch.Tensor,
) -> torch.Tensor:
    """(B, len(rank_layers), n_tokens) positions, most important first, ranked by
    the [CLS] attention of each rank layer (hidden-state indexing, `cls_importance`)."""
    eligible = attention_mask.bool()
    if token_strategy == "left":
        seq = attention_mask.shape[-1]
        scores = -torch.arange(seq, dtype=torch.float32, device=attention_mask.device).expand_as(attention_mask)
        ranked = rank_tokens(scores, eligible, n_tokens)
        return ranked.unsqueeze(1).expand(-1, len(rank_layers), -1).contiguous()
    if token_strategy != "att":
        eligible = eligible & ~sep_mask.bool()
    importance = cls_importance(attentions, rank_layers)
    return rank_tokens(importance, eligible.unsqueeze(1).expand_as(importance), n_tokens)


def select_positions(
    plan: SelectionPlan,
    attentions: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    sep_mask: torch.Tensor,
) -> torch.Tensor:
    """(B, N_D, N_L) token positions for every stored pair, most important first."""
    return rank_positions(plan.token_strategy, plan.rank_layers, plan.tokens, attentions, attention_mask, sep_mask)


def gather_states(hidden_states: Sequence[torch.Tensor], layers: Sequence[int], positions: torch.Tensor) -> torch.Tensor:
    """(B, N_D, N_L, d) hidden states at positions; zero where positions is -1.

    Gathers from each layer in place: only the selected vectors are read, never
    a whole (B, S, d) layer (at N^L << S that is most of the extractor's memory traffic)."""
    d = hidden_states[0].shape[-1]
    index = positions.clamp(min=0)
    states = torch.stack([torch.gather(hidden_states[layer], 1, index[:, j].unsqueeze(-1).expand(-1, -1, d))
                          for j, layer in enumerate(layers)], dim=1)
    return states.masked_fill((positions < 0).unsqueeze(-1), 0.0)


def static_dims(strategy: str, hidden: int, kept: int, seed: int) -> torch.Tensor | None:
    """The kept dimensions that `strategy` shares by every vector, in priority order;
    None for a per-vector strategy (`WIDTH_STRATEGIES`)."""
    chosen = WIDTH_STRATEGIES[strategy]
    return chosen.static_dims(hidden, kept, seed) if chosen.static else None


def top_magnitude(values: torch.Tensor, dims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k of the given activations with the largest magnitude.

    Works on full vectors (dims = arange(d)) and on already-kept values: the
    top k' of a vector's top k are its top k', so a `mag` store serves any
    k' <= k. What is exact is the set up to ties: a read re-ranks the *stored*
    (fp16-rounded) values, so where two activations differ only below fp16
    precision, a smaller read may keep the other one than a direct extraction
    at k' would; the values it returns are the stored ones either way.
    Returns dims ascending.
    """
    if k >= values.shape[-1]:
        return values, dims
    top = values.abs().topk(k, dim=-1).indices
    chosen = torch.gather(dims.expand_as(values), -1, top)
    chosen, order = chosen.sort(dim=-1)
    return torch.gather(values, -1, torch.gather(top, -1, order)), chosen


def select_width(plan: SelectionPlan, states: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (..., K), dims (..., K) ascending) of each selected vector.

    Vectors at empty positions keep dims 0..K-1 so their codes are defined.
    """
    d = states.shape[-1]
    static = plan.static_dims()
    if static is not None:
        dims = static.to(states.device).sort().values
        return states[..., dims], dims.expand(*states.shape[:-1], -1)
    values, dims = top_magnitude(states, torch.arange(d, device=states.device), plan.kept)
    empty = (positions < 0).unsqueeze(-1)
    dims = torch.where(empty, torch.arange(plan.kept, device=states.device).expand_as(dims), dims)
    return values.masked_fill(empty, 0.0), dims


def select_hsk(
    plan: SelectionPlan,
    hidden_states: Sequence[torch.Tensor],
    attentions: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    sep_mask: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """positions (B, N_D, N_L), values (B, N_D, N_L, K) and dims (same shape)."""
    positions = select_positions(plan, attentions, attention_mask, sep_mask)
    states = gather_states(hidden_states, plan.stored_layers, positions)
    values, dims = select_width(plan, states.float(), positions)
    return {"positions": positions, "values": values, "dims": dims}
