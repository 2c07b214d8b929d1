"""Would a compressor pay on the store's arrays? zstd and blosc-zstd ratios and decode speed per array.

The store writes every array uncompressed (exact, predictable byte counts and
no decode cost); this measures what that leaves on the table.

    python tools/bench/compression.py STORE
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from numcodecs import Blosc, Zstd

from hskcache.store import StoreData

CODECS = {"zstd-3": Zstd(level=3), "blosc-zstd-shuffle": Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store")
    p.add_argument("--rows", type=int, default=4096, help="rows sampled from the start of the store")
    args = p.parse_args()
    data = StoreData(args.store)
    rows = slice(0, min(args.rows, data.num_examples))
    print(f"{args.store}: first {rows.stop} rows; ratio = raw / compressed, decode in MB/s of raw data")
    print(f"{'array':<16}{'raw MB':>9}" + "".join(f"{c + ' ratio':>26}{'decode':>9}" for c in CODECS))
    for name in data.arrays:
        block = np.ascontiguousarray(data.read([name], rows)[name])
        raw = block.nbytes
        line = f"{name:<16}{raw / 1e6:>9.2f}"
        for codec in CODECS.values():
            packed = codec.encode(block)
            start = time.perf_counter()
            codec.decode(packed)
            seconds = time.perf_counter() - start
            line += f"{raw / len(packed):>26.2f}{raw / 1e6 / max(seconds, 1e-9):>9.0f}"
        print(line)


if __name__ == "__main__":
    main()
