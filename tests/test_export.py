"""`students export`: every student kind's ONNX model gives PyTorch's logits; the folder serves
through a plain onnxruntime session and through `students eval` / tools/compare.py."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from transformers import (AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification, ElectraConfig, ElectraForSequenceClassification,
                          ModernBertConfig, ModernBertForSequenceClassification, MPNetConfig,
                          MPNetForSequenceClassification, RobertaConfig, RobertaForSequenceClassification)

from conftest import SENTENCES, make_teacher
from hskcache.errors import UserError
from hskcache.teacher.families import FAMILIES
from students import cli as students_cli
from students.deploy.export import export_onnx
from students.models.student import build_tinybert, load_student
from students.models.rosita import RositaConfig, RositaForSequenceClassification

TOLERANCE = 1e-4  # the bound on |ONNX fp32 - PyTorch| logits
LABELS = {"id2label": {0: "rotten", 1: "fresh"}, "label2id": {"rotten": 0, "fresh": 1}}
SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, num_labels=2, **LABELS)


def _family_students(vocab: int) -> dict:
    """A tiny random classifier of each encoder family a same-family student can have (hskcache/teacher/families.py)."""
    return {
        "roberta": lambda: RobertaForSequenceClassification(RobertaConfig(vocab_size=vocab, max_position_embeddings=66,
                                                                          pad_token_id=0, **SHAPE)),
        "electra": lambda: ElectraForSequenceClassification(ElectraConfig(vocab_size=vocab, embedding_size=16,
                                                                          max_position_embeddings=64, **SHAPE)),
        "mpnet": lambda: MPNetForSequenceClassification(MPNetConfig(vocab_size=vocab, max_position_embeddings=66,
                                                                    pad_token_id=0, **SHAPE)),
        "deberta-v2": lambda: DebertaV2ForSequenceClassification(DebertaV2Config(
            vocab_size=vocab, max_position_embeddings=64, pad_token_id=0, **SHAPE)),
        "modernbert": lambda: ModernBertForSequenceClassification(ModernBertConfig(
            vocab_size=vocab, max_position_embeddings=64, pad_token_id=0, cls_token_id=2, sep_token_id=3,
            bos_token_id=2, eos_token_id=3, **SHAPE)),
        "distilbert": lambda: DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=64, **LABELS)),
    }


KINDS = ("tinybert", "rosita", "roberta", "electra", "mpnet", "deberta-v2", "modernbert", "distilbert")


def make_student(kind: str, teacher: Path, folder: Path) -> Path:
    """A student folder of `kind`: the project's two builders' kinds and every same-family layout."""
    if kind == "tinybert":
        build_tinybert(teacher, layers=2, hidden=16, ffn=32, heads=2, out_dir=folder, seed=1)
        return folder
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    torch.manual_seed(0)
    if kind == "rosita":
        model = RositaForSequenceClassification(RositaConfig(
            head_dim=8, embedding_rank=8, vocab_size=len(tokenizer), max_position_embeddings=64,
            **{**SHAPE, "num_attention_heads": 3}))
    else:
        model = _family_students(len(tokenizer))[kind]()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_every_family_is_exported_here():
    """A family added to hskcache/teacher/families.py needs its case above."""
    assert {f.name for f in FAMILIES} - {"bert"} <= set(KINDS)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """Only the tokenizer and labels matter here: the students are built from configs."""
    return make_teacher(tmp_path_factory.mktemp("teacher"), label_names=("rotten", "fresh"))


@pytest.fixture(scope="module", params=KINDS)
def exported(request, teacher, tmp_path_factory) -> tuple[str, Path, Path]:
    work = tmp_path_factory.mktemp(request.param)
    student = make_student(request.param, teacher, work / "student")
    assert students_cli.main(["export", "--model", str(student), "--out", str(work / "onnx"),
                              "--quantize", "int8"]) == 0
    return request.param, student, work / "onnx"


def real_batch(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The test sentences as the exported folder's own tokenizer pads them."""
    enc = AutoTokenizer.from_pretrained(folder)(SENTENCES[:12], padding=True, return_tensors="np")
    return {name: enc[name].astype(np.int64) if name in enc else np.zeros_like(enc["input_ids"]) for name in names}


def random_batch(vocab: int, rows: int, length: int, names: list[str], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((rows, length), dtype=np.int64)
    mask[-1, length // 3:] = 0
    feed = {"input_ids": rng.integers(0, vocab, (rows, length)), "attention_mask": mask,
            "token_type_ids": np.zeros((rows, length), dtype=np.int64)}
    return {name: feed[name] for name in names}


def test_fp32_logits_equal_pytorch(exported):
    """Plain onnxruntime on the folder, random and real inputs at batch and sequence sizes other than the traced."""
    kind, student, out = exported
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    model = load_student(student).eval()
    batches = [random_batch(model.config.vocab_size, rows, length, names, seed)
               for seed, (rows, length) in enumerate([(1, 5), (5, 40)])] + [real_batch(out, names)]
    for feed in batches:
        with torch.no_grad():
            expected = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
        got = session.run(["logits"], feed)[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE, err_msg=kind)
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "rotten", "1": "fresh"}


def test_int8_model_is_quantised_and_close(exported, record_property):
    """The int8 file holds integer matmuls; its agreement with fp32 is reported, not asserted exactly."""
    kind, _, out = exported
    ops = {node.op_type for node in onnx.load(out / "model_quantized.onnx").graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops or "DynamicQuantizeMatMul" in ops
    fp32, int8 = (onnxruntime.InferenceSession(str(out / f), providers=["CPUExecutionProvider"])
                  for f in ("model.onnx", "model_quantized.onnx"))
    feed = real_batch(out, [i.name for i in fp32.get_inputs()])
    a, b = fp32.run(["logits"], feed)[0], int8.run(["logits"], feed)[0]
    assert b.shape == a.shape and np.isfinite(b).all()
    agreement, error = float((a.argmax(1) == b.argmax(1)).mean()), float(np.abs(a - b).max())
    record_property("int8", {"kind": kind, "argmax_agreement": agreement, "max_logit_error": error})
    print(f"{kind}: int8 argmax agreement {agreement:.2f}, max logit error {error:.3g}")


def test_eval_and_compare_measure_the_exported_model(task, tmp_path, capsys):
    """`students eval` on the exported folder gives the PyTorch student's metrics; compare.py takes
    the folder and its int8 file."""
    student = tmp_path / "student"
    build_tinybert(task.teacher, layers=2, hidden=16, ffn=32, heads=2, out_dir=student, seed=1)
    out = tmp_path / "onnx"
    assert students_cli.main(["export", "--model", str(student), "--out", str(out), "--quantize", "int8"]) == 0
    metrics = {}
    for name, path in (("torch", student), ("onnx", out), ("int8", out / "model_quantized.onnx")):
        capsys.readouterr()
        assert students_cli.main(["eval", "--model", str(path), "--data", str(task.dev), "--json"]) == 0
        metrics[name] = json.loads(capsys.readouterr().out)
    assert metrics["onnx"] == pytest.approx(metrics["torch"], abs=1e-6)
    assert set(metrics["int8"]) == set(metrics["torch"])
    assert students_cli.main(["eval", "--model", str(out), "--data", str(task.dev), "--dtype", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "drop --device cuda and --dtype bf16" in err[0], err

    spec = importlib.util.spec_from_file_location("compare", Path(__file__).parents[1] / "tools" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    table = tmp_path / "compare.json"
    assert compare.main(["--model", f"student={student}", "--model", f"onnx={out}",
                         "--model", f"int8={out / 'model_quantized.onnx'}", "--data", str(task.dev),
                         "--max-length", "16", "--json", str(table)]) == 0
    rows = json.loads(table.read_text())
    assert rows["onnx"]["gap_points"] == pytest.approx(0, abs=1e-6)
    assert rows["onnx"]["parameters"] == rows["student"]["parameters"]
    assert rows["int8"]["disk_bytes"] < rows["onnx"]["disk_bytes"]


def test_refusals_are_one_line(teacher, tmp_path, capsys, monkeypatch):
    student = make_student("tinybert", teacher, tmp_path / "student")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    capsys.readouterr()  # the build's own progress output
    cases = [
        (["--out", str(taken)], "already holds files; pass --overwrite"),
        (["--out", str(tmp_path / "x"), "--model", str(tmp_path)], "is not a model folder"),
        (["--out", str(tmp_path), "--overwrite"], "replacing it would delete the student"),
    ]
    for extra, message in cases:
        args = ["export", "--model", str(student), *extra]
        assert students_cli.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert (taken / "keep.txt").read_text() == "mine" and len(list(taken.iterdir())) == 1
    assert (student / "config.json").is_file()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    assert students_cli.main(["export", "--model", str(student), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'hskcache[deploy]'" in err[0], err
    assert not (tmp_path / "y").exists()


class DataDependent(torch.nn.Module):
    """A classifier whose control flow depends on the input's values: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig
        self.config = BertConfig(vocab_size=10, max_position_embeddings=16)
        self.embed = torch.nn.Embedding(10, 2)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        from transformers.modeling_outputs import SequenceClassifierOutput
        hidden = self.embed(input_ids).mean(1)
        return SequenceClassifierOutput(logits=hidden if hidden.sum() > 0 else -hidden)


def test_an_architecture_that_cannot_export_is_one_line(teacher, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    with pytest.raises(UserError, match="cannot be exported to ONNX") as caught:
        export_onnx(DataDependent(), tokenizer, tmp_path, "custom")
    assert "\n" not in str(caught.value)
