"""MiniLM's value relation (`val`): softmax(V Vᵀ / √d_h) per head at the stored query rows."""
from __future__ import annotations

from ..attention import select_value_relation
from .base import Objective, register
from .relation import RelationKind

register(RelationKind(
    "val", 40,
    {"val": Objective("kl", "Val-KL (MiniLM L_VR), exact on the top-k-plus-rest coarsening")},
    ("value",), lambda plan, out, values, heads, positions, mask: select_value_relation(
        plan, values, heads, positions, mask), ("value", "value")))
