"""Reader throughput from S3 against the same store on local disk.

The S3 side is moto's standalone server on 127.0.0.1 (tests/s3_server.py),
reached through s3fs and zarr's FsspecStore like any bucket. The reader
fetches whole chunks on its thread pool (concurrent requests, never one row
at a time), so S3 should cost at most 2x the local rate here. Local and S3
reads are interleaved and the best of `--repeats` is kept.

    python tools/bench/remote_reader.py [--examples 512] [--rows 20000]
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import boto3
import torch

import hskcache
from hskcache.config import ExtractConfig
from hskcache.extract import extract
from hskcache.storage import Location

from common import tiled_store, workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from s3_server import moto_server, s3_environment  # noqa: E402

CONFIGS = {"1,9,0.1": dict(depth=1, tokens=9, width=0.1), "4,50,0.2": dict(depth=4, tokens=50, width=0.2)}


def rate(url: str, batch_size: int, batches: int) -> float:
    """Rows/s of store.batches over `batches` batches, opening included."""
    start = time.perf_counter()
    store = hskcache.open_store(url)
    rows = sum(len(b["labels"]) for b in itertools.islice(store.batches(batch_size, shuffle=True, seed=0), batches))
    return rows / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=512, help="real reviews extracted")
    p.add_argument("--rows", type=int, default=20000, help="rows of the tiled store read")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    work, teacher, data = workspace(args.examples)
    with moto_server() as endpoint:
        os.environ.update(s3_environment(endpoint))
        boto3.client("s3").create_bucket(Bucket="bench")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
              f"S3: moto {endpoint} (loopback)")
        print(f"stores of {args.rows} rows (tiled from {args.examples} real reviews), batch {args.batch_size}, "
              f"{args.batches} batches, best of {args.repeats}")
        print(f"{'store':<10}{'local rows/s':>14}{'S3 rows/s':>12}{'local / S3':>12}")
        for name, settings in CONFIGS.items():
            cfg = ExtractConfig(str(teacher), str(data), str(work / f"small-{name}"), student_layers=3,
                                max_length=128, batch_size=64, **settings)
            extract(cfg, progress=False)
            local = str(tiled_store(work / f"small-{name}", work / f"big-{name}", args.rows))
            remote = f"s3://bench/{name}"
            Location.parse(remote).fs.put(local, f"bench/{name}", recursive=True)
            best = {"local": 0.0, "s3": 0.0}
            for _ in range(args.repeats):
                best["local"] = max(best["local"], rate(local, args.batch_size, args.batches))
                best["s3"] = max(best["s3"], rate(remote, args.batch_size, args.batches))
            print(f"{name:<10}{best['local']:>14.0f}{best['s3']:>12.0f}{best['local'] / best['s3']:>11.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
