"""An amount of HSK, (N^D, N^L, N^W): the one parser of its `1,9,0.1` spelling.

Whether a store (or the online teacher) can serve a read is decided by one
check too: `RowDecoder.resolve` in hskcache/store/reader.py.
"""
from __future__ import annotations

from hskcache.errors import UserError

SYNTAX = "N^D,N^L,N^W with N^W a fraction, e.g. 1,9,0.1"


def parse_triple(text: str, what: str) -> tuple[int, int, float]:
    """`1,9,0.1` (or the paper's `(1, 9, 0.1)`) → (1, 9, 0.1); `what` names the flag in errors."""
    parts = [p.strip() for p in text.strip().strip("()").split(",")]
    try:
        if len(parts) != 3:
            raise ValueError
        depth, tokens, width = int(parts[0]), int(parts[1]), float(parts[2])
    except ValueError:
        raise UserError(f"{what} {text!r} is malformed: write {SYNTAX}") from None
    if depth < 1 or tokens < 1:
        raise UserError(f"{what} {text!r}: N^D and N^L must be at least 1")
    if not 0 < width <= 1:
        raise UserError(f"{what} {text!r}: N^W={parts[2]} is outside (0, 1]; it is the fraction of the width kept")
    return depth, tokens, width
