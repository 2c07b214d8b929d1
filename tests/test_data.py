"""hskcache.data: local formats, GLUE defaults (hub mocked), errors, tokenization."""

import json

import datasets
import numpy as np
import pandas as pd
import pytest
from transformers import BertTokenizerFast

from hskcache import data as hdata
from hskcache.data import TextData, fingerprint, load_texts, tokenize_batch
from hskcache.errors import UserError

ROWS = {"sentence": ["a good film", "a bad film", 'say "hi" twice'], "label": [1, 0, 1]}


def _write(path, frame: pd.DataFrame) -> str:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t", quoting=3)
    elif suffix == ".json":
        path.write_text(json.dumps(frame.to_dict(orient="records")))
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return str(path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_every_local_format(tmp_path, suffix):
    path = _write(tmp_path / f"d{suffix}", pd.DataFrame(ROWS))
    d = load_texts(path, split="whatever")
    assert d.texts_a == ROWS["sentence"] and d.texts_b is None
    assert d.labels.dtype == np.int64 and d.labels.tolist() == [1, 0, 1]
    assert (d.text_cols, d.label_col, d.source, d.task) == (("sentence",), "label", path, None)
    assert not d.is_regression and d.label_names is None and d.num_labels == 2
    assert len(d) == 3


def test_text_column_fallback_unlabeled(tmp_path):
    path = _write(tmp_path / "d.csv", pd.DataFrame({"text": ["x", "y"], "id": [7, 8]}))
    d = load_texts(path)
    assert d.text_cols == ("text",) and d.labels is None and d.label_col is None
    assert d.num_labels is None
    other = _write(tmp_path / "o.csv", pd.DataFrame({"body": ["x"], "label": ["pos"]}))
    assert load_texts(other, text_cols=["body"]).texts_a == ["x"]


def test_text_corpus_one_passage_per_line(tmp_path):
    """A .txt file: column `text`, one row per non-blank line, in order, as written; `unlabeled` reads no labels."""
    path = tmp_path / "corpus.txt"
    path.write_text("the first passage\n\n  \n\tsecond,  as written \nthird\n")
    d = load_texts(str(path))
    assert d.texts_a == ["the first passage", "\tsecond,  as written ", "third"]
    assert d.text_cols == ("text",) and d.labels is None and d.texts_b is None
    labelled = _write(tmp_path / "l.csv", pd.DataFrame({"sentence": ["x", "y"], "label": [0, 1]}))
    assert load_texts(labelled, unlabeled=True).labels is None and load_texts(labelled).labels.tolist() == [0, 1]


def test_pairs_and_explicit_columns(tmp_path):
    frame = pd.DataFrame({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "y": [0, 2]})
    path = _write(tmp_path / "p.jsonl", frame)
    d = load_texts(path)
    assert d.text_cols == ("sentence1", "sentence2") and d.texts_b == ["c", "d"]
    assert d.labels is None
    d = load_texts(path, text_cols=["sentence2", "sentence1"], label_col="y")
    assert d.texts_a == ["c", "d"] and d.texts_b == ["a", "b"]
    assert d.labels.tolist() == [0, 2] and d.num_labels == 3


def test_string_labels_sorted_and_fixed_order(tmp_path):
    path = _write(tmp_path / "s.csv", pd.DataFrame({"text": ["p", "q", "r"], "label": ["rotten", "fresh", "rotten"]}))
    d = load_texts(path)
    assert d.label_names == ("fresh", "rotten") and d.labels.tolist() == [1, 0, 1]
    d = load_texts(path, label_names=["rotten", "fresh"])
    assert d.label_names == ("rotten", "fresh") and d.labels.tolist() == [0, 1, 0]
    with pytest.raises(UserError, match="outside the expected"):
        load_texts(path, label_names=["rotten"])


def test_regression_and_integral_floats(tmp_path):
    frame = pd.DataFrame({"sentence": ["a", "b"], "label": [0.5, 3.0]})
    d = load_texts(_write(tmp_path / "r.parquet", frame))
    assert d.is_regression and d.labels.dtype == np.float32 and d.num_labels == 1
    frame["label"] = [1.0, 0.0]
    d = load_texts(_write(tmp_path / "c.parquet", frame))
    assert not d.is_regression and d.labels.dtype == np.int64


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (lambda p: str(p / "missing.csv"), {}, "does not exist"),
        (lambda p: _touch(p / "d.xml", "x"), {}, "unsupported data"),
        (lambda p: _touch(p / "blank.txt", "\n \n"), {}, "no passages"),
        (lambda p: _touch(p / "e.csv", ""), {}, "is empty"),
        (lambda p: _touch(p / "h.csv", "sentence,label\n"), {}, "could not read"),
        (lambda p: _write(p / "d.csv", pd.DataFrame(ROWS)), {"text_cols": ["review"]}, "no column 'review'; available: sentence, label"),
        (lambda p: _write(p / "d.csv", pd.DataFrame(ROWS)), {"label_col": "y"}, "no column 'y'"),
        (lambda p: _write(p / "d.csv", pd.DataFrame({"body": ["a"]})), {}, "from: body"),
        (lambda p: _write(p / "d.csv", pd.DataFrame({"sentence": ["a", None]})), {}, "'sentence' .* at row 1"),
        (lambda p: _write(p / "d.jsonl", pd.DataFrame({"sentence": [1, 2]})), {}, "non-string value 1 at row 0"),
        (lambda p: _touch(p / "latin.csv", "sentence,label\ncaf\xe9,1\n".encode("latin-1")), {}, "not UTF-8 .* 0xe9"),
        (lambda p: _touch(p / "bad.parquet", "not a parquet file"), {}, "could not read .* as parquet"),
        (lambda p: _write(p / "d.csv", pd.DataFrame(ROWS)), {"text_cols": ["sentence"] * 3}, "3 text columns"),
        (lambda p: _write(p / "d.csv", pd.DataFrame({"sentence": ["a"], "label": [-1]})), {}, "negative class"),
    ],
)
def test_errors(tmp_path, make, kwargs, match):
    with pytest.raises(UserError, match=match):
        load_texts(make(tmp_path), **kwargs)


def _touch(path, text: str | bytes) -> str:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_a_text_column_of_digits_is_text_as_written(tmp_path, suffix):
    """A CSV is text: digits in a text column stay the characters written (leading zeros and all),
    while the label column keeps its numbers."""
    sep = "," if suffix == ".csv" else "\t"
    path = _touch(tmp_path / f"d{suffix}", f"sentence{sep}label\n007{sep}1\n12{sep}0\n3.50{sep}1\n")
    d = load_texts(path)
    assert d.texts_a == ["007", "12", "3.50"]
    assert d.labels.tolist() == [1, 0, 1] and d.labels.dtype == np.int64


def _fake_glue(monkeypatch, columns: dict, features: datasets.Features | None = None):
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict(columns, features=features)

    monkeypatch.setattr(hdata.datasets, "load_dataset", load_dataset)
    return calls


def test_glue_single_sentence(monkeypatch):
    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
            "idx": datasets.Value("int32"),
        }
    )
    calls = _fake_glue(monkeypatch, {"sentence": ["x", "y"], "label": [0, 1], "idx": [0, 1]}, features)
    d = load_texts("glue/sst2", split="validation")
    assert calls == [(("nyu-mll/glue", "sst2"), {"split": "validation"})]
    assert d.task == "sst2" and d.text_cols == ("sentence",) and d.texts_b is None
    assert d.label_names == ("negative", "positive") and d.labels.tolist() == [0, 1]


def test_glue_mnli_split_mapping_and_pairs(monkeypatch):
    cols = {"premise": ["p"], "hypothesis": ["h"], "label": [2], "idx": [0]}
    calls = _fake_glue(monkeypatch, cols)
    d = load_texts("glue/mnli", split="validation")
    assert d.split == "validation_matched" and d.texts_b == ["h"]
    load_texts("glue/mnli", split="test")
    load_texts("glue/mnli", split="validation_mismatched")
    assert [c[1]["split"] for c in calls] == ["validation_matched", "test_matched", "validation_mismatched"]
    with pytest.raises(UserError, match="no split 'dev'"):
        load_texts("glue/mnli", split="dev")


def test_glue_stsb_regression_and_unlabeled_test(monkeypatch):
    _fake_glue(monkeypatch, {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [3.8, 1.0], "idx": [0, 1]})
    d = load_texts("glue/stsb", split="train")
    assert d.is_regression and d.labels.dtype == np.float32
    _fake_glue(monkeypatch, {"sentence1": ["a"], "sentence2": ["c"], "label": [-1.0], "idx": [0]})
    d = load_texts("glue/stsb", split="test")
    assert d.labels is None and d.label_col is None and d.is_regression


@pytest.mark.parametrize("task, cols", [(t, c) for t, c in hdata.GLUE_TEXT_COLS.items()])
def test_glue_default_columns(monkeypatch, task, cols):
    calls = _fake_glue(monkeypatch, {**{c: ["t"] for c in cols}, "label": [0], "idx": [0]})
    d = load_texts(f"glue/{task}")
    assert calls[0][0] == ("nyu-mll/glue", task) and d.text_cols == cols


def test_glue_unknown_task():
    with pytest.raises(UserError, match="unknown GLUE task 'glue/imdb'"):
        load_texts("glue/imdb")


def _data(texts_a, texts_b=None, labels=None) -> TextData:
    return TextData(texts_a, texts_b, labels, ("a",), None, "x", "train", None, False)


def test_fingerprint_stable_and_sensitive():
    base = fingerprint(_data(["ab", "c"], labels=np.array([0, 1])))
    assert base == fingerprint(_data(["ab", "c"], labels=np.array([0, 1])))
    others = [
        _data(["c", "ab"], labels=np.array([0, 1])),
        _data(["a", "bc"], labels=np.array([0, 1])),
        _data(["ab", "c"], labels=np.array([1, 0])),
        _data(["ab", "c"]),
        _data(["ab", "c"], ["", ""], np.array([0, 1])),
    ]
    assert len({base, *map(fingerprint, others)}) == 6


@pytest.fixture
def tokenizer(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film", "very"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 ignores vocab_file= in the constructor; vocab= takes the path.
    tok = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    tok.padding_side = "left"  # tokenize_batch must still pad right
    return tok


def test_tokenize_single(tokenizer):
    out = tokenize_batch(tokenizer, ["a good film", "bad"], None, max_length=6)
    assert out["input_ids"].tolist() == [[2, 5, 6, 8, 3, 0], [2, 7, 3, 0, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]
    assert out["sep_mask"].tolist() == [[False] * 4 + [True, False], [False, False, True] + [False] * 3]
    assert {k: v.dtype for k, v in out.items()} == {
        "input_ids": np.int64, "attention_mask": np.int64, "token_type_ids": np.int64, "sep_mask": np.bool_,
    }
    assert not out["token_type_ids"].any()


def test_tokenize_pairs_truncate_longest_first(tokenizer):
    out = tokenize_batch(tokenizer, ["a very very very good film"], ["bad film"], max_length=8)
    assert out["input_ids"].tolist() == [[2, 5, 9, 9, 3, 7, 8, 3]]
    assert out["token_type_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]
    assert out["sep_mask"][0].nonzero()[0].tolist() == [4, 7]


def test_tokenize_without_token_type_ids(tokenizer):
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    out = tokenize_batch(tokenizer, ["good"], None, max_length=4)
    assert out["token_type_ids"].tolist() == [[0, 0, 0, 0]]
