"""Reader throughput from S3 against the same store on local disk.

The S3 side is moto's standalone server on 127.0.0.1 (tests/s3_server.py),
reached through s3fs and zarr's FsspecStore like any bucket. The reader
fetches whole chunks on its thread pool (concurrent requests, never one row
at a time), so S3 should cost at most 2x the local rate here. Opening the
store (its metadata requests) is timed apart from the read; the read is one
whole shuffled epoch, so its rate is the steady streaming rate a training run
sees. Local and S3 reads are interleaved and the best of `--repeats` is kept.

    python tools/bench/remote_reader.py [--examples 512] [--rows 100000 10000]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import boto3
import torch

import hskcache
from hskcache.teacher.config import build_config
from hskcache.teacher.extract import extract
from hskcache.storage.backends import Location

from common import tiled_store, workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from s3_server import moto_server, s3_environment  # noqa: E402

CONFIGS = {"1,9,0.1": dict(depth=1, tokens=9, width=0.1), "4,50,0.2": dict(depth=4, tokens=50, width=0.2)}


def rate(url: str, batch_size: int) -> tuple[float, float]:
    """(seconds to open the store, rows/s of store.batches over one whole epoch)."""
    start = time.perf_counter()
    store = hskcache.open_store(url)
    opened = time.perf_counter()
    rows = sum(len(b["labels"]) for b in store.batches(batch_size, shuffle=True, seed=0))
    return opened - start, rows / (time.perf_counter() - opened)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=512, help="real reviews extracted")
    p.add_argument("--rows", type=int, nargs=2, default=[100000, 10000],
                   help="rows of the tiled stores at (1,9,0.1) and (4,50,0.2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    work, teacher, data = workspace(args.examples)
    with moto_server() as endpoint:
        os.environ.update(s3_environment(endpoint))
        boto3.client("s3").create_bucket(Bucket="bench")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
              f"S3: moto {endpoint} (loopback)")
        print(f"stores tiled from {args.examples} real reviews, batch {args.batch_size}, one epoch, "
              f"best of {args.repeats}; open: seconds to open the store (metadata requests)")
        print(f"{'store':<10}{'rows':>8}{'local open':>12}{'S3 open':>9}{'local rows/s':>14}{'S3 rows/s':>12}"
              f"{'local / S3':>12}")
        for (name, settings), rows in zip(CONFIGS.items(), args.rows):
            cfg = build_config(dict(teacher=str(teacher), data=str(data), store=str(work / f"small-{name}"),
                                    student_layers=3, max_length=128, batch_size=64, **settings))
            extract(cfg, progress=False)
            local = str(tiled_store(work / f"small-{name}", work / f"big-{name}", rows))
            remote = f"s3://bench/{name}"
            Location.parse(remote).fs.put(local, f"bench/{name}", recursive=True)
            opens, best = {"local": float("inf"), "s3": float("inf")}, {"local": 0.0, "s3": 0.0}
            for _ in range(args.repeats):
                for side, url in (("local", local), ("s3", remote)):
                    opened, rows_per_s = rate(url, args.batch_size)
                    opens[side], best[side] = min(opens[side], opened), max(best[side], rows_per_s)
            print(f"{name:<10}{rows:>8}{opens['local']:>11.2f}s{opens['s3']:>8.2f}s{best['local']:>14.0f}"
                  f"{best['s3']:>12.0f}{best['local'] / best['s3']:>11.2f}x")
            Location.parse(remote).fs.rm(f"bench/{name}", recursive=True)  # moto holds objects in memory
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
