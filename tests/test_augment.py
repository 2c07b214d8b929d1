"""`hskcache augment`: candidates against a brute-force cosine search, the file's layout, and
augmented or unlabeled rows extracted with the teacher's logits and unknown labels."""

import errno

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

import hskcache
from conftest import SENTENCES, label_of, write_csv
from hskcache.teacher.augment import embedding_neighbours, has_mlm_head, split_words, whole_words
from hskcache.cli.main import main as hskcache_main

PER_EXAMPLE = 3


def test_neighbours_match_a_brute_force_cosine_search():
    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(40, 6, generator=g)
    allowed = np.ones(40, dtype=bool)
    allowed[[3, 7, 11]] = False
    words = np.array([0, 5, 7, 39])
    got = embedding_neighbours(embeddings, words, allowed, k=4, chunk=3)
    for w in words:
        sims = []
        for j in range(40):
            if allowed[j] and j != w:
                a, b = embeddings[w].tolist(), embeddings[j].tolist()
                dot = sum(x * y for x, y in zip(a, b))
                norm = sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5
                sims.append((dot / norm, j))
        assert list(got[int(w)]) == [j for _, j in sorted(sims, reverse=True)[:4]]


@pytest.fixture(scope="module")
def augmented(teacher_dir, single_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("aug") / "train-aug.csv"
    assert hskcache_main(["augment", "--teacher", str(teacher_dir), "--data", str(single_csv), "--out", str(out),
                          "--per-example", str(PER_EXAMPLE), "--seed", "1", "--candidates", "3", "--quiet"]) == 0
    return out


def test_originals_first_then_marked_copies_with_empty_labels(augmented, teacher_dir):
    frame = pd.read_csv(augmented)
    n = len(SENTENCES)
    assert len(frame) == n * (1 + PER_EXAMPLE)
    assert frame["sentence"][:n].tolist() == SENTENCES
    assert frame["label"][:n].tolist() == [label_of(s) for s in SENTENCES]
    assert frame["augmented"].tolist() == [0] * n + [1] * (n * PER_EXAMPLE)
    assert frame["label"][n:].isna().all()
    # Every changed word is one of its 3 nearest whole-word neighbours in the teacher's input embeddings.
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    embeddings = hskcache_teacher_embeddings(teacher_dir)
    allowed = whole_words(tokenizer)
    vocab = tokenizer.get_vocab()
    changed = 0
    for i, text in enumerate(frame["sentence"][n:]):
        original = split_words(tokenizer, SENTENCES[i // PER_EXAMPLE])
        words = split_words(tokenizer, text)
        assert len(words) == len(original)
        for old, new in zip(original, words):
            if old != new:
                changed += 1
                near = embedding_neighbours(embeddings, np.array([vocab[old]]), allowed, k=3)[vocab[old]]
                assert vocab[new] in near
    assert changed > 0


def hskcache_teacher_embeddings(folder):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder).get_input_embeddings().weight.detach()


def test_augmented_rows_get_teacher_logits_and_unknown_labels(augmented, teacher_dir, tmp_path, device):
    assert hskcache_main(["extract", "--teacher", str(teacher_dir), "--data", str(augmented), "--store",
                          str(tmp_path / "store"), "--student-layers", "1", "--tokens", "4", "--max-length", "32",
                          "--quiet", "--device", device]) == 0
    store = hskcache.open_store(tmp_path / "store")
    n = len(SENTENCES)
    batch = store.get(np.arange(store.num_examples), depth=1, tokens=1)
    assert batch["labels"][:n].tolist() == [label_of(s) for s in SENTENCES]
    assert (batch["labels"][n:] == -1).all()
    assert torch.isfinite(batch["logits"]).all()


def test_unlabeled_text_is_a_transfer_set(teacher_dir, tmp_path, device):
    data = write_csv(tmp_path / "unlabeled.csv", [{"text": s} for s in SENTENCES[:12]])
    assert hskcache_main(["extract", "--teacher", str(teacher_dir), "--data", str(data), "--store",
                          str(tmp_path / "store"), "--student-layers", "1", "--max-length", "32", "--quiet",
                          "--device", device]) == 0
    batch = hskcache.open_store(tmp_path / "store").get(np.arange(12), depth=1, tokens=1)
    assert (batch["labels"] == -1).all() and torch.isfinite(batch["logits"]).all()
    out = tmp_path / "aug.jsonl"
    assert hskcache_main(["augment", "--teacher", str(teacher_dir), "--data", str(data), "--out", str(out),
                          "--per-example", "1", "--quiet"]) == 0
    frame = pd.read_json(out, lines=True)
    assert list(frame.columns) == ["text", "augmented"] and len(frame) == 24


def test_mlm_head_is_detected(teacher_dir, tmp_path):
    assert not has_mlm_head(teacher_dir)  # a fine-tuned classifier has no trained MLM head
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    mlm = tmp_path / "mlm"
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64)).save_pretrained(mlm)
    tokenizer.save_pretrained(mlm)
    assert has_mlm_head(mlm)


@pytest.mark.parametrize(("flags", "message"), [
    (["--per-example", "0"], "--per-example must be at least 1"),
    (["--out", "x.txt"], "must end in"),
])
def test_bad_flags(teacher_dir, single_csv, tmp_path, capsys, flags, message):
    argv = ["augment", "--teacher", str(teacher_dir), "--data", str(single_csv), "--out", str(tmp_path / "a.csv")]
    assert hskcache_main(argv + flags) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a.csv").exists()


def test_a_full_disk_half_way_is_one_line_and_leaves_the_old_file_or_none(teacher_dir, single_csv, tmp_path,
                                                                          monkeypatch, capsys):
    """The transfer set is written whole or not at all: a writer that meets a full disk half-way leaves no --out
    and no sibling (under --overwrite, the old file as it was), and says so in one line, exit 2."""
    from hskcache.teacher import augment

    def half_then_full(frame, path):
        frame.iloc[: len(frame) // 2].to_csv(path, index=False)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    out = tmp_path / "aug.csv"
    args = ["augment", "--teacher", str(teacher_dir), "--data", str(single_csv), "--out", str(out),
            "--per-example", "1", "--quiet"]
    line = (f"hskcache: error: no space left on the device writing {out}.tmp; free space, then rerun the same "
            "command to start again")
    with monkeypatch.context() as patch:
        patch.setitem(augment.WRITERS, ".csv", half_then_full)
        assert hskcache_main(args) == 2
    assert capsys.readouterr().err.splitlines() == [line] and list(tmp_path.iterdir()) == []
    assert hskcache_main(args) == 0
    before = out.read_bytes()
    with monkeypatch.context() as patch:
        patch.setitem(augment.WRITERS, ".csv", half_then_full)
        assert hskcache_main([*args, "--overwrite", "--seed", "1"]) == 2
    assert out.read_bytes() == before and list(tmp_path.iterdir()) == [out]
