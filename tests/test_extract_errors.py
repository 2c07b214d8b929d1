"""Every bad input: one line naming the problem, non-zero exit, no existing store touched."""
from __future__ import annotations

import json

import pytest
from transformers import BertConfig, BertModel

from conftest import make_tokenizer, write_csv
from hskcache import teacher as teacher_mod
from hskcache.cli import main

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
    code = main(["extract", "--store", str(store), "--max-length", str(MAX_LEN), "--quiet", *map(str, args)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("hskcache: error: "), err
    assert "Traceback" not in err[0]
    assert snapshot(store) == before
    return err[0]


def base(teacher_dir, data):
    return ["--teacher", teacher_dir, "--data", data]


def test_missing_teacher(capsys, existing_store, tmp_path, single_csv):
    msg = run_bad(capsys, existing_store, *base(tmp_path / "nope", single_csv), "--student-layers", 2)
    assert "nope" in msg


def test_non_classifier_teacher(capsys, existing_store, tmp_path, single_csv):
    folder = tmp_path / "encoder"
    tok = make_tokenizer(folder)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    msg = run_bad(capsys, existing_store, *base(folder, single_csv), "--student-layers", 2)
    assert "not a fine-tuned sequence classifier" in msg and "BertModel" in msg


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
])
def test_bad_settings(capsys, existing_store, teacher_dir, single_csv, flags, needle):
    assert needle in run_bad(capsys, existing_store, *base(teacher_dir, single_csv), *flags)


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
    proc = subprocess.run([sys.executable, "-m", "hskcache.cli", "extract", "--teacher", str(tmp_path / "x"),
                           "--data", str(single_csv), "--store", str(tmp_path / "o"), "--student-layers", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_mismatched_label_kind(capsys, existing_store, teacher_dir, tmp_path):
    data = write_csv(tmp_path / "reg.csv", [{"sentence": "the movie", "label": 0.5}, {"sentence": "a film", "label": 1.25}])
    msg = run_bad(capsys, existing_store, *base(teacher_dir, data), "--student-layers", 2)
    assert "regression" in msg
