"""Every bad input: one line naming the problem, non-zero exit, no existing store touched."""
from __future__ import annotations

import json
import shutil

import pytest
from transformers import BertConfig, BertForSequenceClassification, BertModel, GPT2Config

import hskcache

from conftest import make_tokenizer, write_csv
from hskcache.teacher import loading as teacher_mod
from hskcache.cli.main import main

MAX_LEN = 24


@pytest.fixture
def existing_store(tmp_path, teacher_dir, single_csv):
    out = tmp_path / "store"
    assert main(["extract", "--teacher", str(teacher_dir), "--data", str(single_csv), "--store", str(out),
                 "--student-layers", "2", "--tokens", "4", "--max-length", str(MAX_LEN), "--quiet"]) == 0
    return out


def snapshot(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def run_bad(capsys, store, *args) -> str:
    before = snapshot(store)
    capsys.readouterr()
    try:
        code = main(["extract", "--store", str(store), "--max-length", str(MAX_LEN), "--quiet", *map(str, args)])
    except SystemExit as exit_:  # a usage error: argparse refuses a flag outside its choices
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(("hskcache: error: ", "hskcache extract: error: ")), err
    assert "Traceback" not in err[0]
    assert snapshot(store) == before
    return err[0]


def base(teacher_dir, data):
    return ["--teacher", teacher_dir, "--data", data]


def test_missing_teacher(capsys, existing_store, tmp_path, single_csv):
    msg = run_bad(capsys, existing_store, *base(tmp_path / "nope", single_csv), "--student-layers", 2)
    assert "nope" in msg


def test_bare_encoder_with_a_label_column(capsys, existing_store, tmp_path, single_csv):
    """A bare encoder writes a task-agnostic store (tests/test_general_store.py): --label-col is refused."""
    folder = tmp_path / "encoder"
    tok = make_tokenizer(folder)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    msg = run_bad(capsys, existing_store, *base(folder, single_csv), "--student-layers", 2, "--label-col", "label")
    assert "--label-col label" in msg and "is a bare encoder" in msg


def test_causal_teacher(capsys, existing_store, tmp_path, single_csv):
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    msg = run_bad(capsys, existing_store, *base(tmp_path / "gpt2", single_csv), "--student-layers", 1)
    assert "model type 'gpt2' is not a supported encoder family; use one of: bert" in msg


def test_teacher_without_attentions(capsys, existing_store, teacher_dir, single_csv, monkeypatch):
    real = teacher_mod.Teacher.forward

    def no_attentions(self, batch):
        out = real(self, batch)
        out.attentions = None
        return out

    monkeypatch.setattr(teacher_mod.Teacher, "forward", no_attentions)
    msg = run_bad(capsys, existing_store, *base(teacher_dir, single_csv), "--student-layers", 2)
    assert "attention" in msg


def test_unknown_column(capsys, existing_store, teacher_dir, single_csv):
    msg = run_bad(capsys, existing_store, *base(teacher_dir, single_csv), "--student-layers", 2, "--text-cols", "review")
    assert "review" in msg and "sentence" in msg


def test_non_string_text_column(capsys, existing_store, teacher_dir, tmp_path):
    data = tmp_path / "nums.jsonl"
    data.write_text("\n".join(json.dumps({"sentence": i, "label": 0}) for i in range(4)))
    msg = run_bad(capsys, existing_store, *base(teacher_dir, data), "--student-layers", 2)
    assert "sentence" in msg


def test_empty_dataset(capsys, existing_store, teacher_dir, tmp_path):
    data = tmp_path / "empty.csv"
    data.write_text("sentence,label\n")
    msg = run_bad(capsys, existing_store, *base(teacher_dir, data), "--student-layers", 2)
    assert "empty" in msg or "no rows" in msg


@pytest.mark.parametrize("flags,needle", [
    (("--student-layers", 2, "--depth", 4), "--depth 4"),
    (("--student-layers", 2, "--ltop", 3), "--ltop 3"),
    (("--student-layers", 2, "--width", 0), "--width"),
    (("--student-layers", 2, "--width", 1.5), "--width"),
    (("--student-layers", 2, "--tokens", 0), "--tokens"),
    (("--teacher-layers", "0,5"), "--teacher-layers"),
    ((), "--student-layers"),
    (("--student-layers", 2, "--token-strategy", "best"), "--token-strategy"),
    (("--student-layers", 2, "--tokens", 30), "--tokens 30 is above --max-length 24"),
])
def test_bad_settings(capsys, existing_store, teacher_dir, single_csv, flags, needle):
    assert needle in run_bad(capsys, existing_store, *base(teacher_dir, single_csv), *flags)


@pytest.mark.parametrize("strategy", ["att-nosep", "att-nosep-top"])
def test_a_single_teacher_layer_is_refused(capsys, teacher_dir, single_csv, tmp_path, strategy):
    """`--teacher-layers 2` is a student of 0 layers above its embeddings: refused before anything is written (it
    wrote a store no read could open, or crashed in the layer map), naming the flags that give 2 or more."""
    out = tmp_path / "store"
    code = main(["extract", *map(str, base(teacher_dir, single_csv)), "--store", str(out), "--teacher-layers", "2",
                 "--token-strategy", strategy, "--max-length", str(MAX_LEN), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--teacher-layers 2 names 1 layer" in err[0] and "--teacher-layers 0,1,2" in err[0], err[0]
    assert not out.exists()


def test_output_path_is_a_file(capsys, existing_store, teacher_dir, single_csv, tmp_path):
    target = tmp_path / "afile"
    target.write_text("keep me")
    capsys.readouterr()
    code = main(["extract", *map(str, base(teacher_dir, single_csv)), "--store", str(target), "--student-layers", "2", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is a file" in err[0]
    assert target.read_text() == "keep me"


def test_out_is_a_foreign_directory(capsys, teacher_dir, single_csv, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    code = main(["extract", *map(str, base(teacher_dir, single_csv)), "--store", str(foreign), "--student-layers", "2",
                 "--max-length", "24", "--quiet"])
    assert code == 2 and "not an hskcache store" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep"


def test_cli_process_prints_no_traceback(tmp_path, single_csv):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "hskcache.cli.main", "extract", "--teacher", str(tmp_path / "x"),
                           "--data", str(single_csv), "--store", str(tmp_path / "o"), "--student-layers", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_mismatched_label_kind(capsys, existing_store, teacher_dir, tmp_path):
    data = write_csv(tmp_path / "reg.csv", [{"sentence": "the movie", "label": 0.5}, {"sentence": "a film", "label": 1.25}])
    msg = run_bad(capsys, existing_store, *base(teacher_dir, data), "--student-layers", 2)
    assert "regression" in msg


# ----------------------------------------------------------------- teachers that load wrong or not at all


def teacher_copy(teacher_dir, folder, keep=("config.json", "model.safetensors")):
    folder.mkdir()
    for name in keep:
        shutil.copy(teacher_dir / name, folder / name)
    return folder


def test_teacher_without_tokenizer_files(capsys, existing_store, teacher_dir, single_csv, tmp_path):
    """Transformers would build a tokenizer of the 5 special tokens: every word [UNK], exit 0."""
    folder = teacher_copy(teacher_dir, tmp_path / "no-tokenizer")
    msg = run_bad(capsys, existing_store, *base(folder, single_csv), "--student-layers", 2)
    assert "no tokenizer files" in msg and "[UNK]" in msg


def test_tokenizer_larger_than_the_embeddings(capsys, existing_store, teacher_dir, single_csv, tmp_path):
    """A vocabulary the embedding table does not cover failed mid-extraction (IndexError)."""
    folder = tmp_path / "small-embeddings"
    tok = make_tokenizer(folder)
    BertForSequenceClassification(BertConfig(vocab_size=len(tok) - 10, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64,
                                             max_position_embeddings=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    msg = run_bad(capsys, existing_store, *base(folder, single_csv), "--student-layers", 2)
    assert f"ids up to {len(tok) - 1}" in msg and f"only {len(tok) - 10} tokens" in msg


def test_config_only_teacher(capsys, existing_store, teacher_dir, single_csv, tmp_path):
    folder = teacher_copy(teacher_dir, tmp_path / "config-only", ("config.json", "vocab.txt", "tokenizer_config.json"))
    msg = run_bad(capsys, existing_store, *base(folder, single_csv), "--student-layers", 2)
    assert "cannot load the weights" in msg and str(folder) in msg


def test_truncated_weights(capsys, existing_store, teacher_dir, single_csv, tmp_path):
    folder = tmp_path / "truncated"
    shutil.copytree(teacher_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    msg = run_bad(capsys, existing_store, *base(folder, single_csv), "--student-layers", 2)
    assert "cannot load the weights" in msg and str(folder) in msg


def test_missing_relative_path_is_not_asked_of_the_hub(capsys, existing_store, single_csv, tmp_path, monkeypatch):
    """`runs/teacher` with no such folder (but `runs/` here) is a path that does not exist: said at once,
    not five hub retries and a message about the network."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    msg = run_bad(capsys, existing_store, *base("runs/teacher", single_csv), "--student-layers", 2)
    assert "runs/teacher does not exist" in msg


def test_unknown_hub_id_offline(capsys, existing_store, single_csv, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = run_bad(capsys, existing_store, *base("no-such-org/no-such-teacher", single_csv), "--student-layers", 2)
    assert "HF_HUB_OFFLINE" in msg and "no-such-org/no-such-teacher" in msg


# ----------------------------------------------------------------- data


def test_class_labels_outside_the_teachers_range(capsys, existing_store, teacher_dir, tmp_path):
    """A 2-class teacher: class 7 was stored, then failed training mid-run or scored as wrong."""
    rows = [{"sentence": "the movie", "label": 1}, {"sentence": "a film", "label": 7}]
    data = write_csv(tmp_path / "seven.csv", rows)
    msg = run_bad(capsys, existing_store, *base(teacher_dir, data), "--student-layers", 2)
    assert "class 7 at row 1" in msg and "2 classes 0..1" in msg


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("latin.csv", "sentence,label\ncaf\xe9 noir,1\nthe movie,0\n".encode("latin-1"), "not UTF-8"),
    ("bad.parquet", b"not a parquet file", "as parquet"),
])
def test_unreadable_data_file_is_one_line(capfd, existing_store, teacher_dir, tmp_path, name, content, needle):
    """`datasets` logs a file it cannot read before raising: the fd-level stderr holds only our line."""
    (tmp_path / name).write_bytes(content)
    msg = run_bad(capfd, existing_store, *base(teacher_dir, tmp_path / name), "--student-layers", 2)
    assert needle in msg and name in msg


def test_a_digit_text_column_is_extracted_as_text(tmp_path, teacher_dir):
    data = tmp_path / "digits.csv"
    data.write_text("sentence,label\n123,1\n007,0\n")
    assert main(["extract", *map(str, base(teacher_dir, data)), "--store", str(tmp_path / "s"),
                 "--student-layers", "2", "--max-length", str(MAX_LEN), "--quiet"]) == 0
    tok = make_tokenizer(tmp_path / "tok")
    stored = hskcache.open_store(str(tmp_path / "s")).get([0, 1], depth=1, tokens=1)["input_ids"]
    expected = tok(["123", "007"], padding="max_length", max_length=MAX_LEN, return_tensors="pt")["input_ids"]
    assert stored.tolist() == expected.tolist()
