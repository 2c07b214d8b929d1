"""tools/finetune_teacher.py end to end on a tiny random BERT (seconds on CPU)."""

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification, BertTokenizerFast

_spec = importlib.util.spec_from_file_location(
    "finetune_teacher", Path(__file__).resolve().parents[1] / "tools" / "finetune_teacher.py"
)
finetune_teacher = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = finetune_teacher  # dataclasses look their module up there
_spec.loader.exec_module(finetune_teacher)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "great", "awful", "film", "the"]


@pytest.fixture
def tiny_bert(tmp_path) -> Path:
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32,
    )
    out = tmp_path / "tiny-bert"
    BertForSequenceClassification(config).bert.save_pretrained(out)  # encoder only, no head
    tokenizer.save_pretrained(out)
    return out


def _movie_csv(path: Path, n: int) -> str:
    # Trivially learnable: the label is whether the review contains a positive word.
    positive, negative = ["the good film", "great film", "good"], ["the bad film", "awful film", "bad"]
    rows = [(positive[i % 3], "fresh") if i % 2 else (negative[i % 3], "rotten") for i in range(n)]
    pd.DataFrame(rows, columns=["sentence", "label"]).to_csv(path, index=False)
    return str(path)


def test_finetune_learns_and_saves_loadable_teacher(tmp_path, tiny_bert, device):
    out = tmp_path / "teacher"
    argv = [
        "--model", str(tiny_bert), "--train", _movie_csv(tmp_path / "train.csv", 64),
        "--dev", _movie_csv(tmp_path / "dev.csv", 16), "--out", str(out), "--epochs", "4",
        "--batch-size", "8", "--lr", "1e-2", "--max-length", "8", "--threads", "1", "--device", device,
    ]
    assert finetune_teacher.main(argv) == 0
    meta = json.loads((out / finetune_teacher.META_FILE).read_text())
    assert meta["label_names"] == ["fresh", "rotten"] and meta["num_labels"] == 2
    assert meta["text_cols"] == ["sentence"] and not meta["is_regression"]
    history = [h["train_loss"] for h in meta["history"]]
    assert len(history) == 4 and history[-1] < 0.5 * history[0]
    assert meta["dev_metrics"]["accuracy"] == 1.0

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 2 and model.config.id2label == {0: "fresh", 1: "rotten"}


def test_max_steps_and_regression(tmp_path, tiny_bert, device):
    frame = pd.DataFrame({"text": ["good film", "bad film"] * 8, "score": [0.9, 0.1] * 8})
    frame.to_csv(tmp_path / "r.csv", index=False)
    out = tmp_path / "reg"
    argv = [
        "--model", str(tiny_bert), "--train", str(tmp_path / "r.csv"), "--dev", str(tmp_path / "r.csv"),
        "--out", str(out), "--label-col", "score", "--batch-size", "4", "--max-steps", "3",
        "--device", device,
    ]
    assert finetune_teacher.main(argv) == 0
    meta = json.loads((out / finetune_teacher.META_FILE).read_text())
    assert meta["is_regression"] and meta["history"][-1]["step"] == 3 and len(meta["history"]) == 1
    assert set(meta["dev_metrics"]) == {"pearson", "mse"}
    assert AutoModelForSequenceClassification.from_pretrained(out).config.num_labels == 1


def test_unlabeled_train_is_a_user_error(tmp_path, tiny_bert, capsys):
    pd.DataFrame({"sentence": ["good"]}).to_csv(tmp_path / "u.csv", index=False)
    argv = ["--model", str(tiny_bert), "--train", str(tmp_path / "u.csv"), "--dev", str(tmp_path / "u.csv"),
            "--out", str(tmp_path / "o")]
    assert finetune_teacher.main(argv) == 2
    assert "has no labels" in capsys.readouterr().err


def test_selection_never_looks_at_dev(tmp_path, tiny_bert, device):
    """The saved epoch is the last one, or the best on held-out training rows; dev only reported."""
    train, dev = _movie_csv(tmp_path / "train.csv", 40), _movie_csv(tmp_path / "dev.csv", 8)
    common = ["--model", str(tiny_bert), "--train", train, "--dev", dev, "--epochs", "3", "--batch-size", "8",
              "--lr", "1e-2", "--max-length", "8", "--threads", "1", "--device", device]
    assert finetune_teacher.main([*common, "--out", str(tmp_path / "last")]) == 0
    meta = json.loads((tmp_path / "last" / finetune_teacher.META_FILE).read_text())
    assert meta["best_epoch"] == 3 and meta["selected_on"] == "last epoch"
    assert meta["dev_metrics"]["accuracy"] == meta["history"][-1]["accuracy"]

    assert finetune_teacher.main([*common, "--out", str(tmp_path / "held"), "--select-on", "train-holdout:0.25"]) == 0
    meta = json.loads((tmp_path / "held" / finetune_teacher.META_FILE).read_text())
    assert meta["selected_on"] == "10 held-out training rows" and meta["train"]["rows"] == 30
    held = [h["holdout"]["accuracy"] for h in meta["history"]]
    assert meta["best_epoch"] == 1 + held.index(max(held))
    with pytest.raises(SystemExit):
        finetune_teacher.main([*common, "--out", str(tmp_path / "bad"), "--select-on", "eval"])


def test_text_cols_is_a_comma_list_like_the_other_commands():
    from hskcache.options import columns

    base = ["--model", "M", "--train", "T", "--dev", "D", "--out", "O"]
    assert columns(finetune_teacher.parse_args([*base, "--text-cols", "a,b"]).text_cols) == ("a", "b")
    assert columns(finetune_teacher.parse_args([*base, "--text-cols", "a", "b"]).text_cols) == ("a", "b")  # older form


def test_length_and_label_names_are_checked_before_training(tmp_path, tiny_bert, capsys):
    rows = [("the good film", 1), ("the bad film", 0)] * 4
    train = pd.DataFrame(rows, columns=["sentence", "label"]).to_csv(tmp_path / "t.csv", index=False) or tmp_path / "t.csv"
    common = ["--model", str(tiny_bert), "--train", str(train), "--dev", str(train), "--out", str(tmp_path / "o")]
    assert finetune_teacher.main([*common, "--max-length", "100"]) == 2
    assert "--max-length 100 is above the model's 32 positions" in capsys.readouterr().err
    assert finetune_teacher.main([*common, "--max-length", "8", "--label-names", "rotten,fresh,meh"]) == 2
    assert "--label-names gives 3 names but the training data has 2 classes" in capsys.readouterr().err
    assert finetune_teacher.main([*common, "--max-length", "8", "--device", "cuda"]) == 2  # this case sees no GPU
    assert "--device cuda was asked for but no CUDA device is available" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_label_names_for_integer_labels(tmp_path, tiny_bert, device):
    """The movie data's labels are 0/1; --label-names puts rotten/fresh into the teacher's config."""
    rows = [("the good film", 1), ("the bad film", 0)] * 4
    pd.DataFrame(rows, columns=["sentence", "label"]).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "teacher"
    assert finetune_teacher.main(["--model", str(tiny_bert), "--train", str(tmp_path / "t.csv"), "--dev",
                                  str(tmp_path / "t.csv"), "--out", str(out), "--label-names", "rotten,fresh",
                                  "--epochs", "1", "--max-length", "8", "--threads", "1",
                                  "--device", device]) == 0
    config = AutoModelForSequenceClassification.from_pretrained(out).config
    assert config.id2label == {0: "rotten", 1: "fresh"} and config.label2id == {"rotten": 0, "fresh": 1}
    assert json.loads((out / finetune_teacher.META_FILE).read_text())["label_names"] == ["rotten", "fresh"]
