"""What a training stage's read costs the reader: rows/s of the prediction stage's read, which
leaves the HSK out (`HSKRead(None)`: its arrays neither fetched nor decoded), against the read
that stage made before (the least HSK, depth 1 and 1 token: every HSK chunk still fetched and
decoded whole, then cut) and against the full read, as ratios within one run.

The store is made here: the packaged MiniLM over real movie reviews at (4,50,0.2), max length
128, tiled to --rows rows (`common.tiled_store`). One reader thread, packed batches (what the
trainer draws), medians of --repeats interleaved runs.

    python tools/bench/stage_reads.py [--rows 4000] [--repeats 5] [--seconds 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics

import torch

import hskcache
from hskcache.kinds.hsk import HSKRead
from hskcache.store.group import on_disk_bytes
from hskcache.teacher.config import build_config
from hskcache.teacher.extract import extract

from common import tiled_store, workspace
from reader import reader_rate

READS = {  # the stage reads compared, as the trainer passes them to `batches`
    "full (the HSK as stored)": {},
    "prediction stage, before: HSK (1,1,stored)": {"depth": 1, "tokens": 1},
    "prediction stage, now: no HSK": {"kinds": {"hsk": HSKRead(None)}},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=256, help="real reviews extracted, then tiled")
    p.add_argument("--rows", type=int, default=4000, help="rows of the tiled store read")
    p.add_argument("--batch-size", type=int, default=32, help="the trainer's default --pred-batch-size")
    p.add_argument("--seconds", type=float, default=2.0, help="least time each rate is measured over")
    p.add_argument("--repeats", type=int, default=5, help="interleaved runs of each read")
    args = p.parse_args()
    torch.set_num_threads(1)
    work, teacher, data = workspace(args.examples)
    try:
        extract(build_config(dict(teacher=str(teacher), data=str(data), store=str(work / "small"), student_layers=4,
                                  depth=4, tokens=50, width=0.2, max_length=128, batch_size=32)), progress=False)
        store = hskcache.open_store(tiled_store(work / "small", work / "store", args.rows))
        size = sum(on_disk_bytes(store.path).values()) / 2**20
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
              f"torch {torch.__version__}, CPU; store: {store.num_examples} rows, {size:.0f} MiB, "
              f"(4,50,0.2) of d_T={store.hidden}; one reader thread, packed batches of {args.batch_size}")
        rates: dict[str, list[float]] = {name: [] for name in READS}
        for i in range(args.repeats):
            order = list(READS) if i % 2 == 0 else list(READS)[::-1]  # none always goes first
            for name in order:
                rates[name].append(reader_rate(store, args.batch_size, 1, args.seconds, **READS[name])[0])
        median = {name: statistics.median(r) for name, r in rates.items()}
        now = median["prediction stage, now: no HSK"]
        print(f"{'read':<46}{'rows/s':>10}{'now / this':>12}")
        for name, rate in median.items():
            print(f"{name:<46}{rate:>10.0f}{now / rate:>12.2f}")
        print(f"medians of {args.repeats} interleaved runs of at least {args.seconds:g} s each; "
              f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
