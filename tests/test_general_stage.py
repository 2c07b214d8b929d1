"""The general stage end to end (issue 20, items 2 and 3): a bare tiny encoder extracts a general store from
plain text, two student shapes (an ETD-Impt extraction, a random TinyBERT with fewer heads than the teacher)
distil from it with `students train --general`, and a general student then distils from a task store; the
same general run under torchrun (2 gloo ranks) and from an `s3://` copy of the store."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

import hskcache
from conftest import WORDS
from hskcache.cli.main import main as hskcache_main
from helpers import torchrun
from students import cli

MAX_LEN = 16
RELATION_HEADS = 2
EXTRACTION = ["--max-length", str(MAX_LEN), "--teacher-layers", "0,1,2,3,4", "--tokens", "8",
              "--knowledge", "hsk,qq,kk", "--relation-heads", str(RELATION_HEADS)]  # every layer: any student depth
TRAIN = ["--general", "--objective", "hsk,qq,kk", "--hsk-epochs", "2", "--hsk-lr", "3e-3", "--hsk-batch-size", "16",
         "--select-on", "train-holdout:0.25", "--log-every", "1", "--threads", "1", "--quiet"]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def no_dropout(folder: Path) -> Path:
    """Dropout off, so runs in other processes (or ranks) compute the same steps."""
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def world(task, tmp_path_factory):
    """The task teacher's encoder without its head (a general teacher), a plain-text corpus (passages longer
    than a sequence among them) and the general store it extracts: hsk and MiniLMv2's qq/kk relations."""
    root = tmp_path_factory.mktemp("general")
    encoder = root / "encoder"
    AutoModelForSequenceClassification.from_pretrained(task.teacher).bert.save_pretrained(encoder)
    AutoTokenizer.from_pretrained(task.teacher).save_pretrained(encoder)
    rng = random.Random(0)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choices(WORDS, k=rng.randint(4, 30))) for _ in range(60)) + "\n")
    store = root / "store"
    assert hskcache_main(["extract", "--teacher", str(encoder), "--data", str(corpus), "--store", str(store),
                          *EXTRACTION, "--batch-size", "16", "--quiet"]) == 0
    return encoder, corpus, store


def test_two_general_students_then_the_task_stage(task, world, tmp_path, capsys):
    encoder, corpus, store = world
    assert hskcache.open_store(store).meta.general

    # Two shapes from the one store: ETD-Impt of the bare encoder (2 layers, the teacher's 4 heads, the Gaussian
    # importance on the store's rows) and a random TinyBERT of 3 layers and 3 heads (each reads its own layer
    # map; the relations make the head count free).
    assert cli.main(["build", "tinybert", "--teacher", str(encoder), "--store", str(store), "--layers", "2",
                     "--hidden", "16", "--ffn", "32", "--out", str(tmp_path / "etd"), "--threads", "1"]) == 0
    assert cli.main(["build", "tinybert", "--teacher", str(encoder), "--init", "random", "--layers", "3",
                     "--hidden", "24", "--ffn", "32", "--heads", "3", "--out", str(tmp_path / "random")]) == 0
    for name, layers, heads in (("etd", 2, 4), ("random", 3, 3)):
        run = tmp_path / f"{name}-run"
        assert cli.main(["train", "--store", str(store), "--student", str(tmp_path / name), "--out", str(run),
                         *TRAIN]) == 0
        student = AutoModel.from_pretrained(run / "student")
        assert not hasattr(student, "classifier")
        assert (student.config.num_hidden_layers, student.config.num_attention_heads) == (layers, heads)
        held = [r["holdout"]["loss"] for r in records(run) if "holdout" in r]
        metrics = json.loads((run / "metrics.json").read_text())
        assert len(held) == 2 and metrics["best"]["value"] == min(held) and metrics["best"]["metric"] == "loss"
        assert metrics["best"]["epoch"] == 1 + held.index(min(held))

    # A task-stage run on the general store is refused in one line, before the run folder is made.
    capsys.readouterr()
    assert cli.main(["train", "--store", str(store), "--student", str(tmp_path / "etd"), "--out",
                     str(tmp_path / "refused"), "--threads", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass --general" in err and "task store" in err
    assert not (tmp_path / "refused").exists()

    # A general student has no head: eval (and export) refuse it in one line rather than invent one.
    assert cli.main(["eval", "--model", str(tmp_path / "etd-run" / "student"), "--data", str(task.dev)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a bare encoder (a general student)" in err

    # The general student then distils from the task store, passed straight to `students train` (fresh head
    # for the task's 2 labels, said in one line) or built into a task student with --init.
    # Both routes are one: the same encoder, the same head (seed 0), the same default rates (a general-distilled
    # encoder's, LEARNING_RATES["checkpoint"]), so the same run step for step.
    general = tmp_path / "etd-run" / "student"
    assert cli.main(["build", "tinybert", "--teacher", str(task.teacher), "--init", str(general),
                     "--out", str(tmp_path / "task-student")]) == 0
    built = AutoModelForSequenceClassification.from_pretrained(tmp_path / "task-student")
    for key, value in AutoModel.from_pretrained(general).state_dict().items():
        assert "pooler" in key or torch.equal(built.bert.state_dict()[key], value), key  # a bare student has none
    stage = ["--hsk-epochs", "1", "--pred-epochs", "1", "--log-every", "1", "--eval-data", str(task.dev),
             "--threads", "1", "--quiet"]
    capsys.readouterr()
    for student, run in ((general, "task-run"), (tmp_path / "task-student", "built-run")):
        assert cli.main(["train", "--store", str(task.store), "--student", str(student),
                         "--out", str(tmp_path / run), *stage]) == 0
    assert "is a bare encoder (a general student)" in capsys.readouterr().err
    task_student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "task-run" / "student")
    assert task_student.config.num_labels == 2
    passed, built_run = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("task-run", "built-run"))
    from students.training.defaults import LEARNING_RATES
    for metrics in (passed, built_run):
        assert (metrics["config"]["hsk_lr"], metrics["config"]["pred_lr"]) == LEARNING_RATES["checkpoint"]
    want, got = records(tmp_path / "built-run"), records(tmp_path / "task-run")
    assert [(r["stage"], r["step"]) for r in got] == [(r["stage"], r["step"]) for r in want]
    assert [r["loss"] for r in got if "loss" in r] == pytest.approx([r["loss"] for r in want if "loss" in r],
                                                                    rel=1e-4, abs=1e-6)
    assert passed["eval"] == pytest.approx(built_run["eval"], abs=1e-6)


def test_general_stage_under_torchrun_and_from_s3(world, tmp_path, s3_bucket):
    """The general run of 2 gloo ranks, and of one process reading an S3 copy of the store, is the
    one-process run on the local store: the same steps and losses, the same held-out losses (rank 0 alone
    computes them: a collective inside would hang the other rank) and selected epoch, the same student."""
    encoder, _, store = world
    student = tmp_path / "s"
    assert cli.main(["build", "tinybert", "--teacher", str(encoder), "--init", "random", "--layers", "2",
                     "--hidden", "16", "--ffn", "32", "--heads", "2", "--out", str(student)]) == 0
    no_dropout(student)
    flags = [*TRAIN, "--hsk-epochs", "3"]  # train-holdout:0.25, so rank 0 scores the held-out rows
    assert cli.main(["train", "--store", str(store), "--student", str(student), "--out", str(tmp_path / "one"),
                     *flags]) == 0
    done = torchrun(2, "students.cli", "train", "--store", str(store), "--student", str(student),
                    "--out", str(tmp_path / "two"), *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    url = f"{s3_bucket}/general"
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.put(str(store), url[len("s3://"):], recursive=True)
    assert cli.main(["train", "--store", url, "--student", str(student), "--out", str(tmp_path / "s3"), *flags]) == 0
    want = records(tmp_path / "one")
    best = json.loads((tmp_path / "one" / "metrics.json").read_text())["best"]
    assert len([r for r in want if "holdout" in r]) == 3
    for run in ("two", "s3"):
        got = records(tmp_path / run)
        assert [(r["stage"], r["step"]) for r in got] == [(r["stage"], r["step"]) for r in want]
        for losses in (lambda rs: [r["loss"] for r in rs if "loss" in r],  # the steps', then the held-out rows'
                       lambda rs: [r["holdout"]["loss"] for r in rs if "holdout" in r]):
            assert losses(got) == pytest.approx(losses(want), rel=1e-4, abs=1e-6)
        assert json.loads((tmp_path / run / "metrics.json").read_text())["best"]["epoch"] == best["epoch"]
        a, b = (load_file(tmp_path / r / "student" / "model.safetensors") for r in (run, "one"))
        for key in b:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_rosita_refuses_a_bare_encoder_and_a_general_store(task, world, tmp_path, capsys):
    """ROSITA prunes by the KD loss to the stored logits: neither a head-less teacher nor a store without
    logits serves; one line each, nothing written."""
    encoder, _, store = world
    for teacher, message in ((encoder, "is not a fine-tuned sequence classifier"), (task.teacher, "task-agnostic")):
        capsys.readouterr()
        assert cli.main(["build", "rosita", "--teacher", str(teacher), "--store", str(store), "--layers", "2",
                         "--heads", "2", "--ffn", "32", "--emb-rank", "8", "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
        assert not (tmp_path / "r").exists()


def test_general_online_baseline_computes_the_stores_losses(world, tmp_path):
    """`students train --teacher ENCODER --data CORPUS --general`: the bare encoder runs live with the store's
    extraction flags, and the steps' losses are the store run's (the store holds fp16 of the live floats)."""
    encoder, corpus, store = world
    student = tmp_path / "s"
    assert cli.main(["build", "tinybert", "--teacher", str(encoder), "--init", "random", "--layers", "2",
                     "--hidden", "16", "--ffn", "32", "--heads", "2", "--out", str(student)]) == 0
    no_dropout(student)
    flags = ["--student", str(student), *TRAIN, "--select-on", "last", "--max-steps", "3"]
    assert cli.main(["train", "--store", str(store), "--out", str(tmp_path / "offline"), *flags]) == 0
    assert cli.main(["train", "--teacher", str(encoder), "--data", str(corpus), *EXTRACTION,
                     "--out", str(tmp_path / "online"), *flags]) == 0
    offline, online = (records(tmp_path / run) for run in ("offline", "online"))
    assert [r["stage"] for r in offline if "loss" in r] == ["hsk"] * 3
    assert [r.get("loss") for r in online] == pytest.approx([r.get("loss") for r in offline], rel=1e-3)


def test_bare_encoder_data_scores_the_general_stores_rows(world):
    """`students build --data CORPUS` of a bare encoder scores the rows of the general store extracted from that
    corpus at that --max-length: its sequences (passages cut as extraction cuts them), the store's tokens, and
    never a row `--select-on` holds out."""
    from students.build.importance import data_sample
    from students.training.selection import HOLDOUT_SEED, holdout_rows

    encoder, corpus, store_path = world
    store = hskcache.open_store(store_path)
    held = holdout_rows(np.arange(store.num_examples), 0.25, HOLDOUT_SEED)
    batches = data_sample(str(encoder), str(corpus), "train", None, None, MAX_LEN, 10_000, "train-holdout:0.25")
    ids = np.concatenate([b["example_id"].numpy() for b in batches])
    assert store.num_examples > 60  # passages longer than a sequence were cut
    assert sorted(ids) == sorted(set(range(store.num_examples)) - set(held.tolist()))
    for batch in batches:
        stored = store.get(batch["example_id"].numpy())
        width = batch["input_ids"].shape[1]
        assert torch.equal(batch["attention_mask"], stored["attention_mask"][:, :width].to(batch["attention_mask"].dtype))
        assert not stored["attention_mask"][:, width:].any()
        mask = batch["attention_mask"].bool()
        assert torch.equal(batch["input_ids"][mask].long(), stored["input_ids"][:, :width][mask].long())
