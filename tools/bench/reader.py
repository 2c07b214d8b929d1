"""Store reader throughput at BERT-base shapes (d_T = 768, max length 128) against
what a student training step consumes.

Each configuration is read from a store extracted at that configuration by
tools/bench/pipeline.py (recorded BERT-base-shaped teacher outputs over real
movie reviews, through the extractor's own code; default codecs: bitmask,
fp16 values in blosc-lz4, the rest zstd). Reader rows/s is `store.batches(..., packed=True)` with one
thread and with every core (and the CPU share it got): decompressing chunks and gathering rows, the CPU
side of feeding a trainer (the expansion to dense tensors happens on the
trainer's device, and is timed apart here on the CPU). The student column is
one HSK-stage step of a TinyBERT-4 (4 layers, hidden 312) on this CPU with
the expansion included. Targets: 150,000 rows/s at (1,9,0.1) and 10,000 at
(4,50,0.2).

    python tools/bench/pipeline.py --keep STORES      # writes STORES/1,9,0.1 and STORES/4,50,0.2
    python tools/bench/reader.py STORES [--batch-size 64]
    python tools/bench/reader.py STORES --checksum-only   # the crc32c check's cost, as a ratio
"""
from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel

import hskcache
from hskcache.storage.packed import expand
from hskcache.store.reader import default_threads
from students.kinds.hsk import gather_projected
from students.losses import HSKProjection, projected_hsk_loss

CONFIGS = ("1,9,0.1", "4,50,0.2")
TARGETS = {"1,9,0.1": 150_000, "4,50,0.2": 10_000}


def reader_rate(store, batch_size: int, threads: int, seconds: float, **read) -> tuple[float, float]:
    """(rows/s, the reader's CPU seconds per second) of packed batches over whole epochs
    (at least `seconds`), after a warm-up batch. The CPU share says how much of the
    machine the reader got: on a machine shared with other jobs it is below the thread count."""
    rows, start, epoch = 0, None, 0
    while start is None or time.perf_counter() - start < seconds:
        for batch in store.batches(batch_size, shuffle=True, seed=0, epoch=epoch, packed=True, threads=threads, **read):
            if start is None:
                start, cpu = time.perf_counter(), time.process_time()
                continue
            rows += len(batch)
        epoch += 1
    wall = time.perf_counter() - start
    return rows / wall, (time.process_time() - cpu) / wall


def checksum_cost(store, batch_size: int, seconds: float, repeats: int) -> tuple[float, float]:
    """One thread's rows/s (medians) with every chunk's crc32c checked, as the reader runs, and
    with the check skipped (the checksum only cut off): runs interleaved, so the machine's drift
    falls on both alike."""
    from hskcache.storage.chunks import CHECKSUM_BYTES, ChunkDecoder

    checked, rates = ChunkDecoder.__dict__["checked"], {True: [], False: []}  # the staticmethod itself
    for i in range(repeats):
        for check in ((True, False) if i % 2 else (False, True)):  # neither always goes first
            if not check:
                ChunkDecoder.checked = staticmethod(lambda data: data[:-CHECKSUM_BYTES])
            try:
                rates[check].append(reader_rate(store, batch_size, 1, seconds)[0])
            finally:
                ChunkDecoder.checked = checked
    return statistics.median(rates[True]), statistics.median(rates[False])


def checksum_decode_cost(path, repeats: int) -> tuple[float, float]:
    """Seconds to decode the first chunk of every array once, with its crc32c checked and with the
    check skipped: the least over `repeats` alternating rounds (the least is what the work costs
    when no other job interrupts it, so it holds on a shared machine)."""
    from hskcache.storage.chunks import CHECKSUM_BYTES, ChunkDecoder
    from hskcache.store.group import StoreData, chunk_key

    data = StoreData(str(path))
    decoders = {name: ChunkDecoder.of(arr) for name, arr in data.arrays.items() if arr.shape[0] == data.num_examples}
    stored = data.location.cat([chunk_key(data.arrays[name], name, 0) for name in decoders])
    chunks = [(decoders[name], stored[chunk_key(data.arrays[name], name, 0)],
               np.empty(data.arrays[name].chunks, dtype=data.arrays[name].dtype)) for name in decoders]
    checked, best = ChunkDecoder.__dict__["checked"], {True: float("inf"), False: float("inf")}
    for i in range(repeats):
        for check in ((True, False) if i % 2 else (False, True)):  # neither always goes first
            if not check:
                ChunkDecoder.checked = staticmethod(lambda data: data[:-CHECKSUM_BYTES])
            try:
                start = time.perf_counter()
                for decoder, raw, out in chunks:
                    decoder.decode(raw, out)
                best[check] = min(best[check], time.perf_counter() - start)
            finally:
                ChunkDecoder.checked = checked
    return best[True], best[False]


def expand_rate(store, batch_size: int, batches: int) -> float:
    packed = list(itertools.islice(store.batches(batch_size, packed=True), batches))
    start = time.perf_counter()
    for batch in packed:
        expand(batch)
    return sum(len(b) for b in packed) / (time.perf_counter() - start)


def student_rate(store, batch_size: int, steps: int) -> float:
    """Rows/s of one HSK-stage step: expand, forward, HSK loss, backward, AdamW."""
    torch.manual_seed(0)
    config = BertConfig(hidden_size=312, num_hidden_layers=4, num_attention_heads=12, intermediate_size=1200,
                        vocab_size=30522)
    model = BertModel(config)
    proj = HSKProjection(config.hidden_size, store.hidden)
    opt = torch.optim.AdamW([*model.parameters(), *proj.parameters()], lr=5e-5)
    packed = list(itertools.islice(store.batches(batch_size, packed=True), steps + 1))
    times = []
    for item in packed:
        start = time.perf_counter()
        batch = expand(item)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], output_hidden_states=True)
        n = batch["positions"].shape[1]
        predicted = [gather_projected(states, batch["positions"][:, j], proj)
                     for j, states in enumerate(out.hidden_states[-n:])]
        loss = projected_hsk_loss(predicted, batch["hsk"], batch["positions"], batch["hsk_mask"], "zero-fill")
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return batch_size / (sum(times[1:]) / steps)  # the first step is warm-up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stores", type=Path, help="folder with the stores of tools/bench/pipeline.py --keep")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0, help="least time each reader rate is measured over")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--checksum-only", action="store_true",
                   help="only the cost of checking the chunks' crc32c: one thread, checked against unchecked")
    p.add_argument("--repeats", type=int, default=5, help="interleaved runs of each, with --checksum-only")
    args = p.parse_args()
    torch.set_num_threads(1)
    cores = default_threads()
    print(f"machine: {platform.machine()}, {cores} cores, torch {torch.__version__}, CPU; batch {args.batch_size}, "
          "packed batches; student and expansion: one thread")
    if args.checksum_only:
        print(f"{'store':<10}{'checked rows/s':>16}{'unchecked rows/s':>18}{'ratio':>8}")
        for name in CONFIGS:
            checked, unchecked = checksum_cost(hskcache.open_store(args.stores / name), args.batch_size, args.seconds,
                                               args.repeats)
            print(f"{name:<10}{checked:>16.0f}{unchecked:>18.0f}{checked / unchecked:>8.3f}")
        print(f"one thread, medians of {args.repeats} interleaved runs each; ratio = checked / unchecked rows/s")
        print(f"{'store':<10}{'checked ms':>16}{'unchecked ms':>18}{'ratio':>8}")
        for name in CONFIGS:
            checked, unchecked = checksum_decode_cost(args.stores / name, 20 * args.repeats)
            print(f"{name:<10}{checked * 1e3:>16.2f}{unchecked * 1e3:>18.2f}{checked / unchecked:>8.3f}")
        print(f"decoding chunk 0 of every array (bytes already fetched), least of {20 * args.repeats} rounds, "
              "alternating which goes first; ratio = checked / unchecked time")
        return
    print(f"{'store':<10}{'rows':>7}{'MiB':>7}{'1 thread':>10}{'CPU':>6}{f'{cores} threads':>11}{'CPU':>6}{'target':>9}"
          f"{'expand rows/s':>15}{'student rows/s':>16}")
    for name in CONFIGS:
        store = hskcache.open_store(args.stores / name)
        size = sum(hskcache.store.group.on_disk_bytes(store.path).values()) / 2**20
        one, one_cpu = reader_rate(store, args.batch_size, 1, args.seconds)
        every, every_cpu = reader_rate(store, args.batch_size, cores, args.seconds)
        dense = expand_rate(store, args.batch_size, 20)
        student = student_rate(store, args.batch_size, args.steps)
        print(f"{name:<10}{store.num_examples:>7}{size:>7.0f}{one:>10.0f}{one_cpu:>6.2f}{every:>11.0f}{every_cpu:>6.2f}"
              f"{TARGETS[name]:>9}"
              f"{dense:>15.0f}{student:>16.0f}")
    smaller = hskcache.open_store(args.stores / "4,50,0.2")
    rate, cpu = reader_rate(smaller, args.batch_size, cores, args.seconds, depth=1, tokens=9, width=0.1)
    print(f"(1,9,0.1) read from the (4,50,0.2) store, {cores} threads: {rate:.0f} rows/s (CPU {cpu:.2f})")
    print("CPU: the reader's process CPU seconds per second of reading (at most the thread count, "
          "less when other jobs share the cores)")


if __name__ == "__main__":
    main()
