"""Shared fixtures: a tiny random BERT teacher and a small labeled dataset."""
from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

WORDS = ("the a movie film plot actor great good bad awful boring fun dull brilliant slow fast story "
         "was is not very quite really and but with of to in it this that one two end").split()

SENTENCES = [
    "the movie was great",
    "a boring film",
    "this story is not very good but the actor was brilliant",
    "awful",
    "really fun and fast",
    "the plot was slow and the end was dull",
    "a great story with a brilliant actor",
    "it is bad",
    "one two one two one two one two one two one two one two one two one two one two one two",
    "quite good",
    "that film was not fun",
    "the actor in this movie was awful and the story was boring",
] * 3
PAIRS = [(s, SENTENCES[(i + 5) % len(SENTENCES)]) for i, s in enumerate(SENTENCES)]
POSITIVE = {"great", "good", "fun", "brilliant", "fast"}


def label_of(text: str) -> int:
    return int(any(w in POSITIVE for w in text.split()) and "not" not in text.split())


def make_tokenizer(folder: Path) -> BertTokenizerFast:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab=str(folder / "vocab.txt"))


def make_teacher(folder: Path, num_labels: int = 2, layers: int = 2, seed: int = 0,
                 label_names: tuple[str, ...] | None = None) -> Path:
    """A tiny random BERT classifier saved like a fine-tuned teacher (with class names if given)."""
    tok = make_tokenizer(folder)
    torch.manual_seed(seed)
    names = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}} \
        if label_names else {}
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=num_labels, **names)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


ENCODER_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "great", "awful", "film", "the"]


@pytest.fixture
def tiny_encoder(tmp_path) -> Path:
    """A tiny random BERT encoder without a classification head (32 positions): what
    `hskcache finetune --teacher` starts from."""
    (tmp_path / "vocab.txt").write_text("\n".join(ENCODER_VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(ENCODER_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    out = tmp_path / "tiny-encoder"
    BertForSequenceClassification(config).bert.save_pretrained(out)  # encoder only, no head
    tokenizer.save_pretrained(out)
    return out


def movie_csv(path: Path, n: int, flipped: int = 0) -> str:
    """`n` reviews whose label says whether they hold a positive word (trivially learnable),
    as fresh/rotten; the first `flipped` rows carry the wrong label (a dev set no model gets all right)."""
    positive, negative = ["the good film", "great film", "good"], ["the bad film", "awful film", "bad"]
    rows = [{"sentence": positive[i % 3], "label": "fresh"} if i % 2 else {"sentence": negative[i % 3], "label": "rotten"}
            for i in range(n)]
    for row in rows[:flipped]:
        row["label"] = "rotten" if row["label"] == "fresh" else "fresh"
    return str(write_csv(path, rows))


CUDA = torch.cuda.is_available()
IS_AVAILABLE = torch.cuda.is_available  # the real check, for the cuda cases


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "cuda: the test's CUDA case (skipped without a GPU; tools/gpu_check.sh runs them)")


@pytest.fixture(scope="session", autouse=True)
def cpu_unless_a_cuda_case():
    """Outside the cuda cases `--device auto` means the CPU, so a GPU machine runs the CPU suite as a CPU machine
    does (its fp32 references, thread pinning and bit-identity checks included)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        yield


DEVICES = ["cpu", pytest.param("cuda", marks=(pytest.mark.cuda,
                                              pytest.mark.skipif(not CUDA, reason="no CUDA device")))]


@contextlib.contextmanager
def on_device(device: str) -> Iterator[str]:
    """Within it a cuda case sees the real `torch.cuda.is_available`, a cpu case (or a session fixture built while a
    cuda case runs) sees False, as everything outside the cuda cases does."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", IS_AVAILABLE if device == "cuda" else lambda: False)
        yield device


@pytest.fixture(params=DEVICES)
def device(request) -> Iterator[str]:
    """Every test that runs a model takes `device` (a torch device name): its cpu case runs everywhere, its cuda case
    is collected always and skipped without a GPU, so a CPU run costs what it did and `-m cuda` selects the GPU cases.
    A module-scoped fixture that runs a model takes `params=DEVICES` and builds under `on_device(request.param)`."""
    with on_device(request.param) as name:
        yield name


def require_gpus(device: str, count: int) -> None:
    """Skip a cuda case that needs more GPUs than the machine has (nccl DDP: one GPU per rank)."""
    if device == "cuda" and torch.cuda.device_count() < count:
        pytest.skip(f"needs {count} CUDA devices, found {torch.cuda.device_count()}")


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    return make_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="session")
def single_csv(tmp_path_factory) -> Path:
    rows = [{"sentence": s, "label": label_of(s)} for s in SENTENCES]
    return write_csv(tmp_path_factory.mktemp("data") / "single.csv", rows)


@pytest.fixture(scope="session")
def pair_csv(tmp_path_factory) -> Path:
    rows = [{"sentence1": a, "sentence2": b, "label": label_of(a)} for a, b in PAIRS]
    return write_csv(tmp_path_factory.mktemp("data") / "pairs.csv", rows)


@pytest.fixture(scope="session")
def task(tmp_path_factory):
    """The learnable synthetic task, its fine-tuned tiny teacher and store (tests/tiny_task.py)."""
    from tiny_task import tiny_task

    with on_device("cpu"):  # its store is the CPU's even when a cuda case asks for it first (`-m cuda`)
        return tiny_task(tmp_path_factory)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's standalone S3 server on 127.0.0.1 for the session (tests/s3_server.py);
    the environment points botocore/s3fs at it while it runs."""
    from s3_server import moto_server, s3_environment

    with moto_server() as endpoint:
        saved = dict(os.environ)
        os.environ.update(s3_environment(endpoint))
        try:
            yield endpoint
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture
def s3_bucket(s3_endpoint, request) -> str:
    """A new, empty bucket on the moto server, as an s3:// URL."""
    import re

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + "-" + os.urandom(3).hex()
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"
