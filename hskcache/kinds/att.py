"""MiniLM's attention relation (`att`): the teacher's post-softmax attention at the stored query rows."""
from __future__ import annotations

from hskcache.selection.attention import attention_rows
from hskcache.kinds.base import register
from hskcache.kinds.relation import RelationKind

register(RelationKind(
    "att", 30, (),
    lambda plan, out, values, heads, positions, mask: attention_rows(plan, out.attentions, positions, mask),
    needs_attentions=True))
