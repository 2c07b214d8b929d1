"""Extraction without the teacher: recorded BERT-base-shaped teacher outputs through
selection, width coding, value encoding, compression and writing (rows/s).

What a GPU server's CPU (and the copy to it) must keep up with, measured
alone: `extract.batch_rows` (selection and bit packing with torch ops, only
kept bytes copied out) and the background writer (zstd and Zarr writes
overlapped with the next batch), exactly as `hskcache extract` runs them, with
the teacher's forward replaced by outputs recorded once. The outputs: real
movie reviews tokenized with the packaged (BERT-uncased) tokenizer at max
length 128; 13 hidden states of width 768 (bf16, as a GPU teacher under
autocast returns them; Gaussian with a few large outlier dimensions, as
BERT's have); 12 attention layers of 12 heads whose [CLS] rows are random
softmaxes (selection reads only those rows, so the others are a broadcast
view). `--batches` distinct recorded batches are cycled, so compression sees
no repeats within its window. Targets: 5,000 rows/s at (1,9,0.1) and 2,000 at
(4,50,0.2), L' = 6.

    python tools/bench/pipeline.py [--rows 20000 4000] [--keep DIR]

`--keep DIR` leaves the stores in DIR (tools/bench/reader.py reads them).
"""
from __future__ import annotations

import argparse
import bz2
import csv
import platform
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from transformers import AutoTokenizer, BertConfig

from hskcache.data import tokenize_batch
from hskcache.embedded import minilm_encoder, movie_corpus
from hskcache.teacher.extract import BackgroundWriter, batch_rows
from hskcache.store.meta import synthetic_meta
from hskcache.kinds.hsk import HSKRecord, HSKSettings
from hskcache.store.shape import StoreShape
from hskcache.selection.hsk import SelectionPlan, layer_map
from hskcache.store.group import StoreWriter

CONFIGS = {"1,9,0.1": (1, 9, 0.1), "4,50,0.2": (4, 50, 0.2)}
LAYERS, HIDDEN, HEADS, STUDENT_LAYERS = 12, 768, 12, 6


def reviews(n: int) -> list[str]:
    with bz2.open(movie_corpus(), "rt") as f:
        return [r["text"] for r in csv.DictReader(f) if r["category"] != "plot"][:n]


class RecordedTeacher:
    """A teacher whose forward returns recorded outputs, batch after batch."""

    def __init__(self, batch: int, seq: int, distinct: int, stored: list[int], seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        outliers = torch.randperm(HIDDEN, generator=gen)[:8]
        self.device = torch.device("cpu")
        self.model = torch.nn.Module()  # no relation knowledge here, so no hooks are attached to it
        self.model.config = BertConfig()  # BERT-base's: the family decides what the store keeps (token types)
        self.outputs = []
        for _ in range(distinct):
            states = {}
            for layer in stored:
                h = torch.randn(batch, seq, HIDDEN, generator=gen)
                h[..., outliers] *= 20  # BERT-like outlier dimensions, kept by almost every magnitude mask
                states[layer] = h.to(torch.bfloat16)
            filler = next(iter(states.values()))
            hidden = tuple(states.get(i, filler) for i in range(LAYERS + 1))
            cls = torch.softmax(torch.randn(LAYERS, batch, HEADS, 1, seq, generator=gen) * 3, dim=-1)
            attentions = tuple(cls[i].expand(batch, HEADS, seq, seq) for i in range(LAYERS))
            logits = torch.randn(batch, 2, generator=gen)
            self.outputs.append(SimpleNamespace(hidden_states=hidden, attentions=attentions, logits=logits))
        self.calls = 0

    def forward(self, batch):
        out = self.outputs[self.calls % len(self.outputs)]
        self.calls += 1
        return out


def run(config: tuple[int, int, float], rows: int, tokens: list[dict[str, np.ndarray]], teacher: RecordedTeacher,
        store: Path, vocab: int) -> tuple[float, float, float]:
    """rows/s of (the device part, the host part, both overlapped as `hskcache extract` runs them).

    The device part is `batch_rows` (selection and bit packing: on a GPU server it runs
    on the GPU and only kept bytes reach the host); the host part is the background
    writer alone (zstd and Zarr writes) fed with rows the device part made earlier.
    """
    depth, n_tokens, width = config
    teacher_layers = layer_map(STUDENT_LAYERS, LAYERS)
    plan = SelectionPlan.build(teacher_layers, LAYERS, depth, n_tokens, "att-nosep-top", width, "mag", HIDDEN)
    seq = tokens[0]["input_ids"].shape[1]
    hsk = HSKRecord.of(HSKSettings(depth, n_tokens, width), depth, n_tokens, HIDDEN)
    shape = StoreShape(seq, vocab, 2, False, HIDDEN, kinds={"hsk": hsk})
    meta = synthetic_meta(shape, rows, teacher_layers, "bench")
    bs = len(tokens[0]["input_ids"])

    def rows_of(i: int, lo: int) -> dict[str, np.ndarray]:
        return batch_rows(teacher, plan, shape, tokens[i % len(tokens)], np.zeros(bs), np.arange(lo, lo + bs))

    def write_all(make) -> float:
        shutil.rmtree(store, ignore_errors=True)
        StoreWriter.create(str(store), shape, rows, meta, {}, overwrite=False)
        writer = StoreWriter.attach(str(store), shape, rows)
        start = time.perf_counter()
        background = BackgroundWriter(writer)
        for i, lo in enumerate(range(0, rows, bs)):
            n = min(bs, rows - lo)
            background.write(lo, {k: v[:n] for k, v in make(i, lo).items()})
        background.close()
        seconds = time.perf_counter() - start
        writer.finish()
        return rows / seconds

    start = time.perf_counter()
    made = [rows_of(i, 0) for i in range(len(tokens))]
    device = len(made) * bs / (time.perf_counter() - start)
    host = write_all(lambda i, lo: made[i % len(made)] | {"example_id": np.arange(lo, lo + bs)})
    both = write_all(rows_of)
    return device, host, both


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs=2, default=[20000, 4000], help="rows written at (1,9,0.1) and (4,50,0.2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batches", type=int, default=8, help="distinct recorded batches")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--keep", type=Path, help="write the stores here and keep them")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_encoder())
    texts = reviews(args.batch_size * args.batches)
    tokens = [tokenize_batch(tokenizer, texts[i:i + args.batch_size], None, args.max_length)
              for i in range(0, len(texts), args.batch_size)]
    work = args.keep or Path(tempfile.mkdtemp(prefix="hsk-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU")
    print(f"recorded BERT-base outputs (12 layers, d=768, 12 heads), batch {args.batch_size}, max length "
          f"{args.max_length}, {args.batches} distinct batches; L'={STUDENT_LAYERS}, att-nosep-top, mag, "
          "bitmask, fp16 (blosc-lz4), zstd")
    print("rows/s: device = selection and packing (on a GPU server, the GPU's work), host = compression and "
          "writes alone (the GPU server's CPU), both = the two overlapped on this CPU as `hskcache extract` runs")
    print(f"{'config':<10}{'rows':>8}{'device':>10}{'host':>10}{'both':>10}{'target':>9}")
    targets = {"1,9,0.1": 5000, "4,50,0.2": 2000}
    for (name, config), rows in zip(CONFIGS.items(), args.rows):
        depth = config[0]
        stored = layer_map(STUDENT_LAYERS, LAYERS)[-depth:]
        teacher = RecordedTeacher(args.batch_size, args.max_length, args.batches, stored)
        device, host, both = run(config, rows, tokens, teacher, work / name, len(tokenizer))
        print(f"{name:<10}{rows:>8}{device:>10.0f}{host:>10.0f}{both:>10.0f}{targets[name]:>9}")
        del teacher
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
