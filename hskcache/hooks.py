"""Query, key and value projections of a model's attention layers, captured by forward hooks.

Hugging Face models return attention probabilities (with eager attention) but
never the value vectors that MiniLM's value relation needs, and a student
trained with SDPA (or the ROSITA student) returns no attention at all. The
projections' outputs are the one thing every family has; where each family
keeps them is the only per-family fact, held in `FAMILIES` (the place for the
next family).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

from torch import Tensor, nn

from .errors import UserError


@dataclass(frozen=True)
class Family:
    """Where one model family keeps its attention projections."""

    layers: str  # path from the base model to the list of layers
    attention: str  # path from one layer to its self-attention module
    projections: tuple[str, str, str]  # query, key, value Linear names in it


_BERT_LIKE = Family("encoder.layer", "attention.self", ("query", "key", "value"))
FAMILIES: dict[str, Family] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "rosita": _BERT_LIKE,  # students.rosita: BERT layout, heads × head_dim may differ from the width
    "mpnet": Family("encoder.layer", "attention.attn", ("q", "k", "v")),
}
PROJECTIONS = ("query", "key", "value")


def attention_modules(model: nn.Module) -> list[tuple[nn.Module, nn.Module, nn.Module]]:
    """(query, key, value) Linear modules of every layer, bottom first."""
    model_type = getattr(model.config, "model_type", None)
    family = FAMILIES.get(model_type)
    if family is None:
        raise UserError(f"model type {model_type!r} has no known attention projections; "
                        f"supported: {', '.join(FAMILIES)}")
    base = getattr(model, getattr(model, "base_model_prefix", "bert"), model)  # a bare encoder is its own base
    layers = base.get_submodule(family.layers)
    out = []
    for layer in layers:
        attention = layer.get_submodule(family.attention)
        out.append(tuple(getattr(attention, name) for name in family.projections))
    return out


@contextlib.contextmanager
def capture(model: nn.Module, layers: Sequence[int], which: Sequence[str] = PROJECTIONS
            ) -> Iterator[dict[int, dict[str, Tensor]]]:
    """Record the outputs (B, S, heads × head_dim) of the named projections of
    attention layers `layers` (1-based: layer l produces hidden state l) while
    the block runs; `captured[l]["value"]`. Hooks are removed on exit."""
    if not layers:
        yield {}
        return
    modules = attention_modules(model)
    bad = [l for l in layers if not 1 <= l <= len(modules)]
    if bad:
        raise UserError(f"attention layer(s) {bad} out of range 1..{len(modules)}")
    captured: dict[int, dict[str, Tensor]] = {l: {} for l in layers}
    handles = []
    for l in layers:
        for name, module in zip(PROJECTIONS, modules[l - 1]):
            if name in which:
                def hook(_module, _inputs, output, l=l, name=name):
                    captured[l][name] = output
                handles.append(module.register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
