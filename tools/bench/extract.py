"""Extraction overhead: a full `hskcache extract` against a bare teacher run, which
loads the teacher the same way and runs its forward pass over the same batches
with the same output flags (hidden states and attentions). Both pay the teacher
load, so the difference is what extraction adds: selection, width code,
compression, writes and the store's metadata. Target: at most 10% more on CPU.

    python tools/bench/extract.py [--teacher DIR] [--examples 512] [--max-length 128]
"""
from __future__ import annotations

import argparse
import platform
import shutil
import time

import torch

from hskcache.config import ExtractConfig
from hskcache.data import load_texts, tokenize_batch
from hskcache.extract import extract
from hskcache.teacher import load_teacher

from common import workspace


def bare_forward(cfg: ExtractConfig) -> float:
    start = time.perf_counter()
    teacher = load_teacher(cfg.teacher, cfg.device)
    data = load_texts(cfg.data)
    for lo in range(0, len(data), cfg.batch_size):
        tokens = tokenize_batch(teacher.tokenizer, data.texts_a[lo:lo + cfg.batch_size], None, cfg.max_length)
        out = teacher.forward({k: torch.from_numpy(v) for k, v in tokens.items()})
        out.logits.float().cpu()
    return time.perf_counter() - start


def timed_extract(cfg: ExtractConfig) -> float:
    shutil.rmtree(cfg.store, ignore_errors=True)
    start = time.perf_counter()
    extract(cfg, progress=False)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", help="fine-tuned teacher folder (default: packaged MiniLM with a seeded head)")
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    work, teacher, data = workspace(args.examples, args.teacher)
    teacher, data = str(teacher), str(data)
    configs = {
        "(1,9,0.1) mag": dict(student_layers=3, depth=1, tokens=9, width=0.1),
        "(4,50,1.0)": dict(student_layers=3, tokens=50, width=1.0),
        "(4,50,0.2) mag": dict(student_layers=3, tokens=50, width=0.2),
    }
    bare_cfg = ExtractConfig(teacher, data, "", student_layers=3, max_length=args.max_length,
                             batch_size=args.batch_size, device=args.device)
    runs = {name: ExtractConfig(teacher, data, str(work / "store"), max_length=args.max_length,
                                batch_size=args.batch_size, device=args.device, **settings)
            for name, settings in configs.items()}
    bare_forward(bare_cfg)  # warm-up: allocator, thread pools, file cache
    times: dict[str, list[float]] = {"teacher only": []} | {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits every row alike
        times["teacher only"].append(bare_forward(bare_cfg))
        for name, cfg in runs.items():
            times[name].append(timed_extract(cfg))
    bare = min(times["teacher only"])
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, device {args.device}")
    print(f"{args.examples} movie reviews, batch {args.batch_size}, max length {args.max_length}, best of {args.repeats}")
    print(f"{'run':<24}{'seconds':>9}{'ex/s':>9}{'overhead':>10}{'ms/row':>8}")
    for name, ts in times.items():
        t = min(ts)
        extra = "" if name == "teacher only" else f"{100 * (t / bare - 1):.1f}%"
        per_row = "" if name == "teacher only" else f"{1000 * (t - bare) / args.examples:.2f}"
        label = name if name == "teacher only" else "extract " + name
        print(f"{label:<24}{t:>9.2f}{args.examples / t:>9.1f}{extra:>10}{per_row:>8}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
