"""The student side of MiniLM's attention relation (`att`): softmax(Q Kᵀ / √d_h) per student head."""
from __future__ import annotations

from students.kinds.base import Objective, register
from students.kinds.relations import RelationStudent, relation_loss

register(RelationStudent(
    "att", {"att": Objective(relation_loss("kl", "att"),
                             "Att-KL (MiniLM L_AT), exact on the top-k-plus-rest coarsening"),
            "att-mse": Objective(relation_loss("mse", "att"), "Att-MSE on the kept attention probabilities")},
    ("query", "key")))
