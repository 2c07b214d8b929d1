"""Paper arithmetic for scaled-out extraction and training (docs/scale.md).

Bytes and object counts come from the store layout (`hskcache.budget.plan.Setting
.store_shape`, the writer's own arithmetic: the exact uncompressed bytes).
Times come from per-GPU rates given on the command line: they are inputs,
not measurements, and the table prints them.

    python tools/scale_arithmetic.py --extract-rate 2000 --train-rate 4000

Requests, for a store on S3 or GCS:
- extraction writes one object per chunk per array, one commit marker per
  chunk and a few metadata objects (PUT);
- an epoch of training reads every chunk of every array once, whatever the
  number of ranks, since each rank reads a disjoint share of the chunks (GET).
"""
from __future__ import annotations

import argparse
import math

from hskcache.budget.plan import Config, Setting
from hskcache.storage.layout import human

MNLI = 392_702


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, nargs="+", default=[MNLI, 10 * MNLI],
                   help="transfer-set sizes (default MNLI and MNLI augmented 10x)")
    p.add_argument("--configs", nargs="+", default=["1,9,0.1", "4,50,0.2"], help="N^D,N^L,N^W")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--student-layers", type=int, default=4)
    p.add_argument("--teacher-width", type=int, default=768)
    p.add_argument("--extract-rate", type=float, required=True, help="rows/s one GPU extracts (an input)")
    p.add_argument("--train-rate", type=float, required=True, help="rows/s one GPU trains a student on (an input)")
    args = p.parse_args()

    print(f"teacher width {args.teacher_width}, student layers {args.student_layers}, length {args.seq_len}; "
          f"assumed rates per GPU: extraction {args.extract_rate:,.0f} rows/s, training {args.train_rate:,.0f} rows/s")
    print(f"{'examples':>10} {'config':>9} {'store':>10} {'rows/chunk':>10} {'objects':>8} {'PUT':>8} "
          f"{'GET/epoch':>9} " + " ".join(f"{f'N={n} extract':>14} {'epoch':>8} {'GB/rank':>8}"
                                          for n in args.ranks))
    print(" " * 71 + " ".join(f"{'min':>14} {'min':>8} {'':>8}" for _ in args.ranks))
    for examples in args.examples:
        setting = Setting(examples=examples, seq_len=args.seq_len, student_layers=args.student_layers,
                          hidden=args.teacher_width)
        for spec in args.configs:
            d, l, w = spec.split(",")
            shape = setting.store_shape(Config.of(int(d), int(l), float(w)))
            rows = shape.rows_per_chunk(examples)
            chunks = math.ceil(examples / rows)
            arrays = len(shape.arrays())
            total = sum(shape.bytes_by_array(examples).values())
            objects = chunks * arrays
            puts = objects + chunks + arrays + 1  # chunk objects, commit markers, array and group metadata
            cells = []
            for n in args.ranks:
                extract_min = examples / (n * args.extract_rate) / 60
                epoch_min = examples / (n * args.train_rate) / 60
                cells.append(f"{extract_min:>14.2f} {epoch_min:>8.2f} {total / n / 1e9:>8.2f}")
            print(f"{examples:>10,} {spec:>9} {human(total):>10} {rows:>10,} {objects:>8,} {puts:>8,} "
                  f"{objects:>9,} " + " ".join(cells))


if __name__ == "__main__":
    main()
