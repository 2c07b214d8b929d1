"""Inputs checked before anything is written, alike in every command (issue 18):

- every `--out` that is not a store (`students build`, `hskcache augment`, `hskcache finetune`)
  refuses a file, and an existing non-empty folder unless `--overwrite`, and never writes into a store;
- a teacher folder without tokenizer files is refused wherever a teacher (or model) is read;
- one rule (`hskcache.data.check_labels`) refuses class labels outside the head in extract,
  build, train and eval.
"""
from __future__ import annotations

import shutil

import pytest

from conftest import movie_csv, write_csv
from hskcache.teacher import extract as extract_mod
from hskcache.cli.main import main as hskcache_main
from students import cli as students_cli

MAX_LEN = 24
TINY = ["--init", "random", "--layers", "2", "--hidden", "16", "--ffn", "32", "--heads", "2"]


def snapshot(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def one_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: ") and "Traceback" not in err[0], err
    return err[0]


def extract(teacher, data, store, *extra) -> None:
    assert hskcache_main(["extract", "--teacher", str(teacher), "--data", str(data), "--store", str(store),
                          "--student-layers", "2", "--tokens", "4", "--max-length", str(MAX_LEN), "--quiet",
                          *extra]) == 0


@pytest.fixture(scope="module")
def store(teacher_dir, single_csv, tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "store"
    extract(teacher_dir, single_csv, path)
    return path


@pytest.fixture
def no_tokenizer(teacher_dir, tmp_path):
    """The teacher's config and weights without its tokenizer files."""
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(teacher_dir / name, folder / name)
    return folder


# ----------------------------------------------------------------- --out


def build(teacher, out, *extra) -> int:
    return students_cli.main(["build", "tinybert", "--teacher", str(teacher), *TINY, "--out", str(out), *extra])


def test_build_out_refuses_an_existing_folder_unless_overwrite(capsys, teacher_dir, tmp_path):
    out = tmp_path / "student"
    assert build(teacher_dir, out) == 0
    before = snapshot(out)
    assert build(teacher_dir, out, "--seed", "1") == 2
    assert "already holds files; pass --overwrite" in one_line(capsys, "students")
    assert snapshot(out) == before
    assert build(teacher_dir, out, "--seed", "1", "--overwrite") == 0
    assert snapshot(out)[next(p for p in before if p.suffix == ".safetensors")] != \
        before[next(p for p in before if p.suffix == ".safetensors")]  # a new init replaced the weights


def test_build_out_is_a_file(capsys, teacher_dir, tmp_path):
    target = tmp_path / "afile"
    target.write_text("keep me")
    assert build(teacher_dir, target) == 2
    assert "is a file; pass a folder path" in one_line(capsys, "students")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("where", ["", "values"])
def test_nothing_is_written_into_a_store_even_with_overwrite(capsys, teacher_dir, store, single_csv, tmp_path,
                                                             where):
    before = snapshot(store)
    target = store / where if where else store
    assert build(teacher_dir, target, "--overwrite") == 2
    assert "even --overwrite is refused" in one_line(capsys, "students")
    assert hskcache_main(["augment", "--teacher", str(teacher_dir), "--data", str(single_csv),
                          "--out", str(target / "aug.csv"), "--overwrite", "--quiet"]) == 2
    assert "even --overwrite is refused" in one_line(capsys, "hskcache")
    assert snapshot(store) == before


def test_augment_out_refuses_an_existing_file_unless_overwrite(capsys, teacher_dir, single_csv, tmp_path):
    out = tmp_path / "aug.csv"
    argv = ["augment", "--teacher", str(teacher_dir), "--data", str(single_csv), "--out", str(out),
            "--per-example", "1", "--quiet"]
    out.write_text("keep me")
    assert hskcache_main(argv) == 2
    assert "exists; pass --overwrite" in one_line(capsys, "hskcache")
    assert out.read_text() == "keep me"
    assert hskcache_main([*argv, "--overwrite"]) == 0
    assert out.read_text().startswith("sentence,label,augmented")


def test_finetune_out_refuses_an_existing_folder_and_a_store(capsys, tiny_encoder, store, tmp_path):
    data = movie_csv(tmp_path / "t.csv", 16)
    common = ["finetune", "--teacher", str(tiny_encoder), "--data", data, "--eval-data", data, "--max-steps", "1",
              "--max-length", "8", "--threads", "1", "--quiet"]
    out = tmp_path / "teacher"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert hskcache_main([*common, "--out", str(out)]) == 2
    assert "already holds files; pass --overwrite" in one_line(capsys, "hskcache")
    assert (out / "config.json").read_text() == "{}"
    before = snapshot(store)
    assert hskcache_main([*common, "--out", str(store), "--overwrite"]) == 2
    assert "even --overwrite is refused" in one_line(capsys, "hskcache")
    assert snapshot(store) == before
    assert hskcache_main([*common, "--out", str(out), "--overwrite"]) == 0
    assert (out / "config.json").read_text() != "{}"


# ----------------------------------------------------------------- a teacher without tokenizer files


def test_no_tokenizer_files_refused_everywhere(capsys, no_tokenizer, single_csv, tiny_encoder, tmp_path):
    """Transformers builds a tokenizer of only the special tokens: every word [UNK], exit 0."""
    assert hskcache_main(["augment", "--teacher", str(no_tokenizer), "--data", str(single_csv),
                          "--out", str(tmp_path / "aug.csv"), "--quiet"]) == 2
    assert "no tokenizer files" in one_line(capsys, "hskcache")
    assert build(no_tokenizer, tmp_path / "student") == 2
    assert "no tokenizer files" in one_line(capsys, "students")
    assert students_cli.main(["eval", "--model", str(no_tokenizer), "--data", str(single_csv)]) == 2
    assert "no tokenizer files" in one_line(capsys, "students")
    assert hskcache_main(["budget", "--plan", "--teacher", str(no_tokenizer), "--data", str(single_csv),
                          "--seq-len", "16", "--student-layers", "2", "--configs", "1,4,0.5"]) == 2
    assert "no tokenizer files" in one_line(capsys, "hskcache")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (tiny_encoder / name).unlink(missing_ok=True)
    data = movie_csv(tmp_path / "t.csv", 16)
    assert hskcache_main(["finetune", "--teacher", str(tiny_encoder), "--data", data, "--eval-data", data,
                          "--out", str(tmp_path / "teacher"), "--max-length", "8"]) == 2
    assert "no tokenizer files" in one_line(capsys, "hskcache")
    assert not any((tmp_path / name).exists() for name in ("aug.csv", "student", "teacher"))


# ----------------------------------------------------------------- labels outside the head: one rule


@pytest.fixture
def seven(tmp_path):
    """Class 7 for a 2-class teacher, at row 1."""
    return write_csv(tmp_path / "seven.csv", [{"sentence": "the movie was great", "label": 1},
                                              {"sentence": "a boring film", "label": 7},
                                              {"sentence": "awful", "label": 0}] * 4)


@pytest.fixture
def old_store(teacher_dir, seven, tmp_path, monkeypatch):
    """A store as an earlier version wrote it: the class-7 row stored as it came."""
    with monkeypatch.context() as patch:
        patch.setattr(extract_mod, "check_labels", lambda *args, **kwargs: None)
        extract(teacher_dir, seven, tmp_path / "old-store")
    return tmp_path / "old-store"


def test_labels_outside_the_head_refused_by_extract_build_train_and_eval(capsys, teacher_dir, seven, old_store,
                                                                          tmp_path):
    needle = "class 7 at row 1, outside the"
    assert hskcache_main(["extract", "--teacher", str(teacher_dir), "--data", str(seven), "--store",
                          str(tmp_path / "s"), "--student-layers", "2", "--max-length", str(MAX_LEN), "--quiet"]) == 2
    assert needle in one_line(capsys, "hskcache") and not (tmp_path / "s").exists()

    student = tmp_path / "student"
    assert build(teacher_dir, student) == 0
    for init in (["--data", str(seven)], ["--store", str(old_store)]):
        assert students_cli.main(["build", "tinybert", "--teacher", str(teacher_dir), "--layers", "2",
                                  "--hidden", "16", "--ffn", "32", *init, "--threads", "1",
                                  "--out", str(tmp_path / "etd")]) == 2
        assert needle in one_line(capsys, "students") and not (tmp_path / "etd").exists()

    assert students_cli.main(["train", "--store", str(old_store), "--student", str(student), "--out",
                              str(tmp_path / "run"), "--pred-objective", "pred,label:0.5", "--threads", "1",
                              "--quiet"]) == 2
    assert needle in one_line(capsys, "students") and not (tmp_path / "run").exists()

    assert students_cli.main(["eval", "--model", str(student), "--data", str(seven)]) == 2
    assert needle in one_line(capsys, "students")


def test_truncated_weights_are_one_line_in_build_and_eval(capsys, teacher_dir, single_csv, tmp_path):
    """Was a SafetensorError traceback."""
    folder = tmp_path / "truncated"
    shutil.copytree(teacher_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert students_cli.main(["build", "tinybert", "--teacher", str(folder), "--init", "etd-rand", "--layers", "2",
                              "--hidden", "16", "--ffn", "32", "--out", str(tmp_path / "student")]) == 2
    assert "cannot load the weights" in one_line(capsys, "students") and not (tmp_path / "student").exists()
    assert students_cli.main(["eval", "--model", str(folder), "--data", str(single_csv)]) == 2
    assert "cannot load the weights" in one_line(capsys, "students")
