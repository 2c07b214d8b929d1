"""Width codes: exact round trips, sizes, and the rank against Python's integers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hskcache.storage import packed, widthcode


def random_subsets(d: int, k: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.stack([rng.choice(d, k, replace=False) for _ in range(n)]), axis=1)


@pytest.mark.parametrize("d,k", [(768, 77), (768, 538), (384, 77), (384, 192), (32, 1), (32, 16), (32, 31), (10, 10)])
@pytest.mark.parametrize("encoding", list(widthcode.WIDTH_CODES))
def test_round_trip(d, k, encoding):
    dims = random_subsets(d, k, 64, seed=d + k)
    dims[0] = np.arange(k)  # the smallest subset (rank 0)
    dims[1] = np.arange(d - k, d)  # the largest subset
    mask = mask_of(dims, d)
    bits = np.packbits(mask, axis=1, bitorder="little")
    codes = widthcode.from_bitmask(bits, d, k, encoding)  # the extractor's path: device bitmask -> the store's code
    assert codes.shape == (64, widthcode.code_bytes(encoding, d, k)) and codes.dtype == np.uint8
    np.testing.assert_array_equal(widthcode.decode_mask(codes, d, k, encoding), mask)
    np.testing.assert_array_equal(widthcode.to_bitmask(codes, d, k, encoding), bits)  # the reader's path


def mask_of(dims: np.ndarray, d: int) -> np.ndarray:
    mask = np.zeros((len(dims), d), dtype=bool)
    for row, kept in zip(mask, dims):
        row[kept] = True
    return mask


@pytest.mark.parametrize("d", [768, 384, 32, 10, 1])
def test_torch_bits_match_numpy(d):
    """The device-side packing (extractor) and unpacking (trainer) use numpy's little bit order."""
    mask = np.random.default_rng(d).random((5, 3, d)) < 0.3
    bits = packed.pack_bits(torch.from_numpy(mask))
    np.testing.assert_array_equal(bits.numpy(), np.packbits(mask, axis=-1, bitorder="little"))
    assert torch.equal(packed.unpack_bits(bits, d), torch.from_numpy(mask))


@pytest.mark.parametrize("d,k", [(768, 77), (40, 7), (40, 33)])
def test_rank_is_the_combinatorial_number(d, k):
    """The code is Σ C(c_i, i) over the smaller of the kept and the eliminated set (little-endian)."""
    dims = random_subsets(d, k, 8, seed=1)
    codes = widthcode.from_bitmask(np.packbits(mask_of(dims, d), axis=1, bitorder="little"), d, k, "rank")
    for row, code in zip(dims, codes):
        members = sorted(row) if k <= d - k else sorted(set(range(d)) - set(row.tolist()))
        expected = sum(math.comb(int(c), i + 1) for i, c in enumerate(members))
        assert int.from_bytes(code.tobytes(), "little") == expected
        assert expected < math.comb(d, k)


def test_sizes():
    assert widthcode.code_bytes("bitmask", 768, 77) == 96
    assert widthcode.code_bytes("indices", 768, 77) == 154
    assert widthcode.code_bytes("rank", 768, 77) == math.ceil(math.comb(768, 77).bit_length() / 8) == 45
    with pytest.raises(ValueError, match="unknown width code"):
        widthcode.code_bytes("huffman", 768, 77)
