"""Which codec and level for the store's arrays: compression ratio, write (encode)
and read (decode) speed per array, zstd levels 1-9 and blosc-zstd with bit-shuffle.

Measures raw chunks of a real store (whatever codec it was written with), so
the numbers are what `store.CODECS` would get; docs/design.md ("Codecs")
records the choice they support, and each kind's arrays (`ArraySpec.disk_ratio`,
hskcache/kinds/) the ratios.

    python tools/bench/compression.py --store STORE [--rows 4096]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from numcodecs import Blosc, Zstd

from hskcache.options import STORE_HELP
from hskcache.store.group import StoreData

CODECS = {
    "zstd-1": Zstd(level=1), "zstd-3": Zstd(level=3), "zstd-9": Zstd(level=9),
    "blosc-zstd-3-bitshuffle": Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE),
    "blosc-lz4-5-bitshuffle": Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE),
}


def best_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help=STORE_HELP)
    p.add_argument("--rows", type=int, default=4096, help="rows read from the start of the store")
    args = p.parse_args()
    data = StoreData(args.store)
    rows = slice(0, min(args.rows, data.num_examples))
    print(f"{args.store}: first {rows.stop} rows, one thread; ratio = raw / compressed; "
          "write and read in MB/s of raw data (best of 3)")
    print(f"{'array':<14}{'raw MB':>8}  " + "  ".join(f"{c:>23}" for c in CODECS))
    print(f"{'':<14}{'':>8}  " + "  ".join(f"{'ratio  write   read':>23}" for _ in CODECS))
    totals = {c: [0, 0.0, 0.0] for c in CODECS}  # compressed bytes, write s, read s
    raw_total = 0
    static = {a.name for a in data.shape.static_arrays()}  # a few bytes, stored raw
    for name in (n for n in data.arrays if n not in static):
        block = np.ascontiguousarray(data.read([name], rows)[name])
        raw = block.nbytes
        raw_total += raw
        line = f"{name:<14}{raw / 1e6:>8.2f}  "
        for cname, codec in CODECS.items():
            packed = codec.encode(block)
            write = best_seconds(lambda: codec.encode(block))
            read = best_seconds(lambda: codec.decode(packed))
            totals[cname][0] += len(packed)
            totals[cname][1] += write
            totals[cname][2] += read
            line += f"  {raw / len(packed):>7.2f}{raw / 1e6 / write:>8.0f}{raw / 1e6 / read:>8.0f}"
        print(line)
    line = f"{'all arrays':<14}{raw_total / 1e6:>8.2f}  "
    for packed, write, read in totals.values():
        line += f"  {raw_total / packed:>7.2f}{raw_total / 1e6 / write:>8.0f}{raw_total / 1e6 / read:>8.0f}"
    print(line)


if __name__ == "__main__":
    main()
