"""Width codes: exact round trips, sizes, and the rank against Python's integers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hskcache import widthcode


def random_subsets(d: int, k: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.stack([rng.choice(d, k, replace=False) for _ in range(n)]), axis=1)


@pytest.mark.parametrize("d,k", [(768, 77), (768, 538), (384, 77), (384, 192), (32, 1), (32, 16), (32, 31), (10, 10)])
@pytest.mark.parametrize("encoding", widthcode.ENCODINGS)
def test_round_trip(d, k, encoding):
    dims = random_subsets(d, k, 64, seed=d + k)
    dims[0] = np.arange(k)  # the smallest subset (rank 0)
    dims[1] = np.arange(d - k, d)  # the largest subset
    codes = widthcode.encode(dims, d, encoding)
    assert codes.shape == (64, widthcode.code_bytes(encoding, d, k)) and codes.dtype == np.uint8
    np.testing.assert_array_equal(widthcode.decode(codes, d, k, encoding), dims)


@pytest.mark.parametrize("d,k", [(768, 77), (40, 7), (40, 33)])
def test_rank_is_the_combinatorial_number(d, k):
    """The code is Σ C(c_i, i) over the smaller of the kept and the eliminated set (little-endian)."""
    dims = random_subsets(d, k, 8, seed=1)
    codes = widthcode.encode(dims, d, "rank")
    for row, code in zip(dims, codes):
        members = sorted(row) if k <= d - k else sorted(set(range(d)) - set(row.tolist()))
        expected = sum(math.comb(int(c), i + 1) for i, c in enumerate(members))
        assert int.from_bytes(code.tobytes(), "little") == expected
        assert expected < math.comb(d, k)


def test_sizes_and_choice():
    assert widthcode.code_bytes("bitmask", 768, 77) == 96
    assert widthcode.code_bytes("indices", 768, 77) == 154
    assert widthcode.code_bytes("rank", 768, 77) == math.ceil(math.comb(768, 77).bit_length() / 8) == 45
    assert widthcode.choose_encoding(768, 77) == "rank"
    assert widthcode.choose_encoding(32, 16) == "bitmask"  # rank also 4 bytes: the simpler code wins the tie
    assert widthcode.choose_encoding(1000, 1) == "indices"  # 2 bytes; rank needs 2 too
