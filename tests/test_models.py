"""Student building, saving and loading on a tiny random BERT teacher."""

import json

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    DistilBertConfig,
)

from hskcache.errors import UserError
from hskcache.teacher.loading import tokenizer_hash, weights_hash
from students.models.student import PRESETS, build_tinybert, count_parameters, load_student, save_student
from students.models.pruning import build_rosita, rosita_config
from students.models.rosita import RositaConfig, RositaForSequenceClassification

HEADS, HEAD_DIM, FFN, HIDDEN = 4, 8, 64, 32


def _make_teacher(folder, num_labels):
    """A tiny random BERT classifier with a 100-word vocabulary, saved like a fine-tuned teacher."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=64, num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(folder)
    BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """Shadows conftest's teacher: these tests need a 3-label teacher with a real vocabulary."""
    return _make_teacher(tmp_path_factory.mktemp("teacher"), num_labels=3)


def _vocab_size(teacher_dir):
    return AutoConfig.from_pretrained(teacher_dir).vocab_size


def _vocab(folder):
    return AutoTokenizer.from_pretrained(folder).get_vocab()


def _teacher(teacher_dir):
    return AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="eager").eval()


def _batch(teacher_dir, seed=0):
    """A store-like batch with padding and the teacher's own logits."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, _vocab_size(teacher_dir), (4, 12), generator=generator)
    input_ids[:, 0] = 2
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    attention_mask[3, 4:] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 6:] = 1
    with torch.no_grad():
        logits = _teacher(teacher_dir)(input_ids=input_ids, attention_mask=attention_mask,
                                       token_type_ids=token_type_ids).logits
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
            "labels": torch.zeros(4, dtype=torch.int64), "logits": logits}


def _inputs(batch, device="cpu"):
    return {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_tinybert_build_and_load(teacher_dir, tmp_path, device):
    """Built and saved on the CPU; the loaded student runs on `device`."""
    build_tinybert(teacher_dir, layers=2, hidden=16, ffn=24, heads=2, out_dir=tmp_path / "s", seed=3)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    teacher = _teacher(teacher_dir)
    assert isinstance(model, BertForSequenceClassification)
    assert isinstance(load_student(tmp_path / "s"), BertForSequenceClassification)
    for name in ("vocab_size", "num_labels", "id2label", "max_position_embeddings", "type_vocab_size"):
        assert getattr(model.config, name) == getattr(teacher.config, name)
    assert (model.config.hidden_size, model.config.intermediate_size, model.config.num_attention_heads) == (16, 24, 2)
    assert _vocab(tmp_path / "s") == _vocab(teacher_dir)
    info = json.loads((tmp_path / "s" / "student.json").read_text())
    assert info["kind"] == "tinybert" and info["spec"]["hidden"] == 16
    assert info["teacher_vocab_size"] == _vocab_size(teacher_dir)
    assert info["tokenizer_hash"] == tokenizer_hash(AutoTokenizer.from_pretrained(teacher_dir))

    out = model.eval().to(device)(**_inputs(_batch(teacher_dir), device), output_hidden_states=True)
    assert out.logits.shape == (4, 3) and out.logits.device.type == device
    assert [tuple(h.shape) for h in out.hidden_states] == [(4, 12, 16)] * 3
    model.cpu()

    again = build_tinybert(teacher_dir, 2, 16, 24, 2, tmp_path / "t", seed=3)
    other = build_tinybert(teacher_dir, 2, 16, 24, 2, tmp_path / "u", seed=4)
    word = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(again.state_dict()[word], model.state_dict()[word])
    assert not torch.equal(other.state_dict()[word], model.state_dict()[word])


def _bare_encoder(teacher_dir, out):
    """The teacher's encoder without its head (a general teacher) and its tokenizer."""
    _teacher(teacher_dir).bert.save_pretrained(out)
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(out)
    return out


def test_general_student_is_a_task_init_with_a_fresh_seeded_head(teacher_dir, tmp_path, capsys):
    """--init GENERAL: the general student's encoder, computing exactly what a plain HF load of it computes,
    under a head for the task teacher's labels that is fresh and seeded by --seed; its shape is the folder's."""
    from transformers import AutoModel

    from students import cli

    bare = _bare_encoder(teacher_dir, tmp_path / "bare")
    general = build_tinybert(bare, 2, 16, 24, 2, tmp_path / "general", seed=1)
    assert isinstance(general, BertModel)  # a bare teacher gives a bare (general) student
    assert not isinstance(AutoModel.from_pretrained(tmp_path / "general"), BertForSequenceClassification)

    def build(out, *flags):
        return cli.main(["build", "tinybert", "--teacher", str(teacher_dir), "--init", str(tmp_path / "general"),
                         "--out", str(tmp_path / out), *flags])

    assert build("s", "--seed", "3") == 0
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s").eval()
    plain = AutoModel.from_pretrained(tmp_path / "general").eval()
    teacher = _teacher(teacher_dir)
    assert student.config.num_labels == 3 and student.config.id2label == teacher.config.id2label
    batch = {k: v for k, v in _batch(teacher_dir).items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        got = student(**batch, output_hidden_states=True).hidden_states
        want = plain(**batch, output_hidden_states=True).hidden_states
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    assert _vocab(tmp_path / "s") == _vocab(teacher_dir)
    assert build("again", "--seed", "3") == 0 and build("other", "--seed", "4") == 0
    head = {name: AutoModelForSequenceClassification.from_pretrained(tmp_path / name).classifier.weight
            for name in ("again", "other")}
    assert torch.equal(head["again"], student.classifier.weight)
    assert not torch.equal(head["other"], student.classifier.weight)
    capsys.readouterr()
    assert build("bad", "--hidden", "32") == 2
    assert "fixes the student's shape" in capsys.readouterr().err
    assert cli.main(["build", "tinybert", "--teacher", str(bare), "--init", str(tmp_path / "general"),
                     "--out", str(tmp_path / "bad")]) == 2
    assert "is a bare encoder; pass the fine-tuned task teacher" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_other_vocabulary_is_refused_as_init(teacher_dir, tiny_encoder, tmp_path, capsys):
    from students import cli

    assert cli.main(["build", "tinybert", "--teacher", str(teacher_dir), "--init", str(tiny_encoder),
                     "--out", str(tmp_path / "s")]) == 2
    assert "has another vocabulary than teacher" in capsys.readouterr().err


def test_tinybert_rejects_bad_shape(teacher_dir, tmp_path):
    with pytest.raises(UserError):
        build_tinybert(teacher_dir, 2, 18, 24, 4, tmp_path / "s")


def test_rosita_shapes_and_reload(teacher_dir, tmp_path, device):
    batch = _batch(teacher_dir)
    built = build_rosita(teacher_dir, [batch], layers=1, heads=2, ffn=16, emb_rank=8, out_dir=tmp_path / "r",
                         device=device)
    model = load_student(tmp_path / "r").eval()
    assert isinstance(model, RositaForSequenceClassification)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["bert.embeddings.word_embeddings.weight"] == (_vocab_size(teacher_dir), 8)
    assert shapes["bert.embeddings.word_projection.weight"] == (HIDDEN, 8)
    assert shapes["bert.encoder.layer.0.attention.self.query.weight"] == (2 * HEAD_DIM, HIDDEN)
    assert shapes["bert.encoder.layer.0.attention.output.dense.weight"] == (HIDDEN, 2 * HEAD_DIM)
    assert shapes["bert.encoder.layer.0.intermediate.dense.weight"] == (16, HIDDEN)
    assert shapes["bert.encoder.layer.0.output.dense.weight"] == (HIDDEN, 16)
    assert not any(k.startswith("bert.encoder.layer.1.") for k in shapes)

    out = model(**_inputs(batch), output_hidden_states=True)
    assert out.logits.shape == (4, 3)
    assert [tuple(h.shape) for h in out.hidden_states] == [(4, 12, HIDDEN)] * 2
    assert model(**_inputs(batch)).hidden_states is None
    assert torch.allclose(built.eval()(**_inputs(batch)).logits, out.logits)
    assert _vocab(tmp_path / "r") == _vocab(teacher_dir)
    info = json.loads((tmp_path / "r" / "student.json").read_text())
    assert info["kind"] == "rosita" and info["teacher_vocab_size"] == _vocab_size(teacher_dir)
    assert info["teacher_hash"] == weights_hash(_teacher(teacher_dir)) and len(info["kept_heads"][0]) == 2

    save_student(model, tmp_path / "checkpoint", tmp_path / "r")
    reloaded = load_student(tmp_path / "checkpoint").eval()
    assert torch.equal(reloaded(**_inputs(batch)).logits, out.logits)
    assert (tmp_path / "checkpoint" / "student.json").read_text() == (tmp_path / "r" / "student.json").read_text()
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path / "r").eval()  # registered by `students`
    assert isinstance(auto, RositaForSequenceClassification) and isinstance(auto.config, RositaConfig)
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "r"), RositaConfig)
    assert torch.equal(auto(**_inputs(batch)).logits, out.logits)


@pytest.mark.parametrize("layers", [1, 2])
def test_rosita_at_full_size_reproduces_the_teacher(teacher_dir, tmp_path, layers, device):
    """Importance scored on `device`; the pruned student (built on the CPU) against the teacher."""
    batch = _batch(teacher_dir)
    model = build_rosita(teacher_dir, [batch], layers, HEADS, FFN, HIDDEN, tmp_path / "r", device=device).eval()
    with torch.no_grad():
        student = model(**_inputs(batch), output_hidden_states=True)
        teacher = _teacher(teacher_dir)(**_inputs(batch), output_hidden_states=True)
    for mine, theirs in zip(student.hidden_states, teacher.hidden_states[: layers + 1], strict=False):
        assert torch.allclose(mine, theirs, atol=1e-5)
    assert len(student.hidden_states) == layers + 1
    if layers == 2:
        assert torch.allclose(student.logits, teacher.logits, atol=1e-5)


def _independent_importance(teacher_dir, batch):
    """|grad · w| summed per head / neuron with explicit loops over the groups."""
    teacher = _teacher(teacher_dir)
    teacher.bert.encoder.layer = teacher.bert.encoder.layer[:1]
    logits = teacher(**_inputs(batch)).logits
    target = torch.softmax(batch["logits"], -1)
    (-(target * torch.log_softmax(logits, -1)).sum(-1).mean()).backward()
    layer = teacher.bert.encoder.layer[0]

    def taylor(p):
        return (p.grad * p).abs()

    heads = []
    for h in range(HEADS):
        rows = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        score = taylor(layer.attention.output.dense.weight)[:, rows].sum()
        for linear in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
            score = score + taylor(linear.weight)[rows].sum() + taylor(linear.bias)[rows].sum()
        heads.append(score.item())
    neurons = []
    for i in range(FFN):
        neurons.append((taylor(layer.intermediate.dense.weight)[i].sum() + taylor(layer.intermediate.dense.bias)[i]
                        + taylor(layer.output.dense.weight)[:, i].sum()).item())
    return heads, neurons, teacher


def _top(scores, k):
    return sorted(sorted(range(len(scores)), key=lambda i: -scores[i])[:k])


def test_rosita_keeps_the_most_important_heads_and_neurons(teacher_dir, tmp_path, device):
    batch = _batch(teacher_dir, seed=1)
    heads, neurons, teacher = _independent_importance(teacher_dir, batch)
    expected_heads, expected_neurons = _top(heads, 2), _top(neurons, 16)
    assert expected_heads != [0, 1] or expected_neurons != list(range(16))  # the selection is not trivial

    model = build_rosita(teacher_dir, [batch], 1, 2, 16, 8, tmp_path / "r", device=device)  # scored on `device`
    state, source = model.state_dict(), teacher.state_dict()
    prefix = "bert.encoder.layer.0."
    query, teacher_query = (s[prefix + "attention.self.query.weight"] for s in (state, source))
    kept_heads = [h for h in range(HEADS) for slot in range(2)
                  if torch.equal(query[slot * HEAD_DIM:(slot + 1) * HEAD_DIM],
                                 teacher_query[h * HEAD_DIM:(h + 1) * HEAD_DIM])]
    inner, teacher_inner = (s[prefix + "intermediate.dense.weight"] for s in (state, source))
    kept_neurons = [i for i in range(FFN) for row in inner if torch.equal(row, teacher_inner[i])]
    assert kept_heads == expected_heads
    assert kept_neurons == expected_neurons
    info = json.loads((tmp_path / "r" / "student.json").read_text())
    assert info["kept_heads"] == [expected_heads] and info["kept_neurons"] == [expected_neurons]


def test_rosita_from_a_regression_teacher(tmp_path, device):
    teacher_dir = _make_teacher(tmp_path / "teacher", num_labels=1)
    model = build_rosita(teacher_dir, [_batch(teacher_dir)], 1, 2, 16, 8, tmp_path / "r", device=device).eval()
    assert model(**_inputs(_batch(teacher_dir, seed=2))).logits.shape == (4, 1)


def test_rosita_rejects_bad_input(teacher_dir, tmp_path):
    batch = _batch(teacher_dir)
    with pytest.raises(UserError):
        build_rosita(teacher_dir, [batch], 1, HEADS + 1, 16, 8, tmp_path / "r")
    with pytest.raises(UserError):
        build_rosita(teacher_dir, [batch], 3, 2, 16, 8, tmp_path / "r")
    with pytest.raises(UserError):
        build_rosita(teacher_dir, [], 1, 2, 16, 8, tmp_path / "r")
    DistilBertConfig(vocab_size=50, dim=HIDDEN, n_layers=1, n_heads=2, hidden_dim=FFN).save_pretrained(tmp_path / "d")
    with pytest.raises(UserError):
        build_rosita(tmp_path / "d", [batch], 1, 2, 16, 8, tmp_path / "r")
    with pytest.raises(UserError):
        load_student(tmp_path / "missing")


@pytest.mark.parametrize(
    ("teacher", "tinybert", "rosita"),
    [(BertConfig(), "tinybert-4", "rosita-6"),
     (BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
      "tinybert-3s", "rosita-3s")],
)
def test_presets_are_much_smaller_than_their_teacher(teacher, tinybert, rosita):
    with torch.device("meta"):
        teacher_size = count_parameters(BertForSequenceClassification(teacher))
        tiny = PRESETS[tinybert]
        tiny_config = BertConfig(hidden_size=tiny.hidden, num_hidden_layers=tiny.layers,
                                 num_attention_heads=tiny.heads, intermediate_size=tiny.ffn)
        tiny_size = count_parameters(BertForSequenceClassification(tiny_config))
        spec = PRESETS[rosita]
        rosita_size = count_parameters(RositaForSequenceClassification(
            rosita_config(teacher, spec.layers, spec.heads, spec.ffn, spec.emb_rank)))
    assert tiny.layers < teacher.num_hidden_layers and spec.layers < teacher.num_hidden_layers
    assert tiny_size < teacher_size / 3 and rosita_size < teacher_size / 3


def test_small_presets_share_one_store():
    assert PRESETS["tinybert-3s"].layers == PRESETS["rosita-3s"].layers == 3



def test_rosita_is_a_hugging_face_classifier(teacher_dir, tmp_path, device):
    """HF's `labels` loss on `device`, and a folder in the previous format is refused with a rebuild hint."""
    batch = _batch(teacher_dir)
    build_rosita(teacher_dir, [batch], 1, 2, 16, 8, tmp_path / "r", device=device)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "r").eval().to(device)
    labels = torch.tensor([0, 2, 1, 1], device=device)
    out = model(**_inputs(batch, device), labels=labels)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model_type"] == "rosita" and config["architectures"] == ["RositaForSequenceClassification"]
    (tmp_path / "r" / "config.json").write_text(json.dumps(config | {"model_type": "bert"}))
    with pytest.raises(UserError, match="older version"):
        load_student(tmp_path / "r")


def test_regression_follows_problem_type():
    from hskcache.teacher.loading import is_regression

    assert is_regression(BertConfig(num_labels=1))
    assert not is_regression(BertConfig(num_labels=2))
    assert is_regression(BertConfig(num_labels=2, problem_type="regression"))
    assert not is_regression(BertConfig(num_labels=3, problem_type="multi_label_classification"))


def test_import_students_is_enough_for_the_auto_classes(teacher_dir, tmp_path):
    """A fresh interpreter that only imports `students` opens a ROSITA folder with the Auto classes."""
    import subprocess
    import sys

    build_rosita(teacher_dir, [_batch(teacher_dir)], 1, 2, 16, 8, tmp_path / "r")
    code = ("import students, sys; from transformers import AutoModelForSequenceClassification as A; "
            "print(type(A.from_pretrained(sys.argv[1])).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "RositaForSequenceClassification"


def test_random_general_student_of_another_family_is_an_init(tmp_path):
    """A random general student of a non-BERT encoder (an MPNet here) is a BERT on the teacher's vocabulary, as
    `--init random` builds for any teacher: `--init FOLDER` takes it (the vocabulary is what must match), as a
    bare `--student` on a task store does, with its encoder as it is and its family recorded."""
    from transformers import AutoModel, MPNetConfig, MPNetForSequenceClassification

    from conftest import make_tokenizer
    from students import cli

    teacher, encoder = tmp_path / "mpnet", tmp_path / "mpnet-encoder"
    tokenizer = make_tokenizer(teacher)
    torch.manual_seed(0)
    model = MPNetForSequenceClassification(MPNetConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=66, pad_token_id=0, num_labels=2))
    model.save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    model.mpnet.save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    assert cli.main(["build", "tinybert", "--teacher", str(encoder), "--init", "random", "--layers", "2",
                     "--hidden", "16", "--ffn", "24", "--heads", "2", "--out", str(tmp_path / "general")]) == 0
    assert cli.main(["build", "tinybert", "--teacher", str(teacher), "--init", str(tmp_path / "general"),
                     "--out", str(tmp_path / "s")]) == 0
    built = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert isinstance(built, BertForSequenceClassification) and built.config.num_labels == 2
    for key, value in AutoModel.from_pretrained(tmp_path / "general").state_dict().items():
        assert "pooler" in key or torch.equal(built.bert.state_dict()[key], value), key  # the pooler: no encoder's
    assert json.loads((tmp_path / "s" / "student.json").read_text())["family"] == "bert"
