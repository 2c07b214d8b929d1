"""`hskcache finetune` end to end on a tiny random BERT encoder (seconds on CPU).

The saved teacher's metrics are checked against a plain Hugging Face forward of the
saved folder and metrics counted by hand here, and against `students eval`.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import movie_csv
from hskcache.cli.main import main as hskcache_main
from students import cli as students_cli
from students.training.finetune import META_FILE

TINY = ["--max-length", "8", "--threads", "1", "--quiet"]


def finetune(*argv: str) -> int:
    return hskcache_main(["finetune", *argv])


def meta_of(folder: Path) -> dict:
    return json.loads((folder / META_FILE).read_text())


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def plain_forward(folder: Path, texts: list[str], max_length: int) -> np.ndarray:
    """Logits of the saved folder from a plain HF forward: the whole set at once, padded to `max_length`."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.numpy()


def test_learns_saves_a_teacher_and_reports_what_students_eval_reports(tmp_path, tiny_encoder, device, capsys):
    out = tmp_path / "teacher"
    dev = movie_csv(tmp_path / "dev.csv", 16, flipped=3)  # 3 wrong labels: a model of the task scores 13/16
    assert finetune("--teacher", str(tiny_encoder), "--data", movie_csv(tmp_path / "train.csv", 64),
                    "--eval-data", dev, "--out", str(out), "--epochs", "4", "--batch-size", "8", "--lr", "1e-2",
                    "--device", device, *TINY) == 0
    meta = meta_of(out)
    assert meta["label_names"] == ["fresh", "rotten"] and meta["num_labels"] == 2
    assert meta["text_cols"] == ["sentence"] and not meta["is_regression"]
    losses = [h["train_loss"] for h in meta["history"]]
    assert len(losses) == 4 and losses[-1] < 0.5 * losses[0]
    assert "saved to" in capsys.readouterr().out

    # Independent: a plain forward of the saved folder and accuracy/F1 counted by hand (class 1 = rotten).
    frame = pd.read_csv(dev)
    gold = (frame["label"] == "rotten").to_numpy().astype(int)
    predicted = plain_forward(out, frame["sentence"].tolist(), 8).argmax(1)
    tp = int(((predicted == 1) & (gold == 1)).sum())
    fp = int(((predicted == 1) & (gold == 0)).sum())
    fn = int(((predicted == 0) & (gold == 1)).sum())
    expected = {"accuracy": float((predicted == gold).mean()), "f1": 2 * tp / (2 * tp + fp + fn)}
    assert meta["dev_metrics"] == pytest.approx(expected)
    assert expected["accuracy"] == 13 / 16  # it learned the task; the flipped rows are what it misses

    assert students_cli.main(["eval", "--model", str(out), "--data", dev, "--max-length", "8", "--json",
                              "--device", device]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(meta["dev_metrics"], abs=1e-6)
    config = AutoModelForSequenceClassification.from_pretrained(out).config
    assert config.num_labels == 2 and config.id2label == {0: "fresh", 1: "rotten"}


def test_regression_reports_pearson_and_spearman(tmp_path, tiny_encoder, device):
    frame = pd.DataFrame({"text": ["good film", "bad film", "the good film", "awful"] * 4,
                          "score": [0.9, 0.1, 0.8, 0.0] * 4})
    frame.to_csv(tmp_path / "r.csv", index=False)
    out = tmp_path / "reg"
    assert finetune("--teacher", str(tiny_encoder), "--data", str(tmp_path / "r.csv"), "--eval-data",
                    str(tmp_path / "r.csv"), "--out", str(out), "--label-col", "score", "--batch-size", "4",
                    "--max-steps", "3", "--device", device, *TINY) == 0
    meta = meta_of(out)
    assert meta["is_regression"] and meta["history"][-1]["step"] == 3 and len(meta["history"]) == 1
    predicted = pd.Series(plain_forward(out, frame["text"].tolist(), 8)[:, 0].astype(np.float64))
    gold = frame["score"]
    expected = {"pearson": predicted.corr(gold), "spearman": predicted.rank().corr(gold.rank())}  # pandas' own
    assert meta["dev_metrics"] == pytest.approx(expected, abs=1e-4)
    assert AutoModelForSequenceClassification.from_pretrained(out).config.num_labels == 1


def test_selection_never_looks_at_the_eval_data(tmp_path, tiny_encoder, device, capsys):
    """The saved epoch is the last one, or the best on held-out training rows; --eval-data is only reported."""
    common = ["--teacher", str(tiny_encoder), "--data", movie_csv(tmp_path / "train.csv", 40), "--eval-data",
              movie_csv(tmp_path / "dev.csv", 8), "--epochs", "3", "--batch-size", "8", "--lr", "1e-2",
              "--device", device, *TINY]
    assert finetune(*common, "--out", str(tmp_path / "last")) == 0
    meta = meta_of(tmp_path / "last")
    assert meta["best_epoch"] == 3 and meta["selected_on"] == "last epoch"
    assert meta["dev_metrics"] == meta["history"][-1]["dev"]

    assert finetune(*common, "--out", str(tmp_path / "held"), "--select-on", "train-holdout:0.25") == 0
    meta = meta_of(tmp_path / "held")
    assert meta["selected_on"] == "10 held-out training rows (accuracy)" and meta["train"]["rows"] == 30
    held = [h["holdout"]["accuracy"] for h in meta["history"]]
    assert meta["best_epoch"] == 1 + held.index(max(held))
    assert meta["dev_metrics"] == meta["history"][meta["best_epoch"] - 1]["dev"]
    capsys.readouterr()
    assert finetune(*common, "--out", str(tmp_path / "bad"), "--select-on", "eval") == 2
    assert "--select-on 'eval' is unknown; use last | train-holdout:FRACTION" in one_line(capsys)
    assert not (tmp_path / "bad").exists()


def test_settings_come_from_a_config_file_and_flags_win(tmp_path, tiny_encoder):
    data = movie_csv(tmp_path / "t.csv", 16)
    toml = tmp_path / "finetune.toml"
    toml.write_text(f'teacher = "{tiny_encoder}"\ndata = "{data}"\neval-data = "{data}"\nout = "{tmp_path / "x"}"\n'
                    'max_steps = 1\nbatch-size = 4\nlabel_names = ["rotten", "fresh"]\nseed = 3\n')
    assert finetune("--config", str(toml), "--out", str(tmp_path / "teacher"), "--seed", "5", *TINY) == 0
    settings = meta_of(tmp_path / "teacher")["settings"]
    assert (settings["out"], settings["seed"], settings["batch_size"], settings["max_steps"]) == \
        (str(tmp_path / "teacher"), 5, 4, 1)
    assert settings["label_names"] == ["rotten", "fresh"] and settings["epochs"] == 3  # the file, the default
    assert not (tmp_path / "x").exists()


def test_bad_input_is_one_line_before_anything_is_written(tmp_path, tiny_encoder, capsys):
    rows = [("the good film", 1), ("the bad film", 0)] * 4
    pd.DataFrame(rows, columns=["sentence", "label"]).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame({"sentence": ["good"]}).to_csv(tmp_path / "u.csv", index=False)
    pd.DataFrame({"sentence": ["good", "bad"], "label": [1, 2]}).to_csv(tmp_path / "three.csv", index=False)
    data, out = str(tmp_path / "t.csv"), str(tmp_path / "o")
    common = ["--teacher", str(tiny_encoder), "--data", data, "--eval-data", data, "--out", out, "--quiet"]
    cases = [
        (["--max-length", "100"], "--max-length 100 is above the teacher's 32 positions"),
        (["--max-length", "1"], "--max-length must be at least 2"),
        (["--label-names", "rotten,fresh,meh"], "--label-names gives 3 names but the training data has 2 classes"),
        (["--device", "cuda"], "--device cuda was asked for but no CUDA device is available"),  # this case sees no GPU
        (["--warmup-frac", "1"], "--warmup-frac must be in [0, 1)"),
        (["--data", str(tmp_path / "u.csv")], "has no labels"),
        (["--eval-data", str(tmp_path / "three.csv")], f"--eval-data {tmp_path / 'three.csv'} has class 2 at row 1"),
        (["--model", str(tiny_encoder)], "unrecognized arguments: --model"),  # the old script's spelling
    ]
    for extra, needle in cases:
        try:
            code = finetune(*common, *extra)
        except SystemExit as exit_:  # a usage error
            code = exit_.code
        assert code == 2 and needle in one_line(capsys), (extra, needle)
    assert not (tmp_path / "o").exists()


def test_label_names_for_integer_labels(tmp_path, tiny_encoder, device):
    """The movie data's labels are 0/1; --label-names puts rotten/fresh into the teacher's config."""
    rows = [("the good film", 1), ("the bad film", 0)] * 4
    pd.DataFrame(rows, columns=["sentence", "label"]).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "teacher"
    assert finetune("--teacher", str(tiny_encoder), "--data", str(tmp_path / "t.csv"), "--eval-data",
                    str(tmp_path / "t.csv"), "--out", str(out), "--label-names", "rotten,fresh", "--epochs", "1",
                    "--device", device, *TINY) == 0
    config = AutoModelForSequenceClassification.from_pretrained(out).config
    assert config.id2label == {0: "rotten", 1: "fresh"} and config.label2id == {"rotten": 0, "fresh": 1}
    assert meta_of(out)["label_names"] == ["rotten", "fresh"]


def test_a_run_cut_in_its_last_epoch_leaves_no_teacher_and_keeps_an_old_one(tmp_path, tiny_encoder, monkeypatch,
                                                                            capsys):
    """The kept epoch waits in a sibling folder that takes --out's name only when the run ends: a run cut in
    epoch 2 of 2 (epoch 1 already kept) leaves no OUT/config.json for a script to take for a finished teacher,
    and with --overwrite the old teacher, byte for byte; no sibling is left behind either way."""
    from students.training import finetune as module

    data = movie_csv(tmp_path / "t.csv", 16)
    runs = tmp_path / "runs"  # the folder --out is made in: after a cut, the teacher or nothing
    out = runs / "teacher"
    common = ["--teacher", str(tiny_encoder), "--data", data, "--eval-data", data, "--out", str(out),
              "--batch-size", "8", *TINY]
    real, calls = module.evaluate, []

    def cut_in_epoch_2(*args, **kwargs):  # the dev eval of epoch 2, after epoch 1 was kept
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "evaluate", cut_in_epoch_2)
    assert finetune(*common, "--epochs", "2") == 130 and len(calls) == 2
    assert not out.exists() and list(runs.iterdir()) == []
    # it does not resume, so the line does not say it would (extract's and train's say how they resume)
    assert capsys.readouterr().err.strip().splitlines()[-1] == "hskcache: interrupted; rerun the same command to start again"

    monkeypatch.setattr(module, "evaluate", real)
    assert finetune(*common, "--epochs", "1") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"config.json", META_FILE} <= set(before)
    calls.clear()
    monkeypatch.setattr(module, "evaluate", cut_in_epoch_2)
    assert finetune(*common, "--epochs", "2", "--overwrite", "--seed", "1") == 130 and len(calls) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert list(runs.iterdir()) == [out]
