"""Exact byte codes for "which K of the d dimensions does this vector keep".

The paper stores one byte per activation of the full width as a mask; that
is most of its bytes at small N^W. The codes form a registry (`WIDTH_CODES`,
name -> `WidthCode`); a store records the one it was written with:

- ``bitmask`` (the default): ceil(d / 8) bytes, ``numpy.packbits`` little
  bit order. Magnitude masks are far from uniform (a few outlier dimensions
  are almost always kept), so it compresses below the rank code and decodes
  at memory speed; the reader ships it to the trainer's device unexpanded.
- ``indices``: the K sorted dimension indices as little-endian uint16.
- ``rank``: the subset's index in the combinatorial number system,
  ceil(log2 C(d, m) / 8) bytes with m = min(K, d - K). That is the
  information-theoretic minimum for an arbitrary subset and has a fixed
  size, for users who want exact uncompressed bytes at the minimum. It is
  encoded and decoded with vectorised multi-limb integer arithmetic
  (32-bit limbs), so it costs milliseconds per batch.

Codes convert from and to boolean masks (V, d); numpy only: the store and the
budget use it without torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

DEFAULT = "bitmask"
MAX_WIDTH = 65535  # indices are uint16
_LIMB = 32
_MASK = (1 << _LIMB) - 1


@dataclass(frozen=True)
class WidthCode:
    """One exact code: its size per vector and its mask conversions."""

    nbytes: Callable[[int, int], int]  # (d, k) -> bytes per vector
    from_mask: Callable[[np.ndarray, int, int], np.ndarray]  # (V, d) bool, d, k -> (V, nbytes) uint8
    to_mask: Callable[[np.ndarray, int, int], np.ndarray]  # (V, nbytes) uint8, d, k -> (V, d) bool


def _bitmask_to_mask(codes: np.ndarray, d: int, k: int) -> np.ndarray:
    return np.unpackbits(codes, axis=1, count=d, bitorder="little").view(bool)


def _indices_from_mask(mask: np.ndarray, d: int, k: int) -> np.ndarray:
    dims = np.nonzero(mask)[1].reshape(len(mask), k)
    return np.ascontiguousarray(dims.astype("<u2")).view(np.uint8).reshape(len(mask), 2 * k)


def _indices_to_mask(codes: np.ndarray, d: int, k: int) -> np.ndarray:
    mask = np.zeros((len(codes), d), dtype=bool)
    np.put_along_axis(mask, codes.view("<u2").reshape(len(codes), k).astype(np.int64), True, axis=1)
    return mask


def _rank_bytes(d: int, k: int) -> int:
    return max(1, (math.comb(d, min(k, d - k)).bit_length() + 7) // 8)


WIDTH_CODES: dict[str, WidthCode] = {
    "bitmask": WidthCode(lambda d, k: (d + 7) // 8,
                         lambda mask, d, k: np.packbits(mask, axis=1, bitorder="little"), _bitmask_to_mask),
    "indices": WidthCode(lambda d, k: 2 * k, _indices_from_mask, _indices_to_mask),
    "rank": WidthCode(_rank_bytes, lambda mask, d, k: _rank_encode(mask, d, k), lambda codes, d, k: _rank_decode(codes, d, k)),
}


def get(name: str) -> WidthCode:
    try:
        return WIDTH_CODES[name]
    except KeyError:
        raise ValueError(f"unknown width code {name!r}; known: {', '.join(WIDTH_CODES)}") from None


def code_bytes(name: str, d: int, k: int) -> int:
    """Bytes one vector's code takes."""
    return get(name).nbytes(d, k)


def decode_mask(codes: np.ndarray, d: int, k: int, name: str) -> np.ndarray:
    """(V, code_bytes) uint8 -> (V, d) bool, K True per row."""
    return get(name).to_mask(np.ascontiguousarray(codes, dtype=np.uint8), d, k)


def from_bitmask(bits: np.ndarray, d: int, k: int, name: str) -> np.ndarray:
    """Packed bitmasks (the extractor's device output) -> codes of `name`."""
    if name == "bitmask":
        return bits
    return get(name).from_mask(_bitmask_to_mask(bits, d, k), d, k)


def to_bitmask(codes: np.ndarray, d: int, k: int, name: str) -> np.ndarray:
    """Codes of `name` -> packed bitmasks (what the reader ships)."""
    if name == "bitmask":
        return codes
    return np.packbits(decode_mask(codes, d, k, name), axis=1, bitorder="little")


# --- combinatorial number system -------------------------------------------

@lru_cache(maxsize=8)
def _tables(d: int, m: int) -> tuple[np.ndarray, np.ndarray, int]:
    """C(c, i) for c < d, i <= m as 32-bit limbs (d, m+1, L), and as log2."""
    n_limbs = max(1, -(-math.comb(d, m).bit_length() // _LIMB))
    limbs = np.zeros((d, m + 1, n_limbs), dtype=np.uint64)
    limbs[:, 0, 0] = 1
    for c in range(1, d):  # Pascal's rule, one row at a time, with carries
        row = limbs[c - 1, :-1] + limbs[c - 1, 1:]
        for j in range(n_limbs - 1):
            row[:, j + 1] += row[:, j] >> _LIMB
            row[:, j] &= _MASK
        limbs[c, 1:] = row
        limbs[c, 0, 0] = 1
    c = np.arange(d, dtype=np.float64)[:, None]
    i = np.arange(m + 1, dtype=np.float64)[None, :]
    with np.errstate(invalid="ignore"):
        lg = np.vectorize(math.lgamma)
        log2 = (lg(c + 1) - lg(i + 1) - lg(np.maximum(c - i, 0) + 1)) / math.log(2)
    log2 = np.where(c >= i, log2, -np.inf)
    return limbs.astype(np.uint32), log2, n_limbs


def _subset_and_size(d: int, k: int) -> tuple[int, bool]:
    """Rank the smaller of the kept and the eliminated set."""
    return (k, False) if k <= d - k else (d - k, True)


def _rank_encode(mask: np.ndarray, d: int, k: int) -> np.ndarray:
    m, flip = _subset_and_size(d, k)
    if flip:
        mask = ~mask
    limbs, _, n_limbs = _tables(d, m)
    v = mask.shape[0]
    total = np.zeros((v, n_limbs), dtype=np.uint64)
    if m:
        members = np.nonzero(mask)[1].reshape(v, m)
        total = limbs[members, np.arange(1, m + 1)].astype(np.uint64).sum(axis=1)
    for j in range(n_limbs - 1):
        total[:, j + 1] += total[:, j] >> _LIMB
        total[:, j] &= _MASK
    raw = total.astype("<u4").view(np.uint8).reshape(v, 4 * n_limbs)
    return np.ascontiguousarray(raw[:, : _rank_bytes(d, k)])


def _rank_decode(codes: np.ndarray, d: int, k: int) -> np.ndarray:
    m, flip = _subset_and_size(d, k)
    limbs, log2, n_limbs = _tables(d, m)
    v = codes.shape[0]
    padded = np.zeros((v, 4 * n_limbs), dtype=np.uint8)
    padded[:, : codes.shape[1]] = codes
    rest = padded.view("<u4").astype(np.int64)
    mask = np.zeros((v, d), dtype=bool)
    rows = np.arange(v)
    scale = 2.0 ** -np.arange(0, 3 * _LIMB, _LIMB)  # top three limbs as a float
    for i in range(m, 0, -1):
        # Before step i the rest is below C(d, i): only that many limbs can be non-zero.
        active = max(1, -(-math.comb(d, i).bit_length() // _LIMB))
        rest = rest[:, :active]
        table = limbs[:, i, :active]
        top = np.where(rest.any(axis=1), active - 1 - np.argmax(rest[:, ::-1] != 0, axis=1), 0)
        window = np.stack([rest[rows, np.maximum(top - s, 0)] * (top >= s) for s in range(3)], 1)
        with np.errstate(divide="ignore"):
            approx = np.log2(window.astype(np.float64) @ scale) + _LIMB * top
        cand = np.clip(np.searchsorted(log2[:, i], approx, side="right") - 1, i - 1, d - 1)
        cand -= _compare(table[cand], rest) > 0  # float rounding: step back ...
        nxt = np.minimum(cand + 1, d - 1)
        cand += (nxt > cand) & (_compare(table[nxt], rest) <= 0)  # ... or forward
        rest = _subtract(rest, table[cand])
        mask[rows, cand] = True
    return ~mask if flip else mask


def _compare(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sign of a - b for rows of little-endian limbs."""
    diff = np.sign(a.astype(np.int64) - b.astype(np.int64))
    nonzero = diff != 0
    top = diff.shape[1] - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), diff[np.arange(len(diff)), top], 0)


def _subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b (a >= b) for rows of little-endian limbs, with borrows."""
    out = a - b.astype(np.int64)
    for j in range(out.shape[1] - 1):
        borrow = out[:, j] < 0
        out[:, j] += borrow.astype(np.int64) << _LIMB
        out[:, j + 1] -= borrow
    return out
