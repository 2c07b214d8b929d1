"""`students build / train / eval` end to end, without the teacher at train time, and bad input."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import zarr
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BertTokenizerFast

import hskcache
from hskcache.storage import layout
from hskcache.teacher.config import build_config
from students import cli
from students.models.student import load_student
from students.models.rosita import RositaForSequenceClassification
from students.training.online import OnlineSource
from tiny_task import CHUNK_BYTES, LABEL_NAMES, STORE_FLAGS, Interrupting, extract
from students.training.sources import SourceSettings

TRAIN = ("--hsk-epochs", "2", "--pred-epochs", "3", "--hsk-lr", "3e-3", "--pred-lr", "3e-3", "--hsk-batch-size", "16",
         "--pred-batch-size", "16", "--threads", "1", "--quiet", "--select-on", "last")  # every row trained on


@pytest.fixture(scope="module")
def student(task, tmp_path_factory):
    out = tmp_path_factory.mktemp("students") / "tiny"
    assert cli.main(["build", "tinybert", "--init", "random", "--teacher", str(task.teacher), "--layers", "2", "--hidden", "16",
                     "--ffn", "32", "--heads", "2", "--out", str(out)]) == 0
    return out


def test_extract_build_train_eval_without_the_teacher(task, tmp_path, capsys, device):
    teacher = tmp_path / "teacher"
    shutil.copytree(task.teacher, teacher)
    on = ["--device", device]
    store = extract(teacher, task.train, tmp_path / "store", *on)
    assert cli.main(["build", "tinybert", "--init", "random", "--teacher", str(teacher), "--layers", "2", "--hidden", "16", "--ffn", "32",
                     "--heads", "2", "--out", str(tmp_path / "tiny"), *on]) == 0
    assert cli.main(["build", "rosita", "--teacher", str(teacher), "--store", str(store), "--layers", "2",
                     "--heads", "2", "--ffn", "32", "--emb-rank", "8", "--importance-examples", "64",
                     "--threads", "1", "--out", str(tmp_path / "rosita"), *on]) == 0
    shutil.rmtree(teacher)  # from here on nothing may need it

    for kind, hsk in (("tiny", "stored"), ("rosita", "2,4,0.25")):
        run = tmp_path / f"run-{kind}"
        assert cli.main(["train", "--store", str(store), "--student", str(tmp_path / kind), "--out", str(run),
                         "--hsk", hsk, "--eval-data", str(task.dev), *TRAIN, *on]) == 0
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["eval"]["accuracy"] >= 0.85  # chance is 0.5
        capsys.readouterr()
        assert cli.main(["eval", "--model", str(run / "student"), "--data", str(task.dev), "--json", *on]) == 0
        assert json.loads(capsys.readouterr().out) == pytest.approx(metrics["eval"])
        assert {r["stage"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())} == {"hsk", "pred"}
    # The task a student was distilled for picks its metrics on a local file (cola: MCC).
    info_file = tmp_path / "run-tiny" / "student" / "student.json"
    info = json.loads(info_file.read_text())
    assert "task" in info
    info_file.write_text(json.dumps(info | {"task": "cola"}))
    assert cli.main(["eval", "--model", str(tmp_path / "run-tiny" / "student"), "--data", str(task.dev), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"accuracy", "mcc"}
    assert type(AutoModelForSequenceClassification.from_pretrained(tmp_path / "run-tiny" / "student")).__name__ \
        == "BertForSequenceClassification"
    assert isinstance(load_student(tmp_path / "run-rosita" / "student"), RositaForSequenceClassification)
    # The class names travel teacher → store → student: the exported models say "fresh", not LABEL_1.
    assert hskcache.open_store(store).meta.label_names == tuple(LABEL_NAMES)
    for kind in ("tiny", "rosita"):
        config = AutoConfig.from_pretrained(tmp_path / f"run-{kind}" / "student")
        assert config.id2label == {0: "rotten", 1: "fresh"} and config.label2id == {"rotten": 0, "fresh": 1}


def test_ctrl_c_then_resume(task, student, tmp_path, monkeypatch, capsys, device):
    store = hskcache.open_store(task.store)
    args = ["train", "--store", str(task.store), "--student", str(student), "--out", str(tmp_path / "run"),
            "--max-steps", "6", "--hsk-epochs", "1", "--pred-epochs", "1", "--threads", "1", "--quiet",
            "--device", device]
    monkeypatch.setattr(SourceSettings, "open", lambda self, cfg: Interrupting(store, 3))
    assert cli.main(args) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["students: interrupted; rerun with --resume"]
    monkeypatch.undo()
    assert cli.main(args) == 2  # the folder holds a run: refuse to clobber it
    assert "--resume" in capsys.readouterr().err
    assert cli.main(args + ["--resume", "--max-steps", "5"]) == 2
    assert "max_steps" in capsys.readouterr().err
    assert cli.main(args + ["--resume"]) == 0
    steps = [record["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
             if "loss" in (record := json.loads(line))]
    assert steps == [6, 6]  # one record per stage (at its last step), none duplicated by the resume


def incomplete_store(task, tmp_path):
    path = tmp_path / "partial"
    shutil.copytree(task.store, path)
    zarr.open_group(str(path), mode="r+").attrs["complete"] = False
    return path


def foreign_vocabulary(student, tmp_path):
    """The same student with one vocabulary entry renamed."""
    path = tmp_path / "foreign"
    shutil.copytree(student, path)
    vocab = sorted(AutoTokenizer.from_pretrained(path).get_vocab().items(), key=lambda kv: kv[1])
    (tmp_path / "vocab.txt").write_text("\n".join(["zebra" if w == "movie" else w for w, _ in vocab]) + "\n")
    BertTokenizerFast(vocab=str(tmp_path / "vocab.txt")).save_pretrained(path)
    return path


def deeper_student(task, tmp_path):
    assert cli.main(["build", "tinybert", "--init", "random", "--teacher", str(task.teacher), "--layers", "3", "--hidden", "16",
                     "--ffn", "32", "--heads", "2", "--out", str(tmp_path / "deep")]) == 0
    return tmp_path / "deep"


@pytest.mark.parametrize(("case", "message"), [
    ("incomplete store", "is incomplete"),
    ("hsk above stored", "--hsk 3,9,0.5: tokens 9 is not available"),
    ("bad hsk", "is malformed: write N^D,N^L,N^W"),
    ("foreign vocabulary", "vocabulary differs from the store's tokenizer"),
    ("student depth", "a 3-layer student reads the top 3 pairs of its map g(l, 4) = 0,1,3,4"),  # stored: 0,2,4
    ("missing eval file", "does not exist"),
    ("eval without labels", "has no column 'label'"),  # the store's label column
    ("no source", "exactly one knowledge source"),
    ("uniform width not a subset", "uniform width 10/32 is not a subset of the stored dimensions"),
    ("online length above positions", "--max-length 100 is above the teacher's 64 positions"),
])
def test_bad_input_is_one_line(task, student, tmp_path, capsys, case, message):
    store, folder, extra = task.store, student, []
    if case == "incomplete store":
        store = incomplete_store(task, tmp_path)
    elif case == "hsk above stored":
        extra = ["--hsk", "3,9,0.5"]
    elif case == "bad hsk":
        extra = ["--hsk", "3,9"]
    elif case == "foreign vocabulary":
        folder = foreign_vocabulary(student, tmp_path)
    elif case == "student depth":
        folder = deeper_student(task, tmp_path)
    elif case == "missing eval file":
        extra = ["--eval-data", str(tmp_path / "nope.csv")]
    elif case == "eval without labels":
        (tmp_path / "unlabeled.csv").write_text("sentence\nthe movie\n")
        extra = ["--eval-data", str(tmp_path / "unlabeled.csv")]
    elif case == "uniform width not a subset":
        store = extract(task.teacher, task.train, tmp_path / "uniform", "--width-strategy", "uniform", "--limit", 40)
        extra = ["--hsk", "1,2,0.3"]  # 10 of 32 evenly spaced dimensions: not among the stored 16
    source = {"no source": [], "online length above positions": [
        "--teacher", str(task.teacher), "--data", str(task.train), "--student-layers", "2", "--max-length", "100"],
    }.get(case, ["--store", str(store)])
    capsys.readouterr()
    assert cli.main(["train", *source, "--student", str(folder), "--out", str(tmp_path / "run"), *extra,
                     "--threads", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("students: error:") and message in err[0], err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_build_presets(task, tmp_path, capsys):
    assert cli.main(["build", "tinybert", "--init", "random", "--teacher", str(task.teacher), "--preset", "tinybert-3s",
                     "--out", str(tmp_path / "s")]) == 0
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["intermediate_size"]) == (3, 192, 4, 768)
    capsys.readouterr()
    assert cli.main(["build", "rosita", "--teacher", str(task.teacher), "--store", str(task.store),
                     "--preset", "tinybert-4", "--out", str(tmp_path / "r")]) == 2
    assert "is a tinybert preset" in capsys.readouterr().err


def test_online_baseline_trains_on_the_same_numbers(task, student, tmp_path, monkeypatch, device):
    """--teacher/--data with the store's extraction flags: same batches, same losses (the teacher on
    `device` in fp32, the store's precision)."""
    monkeypatch.setattr(layout, "CHUNK_TARGET_BYTES", CHUNK_BYTES)  # the store's rows per chunk
    store = hskcache.open_store(task.store)
    flags = dict(zip((f[2:].replace("-", "_") for f in STORE_FLAGS[::2]), STORE_FLAGS[1::2]))
    online = OnlineSource(build_config(
        {**flags, "teacher": str(task.teacher), "data": str(task.train), "batch_size": 32,
         "device": device, "dtype": "fp32"}))
    assert online.meta.identity == store.meta.identity and online.chunk_rows == store.chunk_rows
    read = dict(shuffle=True, seed=3, epoch=2, depth=2, tokens=5, width=0.25, start_batch=3)
    for live, stored in zip(online.batches(16, **read), store.batches(16, **read), strict=True):
        for key in ("input_ids", "attention_mask", "token_type_ids", "labels", "example_id", "positions", "hsk_mask"):
            assert torch.equal(live[key], stored[key]), key
        torch.testing.assert_close(live["hsk"], stored["hsk"], atol=2e-3, rtol=2e-3)  # fp16 rounding of live floats
        torch.testing.assert_close(live["logits"], stored["logits"], atol=1e-5, rtol=1e-5)

    common = ["--student", str(student), "--hsk", "2,6,0.25", "--max-steps", "4", "--log-every", "1", *TRAIN,
              "--device", device, "--dtype", "fp32"]
    assert cli.main(["train", "--store", str(task.store), "--out", str(tmp_path / "offline"), *common]) == 0
    assert cli.main(["train", "--teacher", str(task.teacher), "--data", str(task.train), *map(str, STORE_FLAGS),
                     "--out", str(tmp_path / "online"), *common]) == 0
    offline, live = ([json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
                     for run in ("offline", "online"))
    assert [(r["stage"], r["step"]) for r in live] == [(r["stage"], r["step"]) for r in offline]
    assert len(offline) == 8
    assert [r["loss"] for r in live] == pytest.approx([r["loss"] for r in offline], rel=1e-4)


def test_online_baseline_limit(task, student, tmp_path, device):
    """--limit N: the online teacher runs on the first N examples only (2 batches of 16 per epoch here)."""
    assert cli.main(["train", "--teacher", str(task.teacher), "--data", str(task.train), *map(str, STORE_FLAGS),
                     "--limit", "20", "--student", str(student), "--hsk", "2,6,0.25", "--out", str(tmp_path / "run"),
                     *TRAIN, "--device", device]) == 0
    stages = json.loads((tmp_path / "run" / "metrics.json").read_text())["stages"]
    assert stages["hsk"]["steps"] == 2 * 2 and stages["hsk"]["examples"] == 2 * 20
    assert stages["pred"]["steps"] == 3 * 2 and stages["pred"]["examples"] == 3 * 20


def test_build_refuses_a_length_beyond_the_teachers_positions(task, tmp_path, capsys):
    capsys.readouterr()
    assert cli.main(["build", "tinybert", "--teacher", str(task.teacher), "--data", str(task.train), "--layers", "2",
                     "--hidden", "16", "--ffn", "32", "--max-length", "100", "--out", str(tmp_path / "s")]) == 2
    assert "--max-length 100 is above the teacher's 64 positions" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_eval_runs_on_the_threads_it_is_given(task, student, capsys):
    """`students eval --threads N` is `students train`'s field (`threads_setting`): torch runs on N CPU threads
    (an exported model's onnxruntime session takes as many), with the same metrics; 0 is refused in one line."""
    argv = ["eval", "--model", str(student), "--data", str(task.dev), "--json", "--device", "cpu"]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert cli.main([*argv, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        one = json.loads(capsys.readouterr().out)
        assert cli.main([*argv, "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        assert json.loads(capsys.readouterr().out) == pytest.approx(one)
    finally:
        torch.set_num_threads(before)
    assert cli.main([*argv, "--threads", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == ["students: error: --threads must be at least 1, got 0"]
