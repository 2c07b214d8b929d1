"""Query, key and value projections of a model's attention layers, captured by forward hooks.

Hugging Face models return attention probabilities (with eager attention) but
never the value vectors that MiniLM's value relation needs, and a student
trained with SDPA (or the ROSITA student) returns no attention at all. The
projections' outputs are the one thing every family has; where each family
keeps them (separate Linears, or blocks of a fused QKV matrix) is
`hskcache.teacher.families`' to say.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from torch import Tensor, nn

from hskcache.errors import UserError
from hskcache.teacher.families import Projection, family_of

PROJECTIONS = ("query", "key", "value")


def attention_modules(model: nn.Module) -> list[tuple[tuple[nn.Module, Projection], ...]]:
    """(module, projection) for the query, key and value of every layer, bottom first."""
    family = family_of(model.config, "model")
    return [family.projections(layer) for layer in family.layer_list(model)]


@contextlib.contextmanager
def capture(model: nn.Module, layers: Sequence[int], which: Sequence[str] = PROJECTIONS
            ) -> Iterator[dict[int, dict[str, Tensor]]]:
    """Record the outputs (B, S, heads × head_dim) of the named projections of
    attention layers `layers` (1-based: layer l produces hidden state l) during
    one forward in the block; `captured[l]["value"]`. Hooks are removed on exit."""
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
        for name, (module, projection) in zip(PROJECTIONS, modules[l - 1]):
            if name in which:
                def hook(_module, _inputs, output, l=l, name=name, projection=projection):
                    # the tokens' projection: DeBERTa's shared query/key then project positions too
                    captured[l].setdefault(name, projection.take(output))
                handles.append(module.register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
