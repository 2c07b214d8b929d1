"""Store reader throughput (rows/s) against how fast students consume rows.

The reader must never be what the trainer waits on: its rows/s (read, decode
the width codes, densify, in a background thread) should be well above a
student's training rows/s at the same batch size.

    python tools/bench/reader.py [--examples 1024] [--rows 20000]
"""
from __future__ import annotations

import argparse
import itertools
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

import hskcache
from hskcache.cli import quiet_libraries
from hskcache.config import ExtractConfig
from hskcache.extract import extract
from students.losses import HSKProjection, hsk_loss
from students.models import PRESETS, build_tinybert, load_student
from students.pruning import build_rosita

from common import movie_csv, packaged_teacher, tiled_store

CONFIGS = {"1,9,0.1": dict(depth=1, tokens=9, width=0.1), "4,50,0.2": dict(depth=4, tokens=50, width=0.2)}


def reader_rate(store, batch_size: int, batches: int) -> float:
    it = store.batches(batch_size, shuffle=True, seed=0)
    next(it)  # thread start-up and first window
    start = time.perf_counter()
    rows = sum(len(b["labels"]) for b in itertools.islice(it, batches))
    return rows / (time.perf_counter() - start)


def student_rate(student, store, batch_size: int, steps: int) -> float:
    """Training rows/s of one HSK-stage step: forward, HSK loss, backward, AdamW."""
    proj = HSKProjection(student.config.hidden_size, store.hidden)
    opt = torch.optim.AdamW([*student.parameters(), *proj.parameters()], lr=5e-5)
    batches = list(itertools.islice(store.batches(batch_size, seed=1), steps + 1))
    student.train()
    times = []
    for batch in batches:
        start = time.perf_counter()
        out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"], output_hidden_states=True)
        n = batch["positions"].shape[1]
        states = list(out.hidden_states[-n:])
        loss = hsk_loss(states, batch["hsk"], batch["positions"], batch["hsk_mask"], proj, "zero-fill")
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return batch_size / (sum(times[1:]) / steps)  # first step is warm-up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=1024, help="real reviews extracted")
    p.add_argument("--rows", type=int, default=20000, help="rows of the tiled store read")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="hsk-bench-"))
    teacher = packaged_teacher(work / "teacher")
    data = movie_csv(work / "movies.csv", args.examples)
    stores = {}
    for name, settings in CONFIGS.items():
        cfg = ExtractConfig(str(teacher), str(data), str(work / f"small-{name}"), student_layers=3,
                            max_length=args.max_length, batch_size=64, **settings)
        extract(cfg, progress=False)
        stores[name] = hskcache.open_store(tiled_store(work / f"small-{name}", work / f"big-{name}", args.rows))
    small = hskcache.open_store(work / "small-1,9,0.1")
    build_tinybert(teacher, **{k: getattr(PRESETS["tinybert-3s"], k) for k in ("layers", "hidden", "ffn", "heads")},
                   out_dir=work / "tinybert")
    spec = PRESETS["rosita-3s"]
    build_rosita(teacher, itertools.islice(small.batches(32, seed=0), 8), spec.layers, spec.heads, spec.ffn,
                 spec.emb_rank, work / "rosita")
    students = {"tinybert-3s": load_student(work / "tinybert"), "rosita-3s": load_student(work / "rosita")}
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, CPU")
    print(f"stores of {args.rows} rows (tiled from {args.examples} real reviews), max length {args.max_length}")
    print(f"{'store':<10}{'batch':>6}{'reader rows/s':>15}" + "".join(f"{s + ' rows/s':>20}" for s in students)
          + f"{'reader / fastest':>18}")
    for name, store in stores.items():
        for bs in (32, 64):
            reader = reader_rate(store, bs, args.batches)
            rates = [student_rate(m, store, bs, args.steps) for m in students.values()]
            print(f"{name:<10}{bs:>6}{reader:>15.0f}" + "".join(f"{r:>20.0f}" for r in rates)
                  + f"{reader / max(rates):>17.1f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
