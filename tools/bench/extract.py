"""Extraction overhead: a full `hskcache extract` against a bare teacher run, which
loads the teacher the same way and runs its forward pass over the same batches
with the same output flags (hidden states and attentions). Both pay the teacher
load, so the difference is what extraction adds: selection, width code,
compression, writes and the store's metadata. Target: at most 10% more on CPU.

Two measures, because this machine's speed drifts between identical runs by
more than the overhead itself (docs/benchmarks.md):

- **in-run**: each run times its teacher forwards; the overhead is the
  extraction's time outside its forwards, less the teacher-only run's time
  outside its forwards (loading, tokenizing), over the extraction's forward
  time. Both parts come from the same run, so a drift hits them alike. It
  does not see the background writer slowing the forward from the other core;
- **paired wall**: the extraction's wall time over the teacher-only run just
  before it, which sees everything, noise included (median and range).

    python tools/bench/extract.py [--teacher DIR] [--examples 512] [--max-length 128] [--repeats 3]
"""
from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import time
from contextlib import contextmanager
from unittest import mock

import torch

from hskcache.teacher.config import ExtractConfig, build_config
from hskcache.data import load_texts, tokenize_batch
from hskcache.teacher.extract import extract
from hskcache.teacher.loading import Teacher, load_teacher

from common import workspace


@contextmanager
def forward_clock():
    """Sums the wall time of every teacher forward inside the block: yields a one-item list."""
    total, original = [0.0], Teacher.forward

    def timed(self, batch):
        start = time.perf_counter()
        out = original(self, batch)
        total[0] += time.perf_counter() - start
        return out

    with mock.patch.object(Teacher, "forward", timed):
        yield total


def bare_forward(cfg: ExtractConfig) -> tuple[float, float]:
    """(wall, forward) seconds of a teacher-only run."""
    with forward_clock() as forward:
        start = time.perf_counter()
        teacher = load_teacher(cfg.teacher, cfg.device)
        data = load_texts(cfg.data)
        for lo in range(0, len(data), cfg.batch_size):
            tokens = tokenize_batch(teacher.tokenizer, data.texts_a[lo:lo + cfg.batch_size], None, cfg.max_length)
            out = teacher.forward({k: torch.from_numpy(v) for k, v in tokens.items()})
            out.logits.float().cpu()
        return time.perf_counter() - start, forward[0]


def timed_extract(cfg: ExtractConfig) -> tuple[float, float]:
    """(wall, forward) seconds of an extraction."""
    shutil.rmtree(cfg.store, ignore_errors=True)
    with forward_clock() as forward:
        start = time.perf_counter()
        extract(cfg, progress=False)
        return time.perf_counter() - start, forward[0]


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
    runs = {name: build_config(dict(teacher=teacher, data=data, store=str(work / "store"), max_length=args.max_length,
                                    batch_size=args.batch_size, device=args.device, **settings))
            for name, settings in configs.items()}
    bare_forward(bare_cfg)  # warm-up: allocator, thread pools, file cache
    # Each extraction is paired with a teacher-only run just before it.
    pairs: dict[str, list[tuple[tuple[float, float], tuple[float, float]]]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, cfg in runs.items():
            pairs[name].append((bare_forward(bare_cfg), timed_extract(cfg)))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, device {args.device}")
    print(f"{args.examples} movie reviews, batch {args.batch_size}, max length {args.max_length}, {args.repeats} repeats; "
          "medians over the repeats (min..max)")
    bares = [b for ps in pairs.values() for b, _ in ps]
    bare_rest = statistics.median(w - f for w, f in bares)  # loading and tokenizing
    walls = sorted(w for w, _ in bares)
    print(f"{'run':<24}{'wall s':>8}{'ex/s':>7}{'outside fwd s':>15}{'in-run overhead':>24}{'paired wall':>24}")
    print(f"{'teacher only':<24}{walls[0]:>8.2f}{args.examples / walls[0]:>7.1f}{bare_rest:>15.2f}"
          f"{'':>24}{f'runs {walls[0]:.2f}..{walls[-1]:.2f} s':>24}")

    def spread(ratios: list[float]) -> str:
        ratios = sorted(ratios)
        return f"{100 * statistics.median(ratios):.1f}% ({100 * ratios[0]:.1f}..{100 * ratios[-1]:.1f})"

    for name, ps in pairs.items():
        t = min(e[0] for _, e in ps)
        rest = statistics.median(w - f for _, (w, f) in ps)
        in_run = [(w - f - bare_rest) / f for _, (w, f) in ps]
        print(f"{'extract ' + name:<24}{t:>8.2f}{args.examples / t:>7.1f}{rest:>15.2f}{spread(in_run):>24}"
              f"{spread([e[0] / b[0] - 1 for b, e in ps]):>24}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
