"""The student side of MiniLM's value relation (`val`): softmax(V Vᵀ / √d_h) per student head."""
from __future__ import annotations

from students.kinds.base import Objective, register
from students.kinds.relations import RelationStudent, relation_loss

register(RelationStudent(
    "val", {"val": Objective(relation_loss("kl", "val"),
                             "Val-KL (MiniLM L_VR), exact on the top-k-plus-rest coarsening")},
    ("value", "value")))
