"""MiniLM's attention relation (`att`): the teacher's post-softmax attention at the stored query rows."""
from __future__ import annotations

from ..attention import attention_rows
from .base import Objective, register
from .relation import RelationKind

register(RelationKind(
    "att", 30,
    {"att": Objective("kl", "Att-KL (MiniLM L_AT), exact on the top-k-plus-rest coarsening"),
     "att-mse": Objective("mse", "Att-MSE on the kept attention probabilities")},
    (), lambda plan, out, values, heads, positions, mask: attention_rows(plan, out.attentions, positions, mask),
    ("query", "key"), needs_attentions=True))
