"""Stage-1 objectives by name (like TextBrewer's loss names): `--objective hsk,att,val:0.5`.

One entry per objective: which stored knowledge it needs and which loss it
applies. `hsk` is the HSK MSE (`losses.projected_hsk_loss`); the relation
objectives compare the student's attention (or value relation) rows at the
stored query rows with the teacher's top-k-plus-rest rows
(`losses.distribution_loss`), summed over the stored relation layers, each
matched to the student layer the store records.
"""
from __future__ import annotations

from dataclasses import dataclass

from hskcache.errors import UserError

Weighted = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Objective:
    relation: str | None  # a key of hskcache.knowledge.RELATION_KINDS; None: the HSK
    loss: str  # "hsk" or a losses.DISTRIBUTION_LOSSES name
    paper: str


OBJECTIVES: dict[str, Objective] = {
    "hsk": Objective(None, "hsk", "HSK MSE (Hid-Seq on the selected tokens and activations)"),
    "att": Objective("att", "kl", "Att-KL (MiniLM L_AT), exact on the top-k-plus-rest coarsening"),
    "val": Objective("val", "kl", "Val-KL (MiniLM L_VR), exact on the top-k-plus-rest coarsening"),
    "att-mse": Objective("att", "mse", "Att-MSE on the kept attention probabilities"),
}


def parse_objective(text: str) -> Weighted:
    """`hsk,att,val` or with weights `hsk:1,att:0.5` -> (("hsk", 1.0), ("att", 0.5))."""
    out = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        name, _, weight = part.partition(":")
        if name not in OBJECTIVES:
            raise UserError(f"--objective {text}: unknown objective {name!r}; use a comma list of "
                            f"{', '.join(OBJECTIVES)} (each optionally name:weight)")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise UserError(f"--objective {text}: weight {weight!r} of {name} is not a number") from None
        if not value > 0:
            raise UserError(f"--objective {text}: the weight of {name} must be positive")
        out.append((name, value))
    if not out or len({n for n, _ in out}) != len(out):
        raise UserError(f"--objective {text}: give each objective once, e.g. hsk or hsk,att,val")
    return tuple(out)


def format_objective(objective: Weighted) -> str:
    return ",".join(name if weight == 1.0 else f"{name}:{weight:g}" for name, weight in objective)


def relation_kinds(objective: Weighted) -> tuple[str, ...]:
    """The relation kinds an objective reads from the store, in a fixed order."""
    kinds = {OBJECTIVES[name].relation for name, _ in objective} - {None}
    return tuple(sorted(kinds))


def uses_hsk(objective: Weighted) -> bool:
    return any(OBJECTIVES[name].relation is None for name, _ in objective)


def parse_att_read(text: str) -> tuple[int | None, int | None]:
    """`--att-read R,K` (query rows, keys per row) or `stored`."""
    if text == "stored":
        return None, None
    try:
        rows, keys = (int(x) for x in str(text).split(","))
    except ValueError:
        raise UserError(f"--att-read {text!r} is not ROWS,KEYS (e.g. 9,16) or 'stored'") from None
    if rows < 1 or keys < 1:
        raise UserError(f"--att-read {text}: rows and keys must be at least 1")
    return rows, keys
