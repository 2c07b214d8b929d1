"""A learnable synthetic task, a tiny teacher fine-tuned on it, and its HSK store.

Label 1 iff a marker word occurs, so a teacher learns it in a few dozen steps
and its logits carry the label: a student distilled from them must beat chance.
Built once per test session (cached under pytest's base temp folder) and
shared by the trainer and CLI tests.
"""
from __future__ import annotations

import json
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import POSITIVE, WORDS, make_teacher, write_csv
from hskcache.storage import layout
from hskcache.cli.main import main as hskcache_main
from hskcache.data import tokenize_batch

MARKERS = ("great", "brilliant")
NEUTRAL = [w for w in WORDS if w not in POSITIVE and w != "not"]
MAX_LEN = 16
TEACHER_LAYERS = 4
STUDENT_LAYERS = 2
CHUNK_BYTES = 24_000  # several chunks, so windows matter
LABEL_NAMES = ("rotten", "fresh")  # class 0, class 1: carried from the teacher to the store and the students
STORE_FLAGS = ("--student-layers", STUDENT_LAYERS, "--tokens", 8, "--width", 0.5, "--max-length", MAX_LEN)


@dataclass(frozen=True)
class TinyTask:
    teacher: Path
    train: Path
    dev: Path
    store: Path


def task_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(NEUTRAL, k=rng.randint(3, 10))
        if i % 2:
            words.insert(rng.randrange(len(words) + 1), rng.choice(MARKERS))
        rows.append({"sentence": " ".join(words), "label": i % 2})
    rng.shuffle(rows)
    return rows


def finetune(folder: Path, rows: list[dict], steps: int = 50) -> None:
    """Plain supervised fine-tuning of the tiny teacher, in place."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    enc = tokenize_batch(tokenizer, [r["sentence"] for r in rows], None, MAX_LEN)
    inputs = {k: torch.from_numpy(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    labels = torch.tensor([r["label"] for r in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on shared cores: more threads only contend
    for _ in range(steps):
        batch = torch.randint(0, len(labels), (32,), generator=generator)
        loss = model(**{k: v[batch] for k, v in inputs.items()}, labels=labels[batch]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    torch.set_num_threads(threads)
    model.save_pretrained(folder)


def extract(teacher: Path, data: Path, out: Path, *extra) -> Path:
    args = ["extract", "--teacher", str(teacher), "--data", str(data), "--store", str(out), "--batch-size", "32",
            "--quiet", *map(str, STORE_FLAGS), *map(str, extra)]
    with mock.patch.object(layout, "CHUNK_TARGET_BYTES", CHUNK_BYTES):
        assert hskcache_main(args) == 0
    return out


def teacher_accuracy(teacher: Path, rows: list[dict]) -> float:
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    model = AutoModelForSequenceClassification.from_pretrained(teacher).eval()
    enc = tokenize_batch(tokenizer, [r["sentence"] for r in rows], None, MAX_LEN)
    with torch.no_grad():
        logits = model(**{k: torch.from_numpy(v) for k, v in enc.items() if k != "sep_mask"}).logits
    return float((logits.argmax(-1).numpy() == np.array([r["label"] for r in rows])).mean())


def tiny_task(tmp_path_factory) -> TinyTask:
    root = tmp_path_factory.getbasetemp() / "tiny-task"
    task = TinyTask(root / "teacher", root / "train.csv", root / "dev.csv", root / "store")
    if (root / "done").exists():
        return task
    root.mkdir(exist_ok=True)
    train_rows, dev_rows = task_rows(256, 0), task_rows(64, 1)
    write_csv(task.train, train_rows)
    write_csv(task.dev, dev_rows)
    make_teacher(task.teacher, layers=TEACHER_LAYERS, label_names=LABEL_NAMES)
    finetune(task.teacher, train_rows)
    accuracy = teacher_accuracy(task.teacher, dev_rows)
    assert accuracy >= 0.9, f"the tiny teacher did not learn the task ({accuracy})"
    extract(task.teacher, task.train, task.store)
    (root / "done").write_text(json.dumps({"teacher_dev_accuracy": accuracy}))
    return task


class Interrupting:
    """The store, but Ctrl-C arrives while the `at`-th batch is being trained on."""

    def __init__(self, store, at: int) -> None:
        self._store, self._left = store, at

    def __getattr__(self, name):
        return getattr(self._store, name)

    def batches(self, *args, **kwargs):
        for batch in self._store.batches(*args, **kwargs):
            self._left -= 1
            if self._left == 0:
                os.kill(os.getpid(), signal.SIGINT)
            yield batch
