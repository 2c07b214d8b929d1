"""MiniLM's value relation (`val`): softmax(V Vᵀ / √d_h) per head at the stored query rows."""
from __future__ import annotations

from hskcache.selection.attention import select_projection_relation
from hskcache.kinds.base import register
from hskcache.kinds.relation import RelationKind

register(RelationKind(
    "val", 40, ("value",),
    lambda plan, out, values, heads, positions, mask: select_projection_relation(plan, values, heads, positions, mask)))
