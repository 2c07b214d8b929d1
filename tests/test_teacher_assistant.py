"""Teacher assistant (MiniLM §3.3): teacher -> store -> assistant -> store -> student, all by command line."""
from __future__ import annotations

import csv

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

import hskcache
from hskcache.data import tokenize_batch
from hskcache.teacher.loading import load_teacher
from students import cli as students_cli
from tiny_task import MAX_LEN, extract


def test_trained_student_is_a_teacher(task, tmp_path, device):
    """Built, trained and extracted on `device` (the store in fp32, checked against a CPU forward)."""
    assistant, student, on = tmp_path / "assistant", tmp_path / "student", ["--device", device]
    # 1. the assistant: the teacher's store (2 student layers) distilled into a narrower 2-layer BERT
    assert students_cli.main(["build", "tinybert", "--teacher", str(task.teacher), "--init", "random", "--layers", "2", "--hidden", "24",
                              "--ffn", "48", "--heads", "4", "--out", str(tmp_path / "a0"), *on]) == 0
    assert students_cli.main(["train", "--store", str(task.store), "--student", str(tmp_path / "a0"),
                              "--out", str(assistant), "--max-steps", "3", "--threads", "1", "--quiet", *on]) == 0
    # 2. the assistant's own store, extracted from the trained student folder as is
    store_dir = extract(assistant / "student", task.train, tmp_path / "assistant-store", "--student-layers", 1, *on,
                        "--dtype", "fp32")
    # 3. the final student distils from the assistant's store
    assert students_cli.main(["build", "tinybert", "--teacher", str(assistant / "student"), "--init", "random", "--layers", "1",
                              "--hidden", "16", "--ffn", "32", "--heads", "2", "--out", str(tmp_path / "s0"), *on]) == 0
    assert students_cli.main(["train", "--store", str(store_dir), "--student", str(tmp_path / "s0"),
                              "--out", str(student), "--max-steps", "3", "--threads", "1", "--quiet", *on]) == 0
    assert (student / "student" / "config.json").is_file()

    store = hskcache.open_store(store_dir)
    loaded = load_teacher(str(assistant / "student"), "cpu")
    assert store.meta.teacher_hash == loaded.weights_hash  # the store was written by the assistant
    # its logits are the assistant's own outputs (an independent plain forward), not the teacher's
    model = AutoModelForSequenceClassification.from_pretrained(assistant / "student").eval()
    rows = store.get(list(range(8)), depth=1, tokens=1)
    with open(task.train) as f:
        texts = [r["sentence"] for r in csv.DictReader(f)][:8]
    enc = tokenize_batch(loaded.tokenizer, texts, None, MAX_LEN)
    with torch.no_grad():
        logits = model(**{k: torch.from_numpy(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    assert np.allclose(rows["logits"].numpy(), logits.numpy(), atol=1e-5)
