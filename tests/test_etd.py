"""Extract-Then-Distill students, checked against the teacher's own forward, hand-sliced
weights and finite-difference importance."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from conftest import make_teacher
from hskcache.errors import UserError
from students import cli
from students.build.builder import TinyBertConfig
from students.models.etd import build_extracted, layer_selection, taylor_neuron_importance
from students.models.student import StudentSpec, load_student

LAYERS, HIDDEN, HEADS, FFN = 4, 32, 4, 64  # make_teacher(layers=4)


@pytest.fixture(scope="module")
def teacher4(tmp_path_factory):
    return make_teacher(tmp_path_factory.mktemp("teacher4"), layers=LAYERS, seed=3)


def _teacher(folder):
    return AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()


def _inputs(seed=0, batch=3, length=10):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_layer_selection_follows_etd():
    assert layer_selection(6, 3) == [2, 4, 6]
    assert layer_selection(12, 4) == [3, 6, 9, 12]
    assert layer_selection(12, 6) == [2, 4, 6, 8, 10, 12]
    assert layer_selection(6, 4) == [1, 3, 4, 6]  # ⌊6/4⌋, ⌊12/4⌋, ⌊18/4⌋, 6
    assert layer_selection(6, 3, "bottom") == [1, 2, 3]
    assert layer_selection(6, 3, "top") == [4, 5, 6]
    with pytest.raises(UserError, match="7-layer student"):
        layer_selection(6, 7)


def test_an_unknown_layer_selection_is_refused_by_the_build_settings_however_made():
    """The field's `choices` are the one check (etd's registry has none of its own): in code as on the CLI."""
    with pytest.raises(UserError, match="^--layer-selection 'middle' is unknown; use one of uniform, bottom, top$"):
        TinyBertConfig(teacher="T", out="O", init="etd-rand", layer_selection="middle")


@pytest.mark.parametrize("init", ["teacher-layers", "etd-rand", "etd-impt"])
def test_keeping_every_dimension_reproduces_the_teacher(teacher4, tmp_path, init, device):
    """The importance scored on `device`; the built student against the teacher on the CPU."""
    batches = [{**_inputs(1), "labels": torch.tensor([0, 1, 1])}]
    spec = StudentSpec("tinybert", layers=LAYERS, heads=HEADS, ffn=FFN, hidden=HIDDEN)
    build_extracted(teacher4, spec, init, tmp_path / "s", batches, device=device)
    student = load_student(tmp_path / "s").eval()
    inputs = _inputs(2)
    with torch.no_grad():
        expected = _teacher(teacher4)(**inputs).logits
        got = student(**inputs).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_fewer_dimensions_equal_hand_sliced_weights(teacher4, tmp_path):
    spec = StudentSpec("tinybert", layers=2, heads=HEADS, ffn=24, hidden=16)
    build_extracted(teacher4, spec, "etd-rand", tmp_path / "s", seed=5)
    info = json.loads((tmp_path / "s" / "student.json").read_text())
    plan = info["extraction"]
    assert plan["teacher_layers"] == [2, 4]
    hidden = plan["hidden"]
    assert len(hidden) == 16 and len(set(hidden)) == 16
    teacher = _teacher(teacher4).state_dict()
    student = load_student(tmp_path / "s").state_dict()

    def sliced(name, rows, cols):
        source = teacher[name]
        return torch.tensor([[source[r, c].item() for c in cols] for r in rows])

    words = teacher["bert.embeddings.word_embeddings.weight"]
    assert torch.equal(student["bert.embeddings.word_embeddings.weight"],
                       torch.stack([words[:, j] for j in hidden], dim=1))
    assert torch.equal(student["bert.embeddings.LayerNorm.weight"],
                       torch.tensor([teacher["bert.embeddings.LayerNorm.weight"][j].item() for j in hidden]))
    for s, t in enumerate(plan["teacher_layers"]):
        heads, ffn = plan["head_rows"][s], plan["ffn_rows"][s]
        assert len(heads) == 16 and len(ffn) == 24
        # every head keeps 16 / 4 = 4 of its 8 neurons
        assert [sum(r // 8 == h for r in heads) for h in range(HEADS)] == [4] * HEADS
        src, dst = f"bert.encoder.layer.{t - 1}.", f"bert.encoder.layer.{s}."
        for proj in ("query", "key", "value"):
            assert torch.equal(student[dst + f"attention.self.{proj}.weight"],
                               sliced(src + f"attention.self.{proj}.weight", heads, hidden))
        assert torch.equal(student[dst + "attention.output.dense.weight"],
                           sliced(src + "attention.output.dense.weight", hidden, heads))
        assert torch.equal(student[dst + "intermediate.dense.weight"], sliced(src + "intermediate.dense.weight", ffn, hidden))
        assert torch.equal(student[dst + "output.dense.weight"], sliced(src + "output.dense.weight", hidden, ffn))
        for name in ("output.LayerNorm.bias", "attention.output.LayerNorm.weight", "output.dense.bias"):
            assert torch.equal(student[dst + name], torch.tensor([teacher[src + name][j].item() for j in hidden]))
    assert torch.equal(student["classifier.weight"], sliced("classifier.weight", range(2), hidden))
    assert torch.equal(student["bert.pooler.dense.weight"], sliced("bert.pooler.dense.weight", hidden, hidden))


def _scaled_loss(model, examples, patch, eps):
    """Loss with one neuron's value scaled by (1 + eps), by editing the weights that make or read it."""
    saved = patch(eps)
    try:
        return sum(F.cross_entropy(model(**x).logits.double(), x["labels"]) for x in examples)
    finally:
        saved()


def scale_column(linear, j):
    """A weight edit scaling by (1 + eps) a neuron read only through column j of `linear`; the edit returns its undo."""
    def patch(eps):
        old = linear.weight.data[:, j].clone()
        linear.weight.data[:, j] *= 1 + eps
        return lambda: linear.weight.data[:, j].copy_(old)
    return patch


def scale_row(linear, j):
    """A weight edit scaling by (1 + eps) a neuron made only by row j (and bias j) of `linear`; returns its undo."""
    def patch(eps):
        old_w, old_b = linear.weight.data[j].clone(), linear.bias.data[j].clone()
        linear.weight.data[j] *= 1 + eps
        linear.bias.data[j] *= 1 + eps

        def restore():
            linear.weight.data[j], linear.bias.data[j] = old_w, old_b
        return restore
    return patch


def test_importance_is_the_first_order_taylor_term(teacher4, device):
    """|∂L/∂x · x| summed over tokens equals the derivative of the loss with respect to scaling x
    by (1 + ε) at ε = 0; checked by central differences, one example at a time (abs per example), on `device`."""
    model = _teacher(teacher4).double().to(device)
    examples = []
    inputs = _inputs(4, batch=3)
    for i in range(3):
        examples.append({**{k: v[i:i + 1].to(device) for k, v in inputs.items()},
                         "labels": torch.tensor([i % 2], device=device)})
    importance = taylor_neuron_importance(model, examples)
    layer = model.bert.encoder.layer[1]

    def derivative(patch, example, eps=1e-5):
        with torch.no_grad():
            return (_scaled_loss(model, [example], patch, eps) - _scaled_loss(model, [example], patch, -eps)) / (2 * eps)

    def fd(patch):
        return sum(abs(derivative(patch, x)) for x in examples).item()

    neuron = 7
    assert importance.ffn[1, neuron].item() == pytest.approx(fd(scale_column(layer.output.dense, neuron)), rel=1e-4)
    head, unit = 2, 3
    j = head * (HIDDEN // HEADS) + unit
    head_fd = (fd(scale_row(layer.attention.self.query, j)) + fd(scale_row(layer.attention.self.key, j))
               + fd(scale_column(layer.attention.output.dense, j)))
    assert importance.heads[1, head, unit].item() == pytest.approx(head_fd, rel=1e-4)


def test_cli_builds_etd_impt_from_a_store_by_default(task, tmp_path, device):
    out = tmp_path / "s"
    assert cli.main(["build", "tinybert", "--teacher", str(task.teacher), "--layers", "1", "--hidden", "16",
                     "--ffn", "32", "--store", str(task.store), "--importance-examples", "40", "--out", str(out),
                     "--device", device]) == 0
    info = json.loads((out / "student.json").read_text())
    assert info["init"] == "etd-impt" and info["spec"]["heads"] == 4  # the teacher's heads
    teacher_layers = _teacher(task.teacher).config.num_hidden_layers
    assert info["extraction"]["teacher_layers"] == [teacher_layers]  # uniform S = {0, N} for one layer
    assert load_student(out).config.hidden_size == 16


def test_cli_task_loss_importance_from_data(task, tmp_path, device):
    out = tmp_path / "s"
    assert cli.main(["build", "tinybert", "--teacher", str(task.teacher), "--layers", "2", "--hidden", "16",
                     "--ffn", "32", "--data", str(task.train), "--layer-selection", "top", "--out", str(out),
                     "--device", device]) == 0
    assert json.loads((out / "student.json").read_text())["layer_selection"] == "top"


@pytest.mark.parametrize(("flags", "message"), [
    ([], "pass one, or --init etd-rand"),
    (["--init", "etd-rand", "--heads", "2"], "keeps the teacher's 4 heads"),
    (["--init", "etd-rand", "--hidden", "18"], "not divisible"),
    (["--init", "etd-rand", "--hidden", "64"], "outside 1..32"),
    (["--init", "teacher-layers", "--hidden", "16"], "keeps the teacher's width"),
    (["--init", "etd-rand", "--layer-selection", "middle"], "invalid choice"),
])
def test_cli_refuses_bad_extractions(task, tmp_path, capsys, flags, message):
    argv = ["build", "tinybert", "--teacher", str(task.teacher), "--layers", "1", "--ffn", "32",
            "--out", str(tmp_path / "s"), *([] if "--hidden" in flags else ["--hidden", "16"])]
    try:
        code = cli.main(argv + flags)
    except SystemExit as e:
        code = e.code
    assert code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("examples", [1, 33, 270])
def test_any_number_of_importance_examples_from_data(task, tmp_path, examples):
    """--importance-examples N cuts the rows and their labels together (270 is more than the data has)."""
    out = tmp_path / "s"
    assert cli.main(["build", "tinybert", "--teacher", str(task.teacher), "--layers", "1", "--hidden", "16",
                     "--ffn", "32", "--data", str(task.train), "--importance-examples", str(examples),
                     "--out", str(out)]) == 0
    assert json.loads((out / "student.json").read_text())["importance_select_on"] == "train-holdout:0.1"


def test_store_sample_leaves_out_the_held_out_rows(task):
    """The rows scored are the first N the trainer does not hold out for model selection."""
    import numpy as np

    from hskcache.store.reader import open_store
    from students.build.importance import store_sample
    from students.training.selection import HOLDOUT_SEED, holdout_rows

    store = open_store(task.store)
    held = set(holdout_rows(np.arange(store.num_examples), 0.1, HOLDOUT_SEED).tolist())
    ids = [i for batch in store_sample(store, 100, "train-holdout:0.1") for i in batch["example_id"].tolist()]
    assert len(ids) == 100 and len(set(ids)) == 100 and not held & set(ids)
    everything = [i for batch in store_sample(store, 10_000, "last") for i in batch["example_id"].tolist()]
    assert sorted(everything) == list(range(store.num_examples))


# --------------------------------------------------------------------------- a bare encoder (the general stage)


@pytest.fixture(scope="module")
def bare4(teacher4, tmp_path_factory):
    """teacher4's encoder without its head: what a general store is extracted from."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("bare4")
    _teacher(teacher4).bert.save_pretrained(out)
    AutoTokenizer.from_pretrained(teacher4).save_pretrained(out)
    return out


def _bare(folder):
    from transformers import AutoModel

    return AutoModel.from_pretrained(folder, attn_implementation="eager").eval().double()


def _rows(seed=6, batch=3, length=10):
    """`batch` rows of different lengths, each its own batch (trimmed), keyed by example id."""
    inputs = _inputs(seed, batch, length)
    inputs["attention_mask"][1, 8:] = 0
    rows = []
    for i in range(batch):
        real = int(inputs["attention_mask"][i].sum())
        rows.append({**{k: v[i:i + 1, :real] for k, v in inputs.items()}, "example_id": torch.tensor([10 + i])})
    return inputs, rows


def _neuron_patches(model, layer_index, ffn_neuron, head_row):
    """Weight edits scaling one FFN neuron, and the three that scale one head neuron (query, key, context)."""
    layer = model.encoder.layer[layer_index]

    return ([scale_column(layer.output.dense, ffn_neuron)],
            [scale_row(layer.attention.self.query, head_row), scale_row(layer.attention.self.key, head_row),
             scale_column(layer.attention.output.dense, head_row)])


def _state_derivative(model, row, patch, delta=1e-5):
    """d h_L / dα of scaling the neuron by (1 + α), at α = 0, by central differences: (tokens, width)."""
    def last(eps):
        restore = patch(eps)
        try:
            with torch.no_grad():
                return model(**{k: row[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).last_hidden_state[0]
        finally:
            restore()
    return (last(delta) - last(-delta)) / (2 * delta)


def test_bare_encoder_importance_is_the_sampled_gaussian_score(bare4, device):
    """With the same draws ε, each neuron scores Σ_rows mean_k (d(ε_k · h_L)/dα)², the derivative of
    scaling it by (1 + α) taken by central differences (a head neuron: its query, key and context terms summed),
    on `device` (the draws are the CPU's on any device)."""
    from students.models.etd import gaussian_draws

    model = _bare(bare4).to(device)
    _, rows = _rows()
    rows = [{k: v.to(device) for k, v in row.items()} for row in rows]
    draws, seed = 3, 5
    importance = taylor_neuron_importance(model, rows, draws=draws, seed=seed)
    ffn_neuron, head, unit = 7, 2, 3
    ffn_patches, head_patches = _neuron_patches(model, 1, ffn_neuron, head * (HIDDEN // HEADS) + unit)

    def score(patches):
        total = 0.0
        for row in rows:
            eps = gaussian_draws(seed, int(row["example_id"]), draws, row["input_ids"].shape[1], HIDDEN).to(device)
            for patch in patches:  # a head neuron's query, key and context units score apart, then add
                slope = _state_derivative(model, row, patch)
                total += sum(float((e * slope).sum()) ** 2 for e in eps) / draws
        return total

    assert importance.ffn[1, ffn_neuron].item() == pytest.approx(score(ffn_patches), rel=1e-4)
    assert importance.heads[1, head, unit].item() == pytest.approx(score(head_patches), rel=1e-4)


def test_bare_encoder_importance_estimates_the_expected_score(bare4):
    """Over many draws the score tends to its expectation under N(h_L, I): E (ε · dh_L/dα)² = ‖dh_L/dα‖²,
    by central differences; and it ranks neurons (positive, finite, not all alike)."""
    model = _bare(bare4)
    _, rows = _rows()
    importance = taylor_neuron_importance(model, rows, draws=400, seed=1)
    for neuron in (3, 7, 40):
        patches, _ = _neuron_patches(model, 2, neuron, 0)
        expected = sum(float((_state_derivative(model, row, patches[0]) ** 2).sum()) for row in rows)
        assert importance.ffn[2, neuron].item() == pytest.approx(expected, rel=0.25)
    for scores in (importance.hidden, importance.heads.flatten(), importance.ffn.flatten()):
        assert torch.isfinite(scores).all() and (scores > 0).all()
        assert scores.std() > 0.1 * scores.mean()


def test_bare_encoder_importance_agrees_across_batch_shapes(bare4):
    """One padded batch of the rows, or each row alone, scores the same (each row's draws are its own)."""
    model = _bare(bare4).float()
    inputs, rows = _rows()
    together = taylor_neuron_importance(model, [{**inputs, "example_id": torch.tensor([10, 11, 12])}], draws=2)
    alone = taylor_neuron_importance(model, rows, draws=2)
    for a, b in ((together.hidden, alone.hidden), (together.heads, alone.heads), (together.ffn, alone.ffn)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))


def test_cli_builds_a_bare_student_of_a_bare_encoder(bare4, teacher4, tmp_path):
    """etd-impt on unlabeled --data writes a bare student (no head) whose weights are the encoder's sliced;
    --init random writes a bare TinyBERT."""
    from transformers import AutoModel, BertModel

    from conftest import SENTENCES, write_csv

    data = write_csv(tmp_path / "text.csv", [{"sentence": s} for s in SENTENCES])
    out = tmp_path / "s"
    assert cli.main(["build", "tinybert", "--teacher", str(bare4), "--layers", "2", "--hidden", "16", "--ffn", "24",
                     "--data", str(data), "--out", str(out), "--threads", "1"]) == 0
    student = AutoModel.from_pretrained(out)
    assert isinstance(student, BertModel) and not hasattr(student, "classifier")
    plan = json.loads((out / "student.json").read_text())["extraction"]
    teacher = _bare(bare4).float().state_dict()
    words = teacher["embeddings.word_embeddings.weight"][:, plan["hidden"]]
    assert torch.equal(student.state_dict()["embeddings.word_embeddings.weight"], words)
    t, s = plan["teacher_layers"][1] - 1, 1
    want = teacher[f"encoder.layer.{t}.output.dense.weight"][plan["hidden"]][:, plan["ffn_rows"][s]]
    assert torch.equal(student.state_dict()[f"encoder.layer.{s}.output.dense.weight"], want)
    assert cli.main(["build", "tinybert", "--teacher", str(bare4), "--layers", "2", "--hidden", "16", "--ffn", "24",
                     "--heads", "2", "--init", "random", "--out", str(tmp_path / "r")]) == 0
    assert isinstance(AutoModel.from_pretrained(tmp_path / "r"), BertModel)
    assert "classifier.weight" not in _safetensors_keys(tmp_path / "r")


def _safetensors_keys(folder):
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return set(f.keys())
