"""Every registered family on a tiny random teacher built from its Hugging Face config (no download):
the store against a plain forward, ETD students against the teacher, element-wise slices and
finite differences, and `students build` / `train` end to end.

The module paths below are the test's own (read off the Hugging Face model code), so the
registry in hskcache/teacher/families.py is checked against an independent statement of each layout.
"""
from __future__ import annotations

import contextlib
import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import (AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer, BertConfig,
                          BertTokenizerFast, DebertaV2Config, DistilBertConfig, ElectraConfig, ModernBertConfig,
                          MPNetConfig, MPNetTokenizer, RobertaConfig, XLMRobertaConfig)

import hskcache
from hskcache.kinds.relation import RelationRead
from conftest import WORDS
from hskcache.cli.main import main as hskcache_main
from hskcache.errors import UserError
from hskcache.teacher.families import family_of
from hskcache.teacher.loading import load_model
from reference import coarsened_row, expected_selection, ranked_rows, projection_relation_row
from students import cli as students_cli
from students.models.etd import build_extracted, taylor_neuron_importance
from students.models.student import StudentSpec, load_student
from helpers import read_csv, run_extract

MAX_LEN = 24  # test_extract.run_extract's
HIDDEN, HEADS, FFN, LAYERS = 32, 4, 48, 3
SHAPE = dict(hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=FFN, num_hidden_layers=LAYERS,
             num_labels=2, max_position_embeddings=64, initializer_range=0.2)
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


@dataclass(frozen=True)
class Layout:
    """Where the test finds a family's modules (independently of the registry)."""

    config: object
    layers: str  # the list of layers, from the classifier
    query: tuple[str, int]  # (module in a layer, column offset of the query block in its output)
    key: tuple[str, int]
    attn_out: str
    ffn_out: str
    value: tuple[str, int]
    mpnet_tokenizer: bool = False
    final: str | None = None  # the module whose output is the last hidden state, if not the last layer


def _roberta(cls):
    return cls(**SHAPE, type_vocab_size=1, pad_token_id=0)


LAYOUTS = {
    "bert": Layout(BertConfig(**SHAPE), "bert.encoder.layer", ("attention.self.query", 0),
                   ("attention.self.key", 0), "attention.output.dense", "output.dense", ("attention.self.value", 0)),
    "roberta": Layout(_roberta(RobertaConfig), "roberta.encoder.layer", ("attention.self.query", 0),
                      ("attention.self.key", 0), "attention.output.dense", "output.dense",
                      ("attention.self.value", 0)),
    "xlm-roberta": Layout(_roberta(XLMRobertaConfig), "roberta.encoder.layer", ("attention.self.query", 0),
                          ("attention.self.key", 0), "attention.output.dense", "output.dense",
                          ("attention.self.value", 0)),
    "electra": Layout(ElectraConfig(**SHAPE, embedding_size=8), "electra.encoder.layer",
                      ("attention.self.query", 0), ("attention.self.key", 0), "attention.output.dense",
                      "output.dense", ("attention.self.value", 0)),
    "mpnet": Layout(MPNetConfig(**SHAPE, pad_token_id=1), "mpnet.encoder.layer",
                    ("attention.attn.q", 0), ("attention.attn.k", 0), "attention.attn.o", "output.dense",
                    ("attention.attn.v", 0), mpnet_tokenizer=True),
    "deberta-v2": Layout(DebertaV2Config(**SHAPE, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                         position_buckets=8, max_relative_positions=64, norm_rel_ebd="layer_norm",
                                         share_att_key=True, position_biased_input=False, type_vocab_size=0),
                         "deberta.encoder.layer", ("attention.self.query_proj", 0),
                         ("attention.self.key_proj", 0), "attention.output.dense", "output.dense",
                         ("attention.self.value_proj", 0)),
    "deberta-v2-unshared": Layout(DebertaV2Config(**SHAPE, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                                  position_buckets=8, max_relative_positions=64,
                                                  share_att_key=False, type_vocab_size=2),
                                  "deberta.encoder.layer", ("attention.self.query_proj", 0),
                                  ("attention.self.key_proj", 0), "attention.output.dense", "output.dense",
                                  ("attention.self.value_proj", 0)),  # v2: own position projections, token types
    "modernbert": Layout(ModernBertConfig(**SHAPE, global_attn_every_n_layers=3, local_attention=6,
                                          pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2,
                                          eos_token_id=3),
                         "model.layers", ("attn.Wqkv", 0), ("attn.Wqkv", HIDDEN), "attn.Wo", "mlp.Wo",
                         ("attn.Wqkv", 2 * HIDDEN), final="model.final_norm"),
    "distilbert": Layout(DistilBertConfig(dim=HIDDEN, n_heads=HEADS, hidden_dim=FFN, n_layers=LAYERS, num_labels=2,
                                          max_position_embeddings=64, initializer_range=0.2),
                         "distilbert.transformer.layer", ("attention.q_lin", 0), ("attention.k_lin", 0),
                         "attention.out_lin", "ffn.lin2", ("attention.v_lin", 0)),
}
FAMILIES = list(LAYOUTS)
STORE_FLAGS = ("--student-layers", 2, "--tokens", 4, "--width", 1.0, "--knowledge", "hsk,att,val",
               "--att-layers", "pairs", "--att-rows", 3, "--att-keys", 4, "--token-strategy", "att-nosep")


def make_family_teacher(folder: Path, family: str) -> Path:
    layout = LAYOUTS[family]
    folder.mkdir(parents=True, exist_ok=True)
    if layout.mpnet_tokenizer:
        (folder / "vocab.txt").write_text("\n".join(["<s>", "<pad>", "</s>", "<unk>", "<mask>", *WORDS]) + "\n")
        tok = MPNetTokenizer(vocab=str(folder / "vocab.txt"))
    else:
        (folder / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n")
        tok = BertTokenizerFast(vocab=str(folder / "vocab.txt"))
    config = layout.config.__class__.from_dict(layout.config.to_dict() | {"vocab_size": len(tok)})
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=FAMILIES)
def family_store(request, tmp_path_factory, pair_csv):
    """(family, teacher folder, store) for every family."""
    root = tmp_path_factory.mktemp(request.param)
    teacher = make_family_teacher(root / "teacher", request.param)
    run_extract(teacher, pair_csv, root / "store", *STORE_FLAGS)
    return request.param, teacher, root / "store"


def teacher_model(folder: Path) -> torch.nn.Module:
    return AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()


def encode(folder: Path, texts_a, texts_b):
    """The tokenized batch as a family's forward takes it (no token types where it has none)."""
    tok = AutoTokenizer.from_pretrained(folder)
    enc = dict(tok(texts_a, texts_b, max_length=MAX_LEN, truncation=True, padding="max_length", return_tensors="pt"))
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "type_vocab_size", 0) < 2 or config.model_type == "distilbert":
        enc["token_type_ids"] = torch.zeros_like(enc["input_ids"])
    return enc, tok


def test_store_matches_a_plain_forward(family_store, pair_csv, device, tmp_path):
    """HSK at the stored positions equal output_hidden_states; att rows equal output_attentions;
    val rows equal a loop over the value vectors (captured by the test's own hook). The store is
    extracted on `device` (the cpu case reads the module's; the cuda case extracts in fp32), the
    reference is a CPU forward."""
    family, teacher, store_path = family_store
    if device == "cuda":
        store_path = tmp_path / "store"
        run_extract(teacher, pair_csv, store_path, *STORE_FLAGS, "--device", device, "--dtype", "fp32")
    texts_a, texts_b = read_csv(pair_csv)
    n = 12
    enc, tok = encode(teacher, texts_a[:n], texts_b[:n])
    model = teacher_model(teacher)
    layout = LAYOUTS[family]
    layers = model.get_submodule(layout.layers)
    values = {}
    module, offset = layout.value
    handles = [layer.get_submodule(module).register_forward_hook(
        lambda m, i, o, l=l: values.__setitem__(l, o[..., offset:offset + HIDDEN])) for l, layer in
        enumerate(layers, start=1)]
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True, output_attentions=True)
    for handle in handles:
        handle.remove()
    store = hskcache.open_store(store_path)
    got = store.get(np.arange(n), kinds={k: RelationRead() for k in store.kinds if k != "hsk"})
    exp_pos, exp_hsk = expected_selection(enc, out, tok.sep_token_id, store.teacher_layers, LAYERS,
                                          store.depth, 4, "att-nosep", 1.0, "mag")
    np.testing.assert_array_equal(got["positions"].numpy(), exp_pos)
    np.testing.assert_allclose(got["hsk"].numpy(), exp_hsk, atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(got["logits"].numpy(), out.logits.numpy(), atol=1e-5)
    np.testing.assert_array_equal(got["token_type_ids"].numpy(), enc["token_type_ids"].numpy())
    spec = store.kinds["att"]
    for b in range(n):
        length = int(enc["attention_mask"][b].sum())
        for j, l in enumerate(spec.layers):
            query = ranked_rows(enc, out, tok.sep_token_id, b, l, spec.rows, "att-nosep")
            assert got["rel_positions"][b, j].tolist() == query + [-1] * (spec.rows - len(query))
            for r, q in enumerate(query):
                relations = projection_relation_row(values[l][b], q, length, HEADS)
                for h in range(HEADS):
                    for kind, dist in (("att", out.attentions[l - 1][b, h, q]), ("val", relations[h])):
                        keys, probs, rest = coarsened_row(dist, length, spec.keys)
                        assert got[f"{kind}_keys"][b, j, h, r].tolist()[:len(keys)] == keys
                        assert got[f"{kind}_probs"][b, j, h, r, :len(probs)].tolist() == pytest.approx(
                            probs, abs=1e-3, rel=1e-3)
                        assert got[f"{kind}_rest"][b, j, h, r].item() == pytest.approx(rest, abs=2e-3)


def _inputs(folder: Path, seed: int = 0, batch: int = 3, length: int = 10) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    vocab = AutoConfig.from_pretrained(folder).vocab_size
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # a short pad: every padded query keeps a real key inside ModernBERT's local window
    mask[1, 9:] = 0  # (a fully masked row is NaN in float64 Hugging Face ModernBERT, a library quirk)
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("init", ["teacher-layers", "etd-rand", "etd-impt"])
def test_keeping_every_dimension_reproduces_the_teacher(family_store, tmp_path, init, device):
    """Importance scored on `device`; the student (saved from the CPU) against the teacher on the CPU."""
    family, teacher, _ = family_store
    batches = [{**_inputs(teacher, 1), "labels": torch.tensor([0, 1, -1])}]
    spec = StudentSpec("tinybert", layers=LAYERS, heads=HEADS, ffn=FFN, hidden=HIDDEN)
    build_extracted(teacher, spec, init, tmp_path / "s", batches, device=device)
    student = load_student(tmp_path / "s").eval()
    assert type(student) is type(teacher_model(teacher))
    inputs = _inputs(teacher, 2)
    with torch.no_grad():
        expected = teacher_model(teacher)(**inputs).logits
        got = student(**inputs).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("init", ["teacher-layers", "etd-rand", "etd-impt"])
def test_a_bare_encoder_keeping_every_dimension_reproduces_it(family_store, tmp_path, init, device):
    """The teacher's encoder saved alone (a general teacher; RoBERTa's and MPNet's hold no pooler, as their
    classifiers drop it) gives a bare student by ETD in every family: at the teacher's own size its last hidden
    state is a plain `AutoModel` forward's of the encoder."""
    family, teacher, _ = family_store
    encoder = tmp_path / "encoder"
    teacher_model(teacher).base_model.save_pretrained(encoder)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(encoder)
    batches = [{**_inputs(encoder, 1), "example_id": torch.arange(3)}]  # a bare encoder's rows: no labels
    spec = StudentSpec("tinybert", layers=LAYERS, heads=HEADS, ffn=FFN, hidden=HIDDEN)
    build_extracted(encoder, spec, init, tmp_path / "s", batches, device=device)
    student = load_model(str(tmp_path / "s"), "student", cls=AutoModel).eval()
    assert not any("pooler" in name for name in student.state_dict())  # a bare encoder carries none
    inputs = _inputs(encoder, 2)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(encoder, attn_implementation="eager").eval()(**inputs).last_hidden_state
        got = student(**inputs).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _axis_roles(family: str, name: str, shape: tuple[int, ...], layout: Layout) -> list[str | None]:
    """What each axis of a teacher parameter indexes, from its size and the test's own module paths:
    d (residual), 3d (a fused QKV), F (FFN), 2F (a GLU); the head axis of Q/K/V rows and the
    attention output's columns is the heads' one."""
    head_modules = {layout.query[0], layout.key[0], layout.value[0]}
    out_modules = {layout.attn_out}
    if family.startswith("deberta-v2"):
        head_modules |= {"attention.self.pos_key_proj", "attention.self.pos_query_proj"}
    local = re.sub(r"^.*\.\d+\.", "", name)
    module = local.rsplit(".", 1)[0]
    roles: list[str | None] = []
    for axis, size in enumerate(shape):
        if module in head_modules and axis == 0:
            roles.append("qkv" if size == 3 * HIDDEN else "heads")
        elif module in out_modules and axis == 1:
            roles.append("heads")
        elif size == HIDDEN and not (family == "mpnet" and "relative_attention_bias" in name):
            roles.append("hidden")
        elif size == FFN:
            roles.append("ffn")
        elif size == 2 * FFN:
            roles.append("glu")
        else:
            roles.append(None)
    return roles


def test_thinned_weights_are_elementwise_slices(family_store, tmp_path):
    family, teacher, _ = family_store
    hidden = 16
    heads = hidden // (HIDDEN // HEADS) if family == "modernbert" else HEADS
    spec = StudentSpec("tinybert", layers=2, heads=heads, ffn=24, hidden=hidden)
    build_extracted(teacher, spec, "etd-rand", tmp_path / "s", seed=5)
    plan = json.loads((tmp_path / "s" / "student.json").read_text())["extraction"]
    source = dict(teacher_model(teacher).named_parameters())
    student = dict(load_student(tmp_path / "s").named_parameters())
    layout = LAYOUTS[family]
    if family == "modernbert":  # two whole heads of 8 neurons: the rotary head size is kept
        for rows in plan["head_rows"]:
            kept_heads = sorted({r // 8 for r in rows})
            assert len(kept_heads) == 2 and rows == [h * 8 + u for h in kept_heads for u in range(8)]
    else:  # every head keeps 16 / 4 = 4 of its 8 neurons
        assert all([sum(r // 8 == h for r in rows) for h in range(HEADS)] == [4] * HEADS for rows in plan["head_rows"])
    checked = 0
    for name, value in student.items():
        match = re.match(re.escape(layout.layers) + r"\.(\d+)\.", name)
        s = None if match is None else int(match[1])
        teacher_name = name if s is None else name.replace(
            f"{layout.layers}.{s}.", f"{layout.layers}.{plan['teacher_layers'][s] - 1}.", 1)
        original = source[teacher_name]
        roles = _axis_roles(family, teacher_name, tuple(original.shape), layout)

        def kept(role, size):
            if role == "hidden":
                return plan["hidden"]
            if role in ("heads", "qkv"):
                rows = plan["head_rows"][s]
                return [r + block * HIDDEN for block in range(3 if role == "qkv" else 1) for r in rows]
            if role in ("ffn", "glu"):
                rows = plan["ffn_rows"][s]
                return [r + block * FFN for block in range(2 if role == "glu" else 1) for r in rows]
            return list(range(size))

        index = [kept(role, size) for role, size in zip(roles, original.shape)]
        expected = torch.empty(tuple(len(i) for i in index))
        for position in np.ndindex(*expected.shape):
            expected[position] = original[tuple(index[a][p] for a, p in enumerate(position))].item()
        assert torch.equal(value.detach(), expected), name
        checked += 1
    assert checked == len(student)
    if family == "modernbert":  # each kept layer keeps its attention kind
        kinds = AutoConfig.from_pretrained(teacher).layer_types
        assert AutoConfig.from_pretrained(tmp_path / "s").layer_types == \
            [kinds[t - 1] for t in plan["teacher_layers"]]


def _scaled(module: torch.nn.Module, column: int, eps: float, output: bool):
    """Scale one neuron (a column of a module's output, or of its input) by (1 + eps)."""
    def scale(x):
        x = x.clone()
        x[..., column] *= 1 + eps
        return x

    if output:  # the first call of each forward (DeBERTa projects its position embeddings after the tokens)
        calls = []

        def post(m, i, o):
            calls.append(None)
            if len(calls) > 1:
                return o
            return (scale(o[0]),) + tuple(o[1:]) if isinstance(o, tuple) else scale(o)

        return module.register_forward_hook(post)
    def pre(m, args, kwargs):
        if args:
            return (scale(args[0]),) + args[1:], kwargs
        name = next(k for k, v in kwargs.items() if torch.is_tensor(v))  # the hidden states, passed by name
        return args, kwargs | {name: scale(kwargs[name])}

    return module.register_forward_pre_hook(pre, with_kwargs=True)


def _row_score(model, example, label, perturb) -> float:
    """d/dε at 0 of the row's loss under `perturb(eps)` (labelled: |d CE/dε|), or
    Σ_y p(y) (d log p(y)/dε)² (unlabelled), by central differences."""
    eps = 1e-5

    def log_p(e):
        handles = perturb(e)
        try:
            with torch.no_grad():
                return torch.log_softmax(model(**example).logits[0].double(), -1)
        finally:
            for handle in handles:
                handle.remove()

    plus, minus = log_p(eps), log_p(-eps)
    slope = (plus - minus) / (2 * eps)
    if label >= 0:
        return abs(-slope[label].item())
    return float((log_p(0.0).exp() * slope ** 2).sum())


@contextlib.contextmanager
def all_float64():
    """Keep a float64 forward in float64 (ModernBERT's eager path computes its rotary products and
    softmax in float32, whose rounding would swamp a central difference)."""
    softmax = F.softmax
    with mock.patch.object(torch.Tensor, "float", lambda self, *a, **k: self), \
            mock.patch.object(F, "softmax", lambda x, dim=None, dtype=None, **k: softmax(x, dim=dim)):
        yield


def test_importance_matches_finite_differences(family_store, device):
    """Task-loss rows (labels 0, 1) and a Fisher row (label -1), scored in one padded batch on
    `device`, equal central differences on each row alone on the CPU; the scores are not degenerate."""
    with all_float64():
        _check_importance_against_finite_differences(*family_store[:2], device)


def _check_importance_against_finite_differences(family: str, teacher: Path, device: str) -> None:
    layout = LAYOUTS[family]
    model = teacher_model(teacher).double()
    inputs = _inputs(teacher, 4)
    labels = [0, 1, -1]
    scored = model if device == "cpu" else copy.deepcopy(model).to(device)
    importance = taylor_neuron_importance(scored, [{**inputs, "labels": torch.tensor(labels)}])
    rows = []
    for b in range(3):
        width = int(inputs["attention_mask"][b].sum())
        rows.append({k: v[b:b + 1, :width] for k, v in inputs.items()})
    layers = model.get_submodule(layout.layers)

    def fd(*neurons):
        """Σ over rows of the score of scaling all `neurons` (module, column, output?) together."""
        return sum(_row_score(model, rows[b], labels[b],
                              lambda e: [_scaled(m, c, e, o) for m, c, o in neurons]) for b in range(3))

    layer = layers[1]
    neuron = 5
    assert importance.ffn[1, neuron].item() == pytest.approx(
        fd((layer.get_submodule(layout.ffn_out), neuron, False)), rel=1e-4)
    head, unit = 2, 3
    j = head * (HIDDEN // HEADS) + unit
    (q, q_off), (k, k_off) = layout.query, layout.key
    expected = (fd((layer.get_submodule(q), q_off + j, True)) + fd((layer.get_submodule(k), k_off + j, True))
                + fd((layer.get_submodule(layout.attn_out), j, False)))
    assert importance.heads[1, head, unit].item() == pytest.approx(expected, rel=1e-4)
    dim = 7  # Eq. 8: every layer's input and the last layer's output
    last = layers[-1] if layout.final is None else model.get_submodule(layout.final)
    expected = sum(fd((layer, dim, False)) for layer in layers) + fd((last, dim, True))
    assert importance.hidden[dim].item() == pytest.approx(expected, rel=1e-4)
    for scores in (importance.hidden, importance.heads, importance.ffn):
        assert (scores > 1e-3 * scores.max()).double().mean() > 0.5  # not all near zero: a real ranking


def test_importance_does_not_depend_on_the_batch_shape(family_store, device):
    family, teacher, _ = family_store
    model = teacher_model(teacher).to(device)
    inputs, labels = _inputs(teacher, 6, batch=4), torch.tensor([1, -1, 0, -1])
    together = taylor_neuron_importance(model, [{**inputs, "labels": labels}])
    apart = []
    for b in range(4):
        width = int(inputs["attention_mask"][b].sum())
        apart.append({**{k: v[b:b + 1, :width] for k, v in inputs.items()}, "labels": labels[b:b + 1]})
    alone = taylor_neuron_importance(model, apart)
    for a, b in ((together.hidden, alone.hidden), (together.heads, alone.heads), (together.ffn, alone.ffn)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(a.abs().max()))


def test_default_build_writes_a_same_family_student_that_trains(family_store, tmp_path, pair_csv, device):
    """`students build tinybert --teacher T --store S` (no --init: etd-impt on the store) writes a
    student of the teacher's family, opened by the Auto classes, that trains with every objective
    (scored and trained on `device`)."""
    family, teacher, store = family_store
    out = tmp_path / "student"
    assert students_cli.main(["build", "tinybert", "--teacher", str(teacher), "--store", str(store),
                              "--layers", "2", "--hidden", "16", "--ffn", "24", "--out", str(out),
                              "--device", device]) == 0
    info = json.loads((out / "student.json").read_text())
    assert info["init"] == "etd-impt" and info["family"] == family_of(AutoConfig.from_pretrained(teacher)).name
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert type(model) is type(teacher_model(teacher)) and model.config.hidden_size == 16
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(teacher).get_vocab()
    assert students_cli.main(["train", "--store", str(store), "--student", str(out), "--out", str(tmp_path / "run"),
                              "--objective", "hsk,att,val", "--max-steps", "2", "--threads", "1", "--quiet",
                              "--eval-data", str(pair_csv), "--max-length", str(MAX_LEN), "--device", device]) == 0
    trained = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "student")
    assert type(trained) is type(model)


def test_unregistered_and_causal_models_are_refused(tmp_path, pair_csv, capsys):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(BERT_VOCAB),
                                             pad_token_id=0, bos_token_id=2, eos_token_id=3)).save_pretrained(folder)
    capsys.readouterr()
    code = hskcache_main(["extract", "--teacher", str(folder), "--data", str(pair_csv), "--student-layers", "1",
                          "--store", str(tmp_path / "s"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "'gpt2' is not a supported encoder family" in err and "modernbert" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "s").exists()
    for init in ("etd-rand", "random"):
        code = students_cli.main(["build", "tinybert", "--teacher", str(folder), "--init", init, "--layers", "1",
                                  "--hidden", "16", "--ffn", "16", "--heads", "2", "--out", str(tmp_path / "st")])
        assert code == 2 and "not a supported encoder family" in capsys.readouterr().err
        assert not (tmp_path / "st").exists()
    with pytest.raises(UserError, match="supported encoder family"):
        family_of("gpt2")


def test_rosita_serves_the_bert_layout_and_refuses_the_others_in_one_line(family_store, tmp_path, capsys, device):
    family, teacher, store = family_store
    code = students_cli.main(["build", "rosita", "--teacher", str(teacher), "--store", str(store), "--layers", "1",
                              "--heads", "2", "--ffn", "16", "--emb-rank", "8", "--out", str(tmp_path / "r"),
                              "--device", device])
    err = capsys.readouterr().err.strip()
    if family == "bert":
        assert code == 0 and type(load_student(tmp_path / "r")).__name__ == "RositaForSequenceClassification"
    else:
        assert code == 2 and len(err.splitlines()) == 1 and "use `students build tinybert`" in err
        assert not (tmp_path / "r").exists()


def test_a_teacher_without_post_softmax_attention_extracts_with_left_only(tmp_path, teacher_dir, pair_csv, capsys,
                                                                           device):
    """An attention implementation with no post-softmax probabilities (SDPA stands in for a family
    without an eager path): the strategies that rank by [CLS] attention are refused in one line
    naming `left`, and `left` stores the HSK of a plain forward (extracted on `device` in fp32,
    the reference on the CPU)."""
    from hskcache.teacher import loading as teacher_module

    load = teacher_module.load_model

    def without_attention(*args, **kwargs):
        model = load(*args, **kwargs)
        model.set_attn_implementation("sdpa")
        return model

    flags = ("--student-layers", 2, "--tokens", 4, "--width", 1.0, "--max-length", MAX_LEN, "--device", device,
             "--dtype", "fp32")
    with mock.patch.object(teacher_module, "load_model", without_attention):
        capsys.readouterr()
        for refused in (("--token-strategy", "att-nosep"), ("--token-strategy", "left", "--knowledge", "hsk,att")):
            code = hskcache_main(["extract", "--teacher", str(teacher_dir), "--data", str(pair_csv), "--store",
                                  str(tmp_path / "s"), "--quiet", *map(str, flags + refused)])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2 and "no post-softmax attention" in err[-1] and "--token-strategy left" in err[-1]
            assert not (tmp_path / "s").exists()
        run_extract(teacher_dir, pair_csv, tmp_path / "s", *flags, "--token-strategy", "left")
    texts_a, texts_b = read_csv(pair_csv)
    enc, tok = encode(teacher_dir, texts_a, texts_b)
    with torch.no_grad():
        out = teacher_model(teacher_dir)(**enc, output_hidden_states=True, output_attentions=True)
    store = hskcache.open_store(tmp_path / "s")
    got = store.get(np.arange(len(texts_a)))
    exp_pos, exp_hsk = expected_selection(enc, out, tok.sep_token_id, store.teacher_layers, 2, store.depth,
                                          4, "left", 1.0, "mag")
    np.testing.assert_array_equal(got["positions"].numpy(), exp_pos)
    np.testing.assert_allclose(got["hsk"].numpy(), exp_hsk, atol=2e-3, rtol=2e-3)


def test_electra_keeps_its_embedding_projection(tmp_path, capsys):
    """A factorised ELECTRA embedding (size 8) keeps its projection only while the width differs from it."""
    teacher = make_family_teacher(tmp_path / "teacher", "electra")
    argv = ["build", "tinybert", "--teacher", str(teacher), "--init", "etd-rand", "--layers", "1", "--ffn", "16"]
    assert students_cli.main([*argv, "--hidden", "8", "--out", str(tmp_path / "s8")]) == 2
    assert "equals the teacher's embedding size" in capsys.readouterr().err and not (tmp_path / "s8").exists()
    assert students_cli.main([*argv, "--hidden", "12", "--out", str(tmp_path / "s12")]) == 0
    config = AutoConfig.from_pretrained(tmp_path / "s12")
    assert (config.hidden_size, config.embedding_size) == (12, 8)
