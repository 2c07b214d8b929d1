"""Peak resident memory of `students train` over a whole epoch of stores of 10k and
100k rows: it must not grow with the row count (the reader streams chunks).

The stores are tiled from a real extraction of movie reviews (same shapes,
dtypes, chunking and attributes as a real store of that size).

    python tools/bench/memory.py [--rows 10000 100000]
"""
from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from hskcache.teacher.config import build_config
from hskcache.teacher.extract import extract
from hskcache.store.group import on_disk_bytes

from common import tiled_store, workspace

STUDENTS = Path(sys.executable).parent / "students"


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds), polling the process every 50 ms."""
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return peak / 2**20, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--examples", type=int, default=1000, help="real reviews extracted, then tiled")
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    work, teacher, data = workspace(args.examples)
    extract(build_config(dict(teacher=str(teacher), data=str(data), store=str(work / "small"), student_layers=3,
                              depth=4, tokens=16, width=0.2, max_length=args.max_length, batch_size=64)),
            progress=False)
    subprocess.run([str(STUDENTS), "build", "tinybert", "--init", "random", "--teacher", str(teacher), "--preset", "tinybert-3s",
                    "--out", str(work / "student")], check=True, capture_output=True)
    print(f"machine: {platform.machine()}, {args.threads} thread(s), CPU; tinybert-3s, HSK (4,16,0.2) then predictions, "
          f"one epoch each over the whole store, batch {args.batch_size}, max length {args.max_length}")
    print(f"{'rows':>8}{'store MiB':>11}{'peak RSS MiB':>14}{'seconds':>9}")
    for rows in args.rows:
        store = tiled_store(work / "small", work / f"store-{rows}", rows)
        size = sum(on_disk_bytes(store).values()) / 2**20
        rss, seconds = peak_rss([str(STUDENTS), "train", "--store", str(store), "--student", str(work / "student"),
                                 "--out", str(work / f"run-{rows}"), "--hsk-epochs", "1", "--pred-epochs", "1",
                                 "--hsk-batch-size", str(args.batch_size), "--pred-batch-size", str(args.batch_size),
                                 "--threads", str(args.threads), "--quiet"])
        print(f"{rows:>8}{size:>11.0f}{rss:>14.0f}{seconds:>9.0f}")
        shutil.rmtree(store)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
