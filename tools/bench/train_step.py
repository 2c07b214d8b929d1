"""Training step time, offline (from a store) against online (teacher loaded), for
TinyBERT- and ROSITA-style students on the same batches, with the ideal ratio
(teacher forward + student step) / student step beside the measured one.

The paper's Appendix D setting on CPU: batch 16, max length 128, HSK (1,9,0.1).

    python tools/bench/train_step.py [--examples 512] [--steps 30]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from hskcache.teacher.config import build_config
from hskcache.data import load_texts, tokenize_batch
from hskcache.teacher.extract import extract
from hskcache.teacher.loading import load_teacher

from common import workspace

STUDENTS = Path(sys.executable).parent / "students"


def stage_seconds_per_step(run: Path) -> float:
    stats = json.loads((run / "metrics.json").read_text())["stages"]["hsk"]
    return stats["seconds"] / stats["steps"]


def train(source: list[str], student: Path, run: Path, args) -> float:
    subprocess.run([str(STUDENTS), "train", *source, "--student", str(student), "--out", str(run),
                    "--hsk-batch-size", str(args.batch_size), "--pred-batch-size", str(args.batch_size),
                    "--max-steps", str(args.steps), "--threads", str(args.threads), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return stage_seconds_per_step(run)


def teacher_forward_seconds(teacher_dir: Path, data: Path, args) -> float:
    """Per batch, with hidden states and attentions, padded to max length as the online source runs it."""
    torch.set_num_threads(args.threads)
    teacher = load_teacher(str(teacher_dir), "cpu")
    texts = load_texts(str(data)).texts_a
    batches = [texts[i:i + args.batch_size] for i in range(0, args.steps * args.batch_size, args.batch_size)]
    teacher.forward({k: torch.from_numpy(v) for k, v in tokenize_batch(teacher.tokenizer, batches[0], None, args.max_length).items()})
    start = time.perf_counter()
    for b in batches:
        teacher.forward({k: torch.from_numpy(v) for k, v in tokenize_batch(teacher.tokenizer, b, None, args.max_length).items()})
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    work, teacher, data = workspace(args.examples)
    hsk = dict(depth=1, tokens=9, width=0.1)
    extract(build_config(dict(teacher=str(teacher), data=str(data), store=str(work / "store"), student_layers=3,
                              max_length=args.max_length, batch_size=64, **hsk)), progress=False)
    subprocess.run([str(STUDENTS), "build", "tinybert", "--init", "random", "--teacher", str(teacher), "--preset", "tinybert-3s",
                    "--out", str(work / "tinybert-3s")], check=True, capture_output=True)
    subprocess.run([str(STUDENTS), "build", "rosita", "--teacher", str(teacher), "--store", str(work / "store"),
                    "--preset", "rosita-3s", "--importance-examples", "256", "--out", str(work / "rosita-3s")],
                   check=True, capture_output=True)
    offline = ["--store", str(work / "store")]
    online = ["--teacher", str(teacher), "--data", str(data), "--student-layers", "3", "--depth", "1", "--tokens", "9",
              "--width", "0.1", "--max-length", str(args.max_length)]
    forward = teacher_forward_seconds(teacher, data, args)
    print(f"machine: {platform.machine()}, {args.threads} threads, torch {torch.__version__}, CPU; batch {args.batch_size}, "
          f"max length {args.max_length}, HSK (1,9,0.1), {args.steps} steps")
    print(f"teacher forward (hidden states + attentions): {1000 * forward:.0f} ms/batch")
    print(f"{'student':<14}{'offline ms':>11}{'online ms':>11}{'speed-up':>10}{'ideal':>8}{'of ideal':>10}")
    for name in ("tinybert-3s", "rosita-3s"):
        off = train(offline, work / name, work / f"off-{name}", args)
        on = train(online, work / name, work / f"on-{name}", args)
        ideal = (forward + off) / off
        print(f"{name:<14}{1000 * off:>11.0f}{1000 * on:>11.0f}{on / off:>9.2f}x{ideal:>7.2f}x"
              f"{100 * (on / off) / ideal:>9.0f}%")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
