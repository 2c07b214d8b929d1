"""MiniLMv2's multi-head self-attention relations (kinds `qq`, `kk`) against loops over plain HF forwards.

The reference never touches hskcache's relation code: each layer's queries and keys are recomputed by
hand from the layer's input (`output_hidden_states`) and the projection's weights, re-split into R
relation heads of d / R columns, and each relation row is softmax(q_r · x_r / √d_r) over the real
keys, coarsened to its top-k keys plus the rest (reference.py's loops)."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertTokenizerFast, ModernBertConfig

import hskcache
from conftest import WORDS
from hskcache.cli.main import main as hskcache_main
from reference import coarsened_row, ranked_rows, teacher_outputs, projection_relation_row
from helpers import MAX_LEN, check_online_matches_store, run_extract, tiny_student
from hskcache.kinds.relation import RelationRead

ROWS, KEYS = 5, 6
FLAGS = ("--student-layers", 2, "--tokens", 4, "--width", 0.25, "--knowledge", "hsk,att,val,qq,kk",
         "--att-layers", "pairs", "--att-rows", ROWS, "--att-keys", KEYS, "--token-strategy", "att-nosep")
N = 8  # examples checked
RELATION_KINDS = ("att", "val", "qq", "kk")


def reads(rows=None, keys=None):
    """Every relation kind at (rows, keys), None as stored (what `--att-read` gives the trainer)."""
    return {kind: RelationRead((rows, keys)) for kind in RELATION_KINDS}


def _texts(pair_csv):
    with open(pair_csv) as f:
        rows = list(csv.DictReader(f))
    return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows]


@pytest.fixture(scope="module", params=[2, 8], ids=["R2", "R8"])
def qk_store(request, teacher_dir, pair_csv, tmp_path_factory):
    """(R, store) of the 4-head, 32-wide BERT teacher with R relation heads (d_r = 16 and 4)."""
    out = tmp_path_factory.mktemp(f"qk{request.param}") / "store"
    run_extract(teacher_dir, pair_csv, out, *FLAGS, "--relation-heads", request.param)
    return request.param, out


def _bert_projections(model, hidden_states, layer):
    """Q and K of BERT layer `layer` (1-based) by hand: the layer's input times Wᵀ plus b."""
    attention = model.bert.encoder.layer[layer - 1].attention.self
    x = hidden_states[layer - 1].double()
    return {name: x @ getattr(attention, name).weight.double().T + getattr(attention, name).bias.double()
            for name in ("query", "key")}


def _check_rows(got, enc, out, sep_id, projections, heads, rows, keys, layers, strategy="att-nosep"):
    """Every stored qq/kk row of every example against the loop; returns how many rows had rest mass."""
    checked_rest = 0
    for b in range(enc["input_ids"].shape[0]):
        length = int(enc["attention_mask"][b].sum())
        for j, l in enumerate(layers):
            query = ranked_rows(enc, out, sep_id, b, l, rows, strategy)
            assert got["rel_positions"][b, j].tolist() == query + [-1] * (rows - len(query))
            for kind, name in (("qq", "query"), ("kk", "key")):
                vectors = projections[l][name][b]
                for r, q in enumerate(query):
                    dists = projection_relation_row(vectors, q, length, heads)  # the loop over R relation heads
                    for h in range(heads):
                        want_keys, want_probs, want_rest = coarsened_row(dists[h], length, keys)
                        assert got[f"{kind}_keys"][b, j, h, r].tolist() == want_keys + [-1] * (keys - len(want_keys))
                        assert got[f"{kind}_probs"][b, j, h, r, :len(want_probs)].tolist() == pytest.approx(
                            want_probs, abs=1e-3, rel=1e-3)  # fp16
                        assert got[f"{kind}_rest"][b, j, h, r].item() == pytest.approx(want_rest, abs=2e-3)
                        checked_rest += want_rest > 0.01
                for r in range(len(query), rows):  # empty query rows keep nothing
                    assert (got[f"{kind}_keys"][b, j, :, r] == -1).all()
                    assert (got[f"{kind}_rest"][b, j, :, r] == 0).all()
    return checked_rest


@pytest.mark.parametrize("rows,keys", [(None, None), (3, 2)], ids=["stored", "smaller"])
def test_stored_rows_match_loops(qk_store, teacher_dir, pair_csv, rows, keys, device, tmp_path):
    """qq/kk rows at the stored (rows, keys) and read exactly at fewer, for R = 2 and R = 8 relation heads of a
    4-head teacher; val keeps the teacher's own heads beside them. The store is extracted on `device` (the cpu
    case reads the module's; the cuda case extracts in the loops' fp32), the reference is a CPU forward."""
    heads, path = qk_store
    if device == "cuda":
        path = tmp_path / "store"
        run_extract(teacher_dir, pair_csv, path, *FLAGS, "--relation-heads", heads, "--device", device,
                    "--dtype", "fp32")
    store = hskcache.open_store(path)
    got = store.get(list(range(N)), kinds=reads(rows, keys))
    rows, keys = rows or ROWS, keys or KEYS
    assert got["qq_keys"].shape == got["kk_keys"].shape == (N, 2, heads, rows, keys)
    assert got["val_keys"].shape == got["att_keys"].shape == (N, 2, 4, rows, keys)
    texts_a, texts_b = _texts(pair_csv)
    enc, out, tok = teacher_outputs(teacher_dir, texts_a[:N], texts_b[:N], MAX_LEN)
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        projections = {l: _bert_projections(model, out.hidden_states, l) for l in (1, 2)}
    assert _check_rows(got, enc, out, tok.sep_token_id, projections, heads, rows, keys, (1, 2)) > 0


def test_relation_heads_default_to_the_teachers_and_are_recorded(qk_store, teacher_dir, pair_csv, tmp_path, capsys):
    """Without --relation-heads R is the teacher's head count (4); `inspect` shows R and the qq/kk arrays."""
    heads, path = qk_store
    run_extract(teacher_dir, pair_csv, tmp_path / "default", *FLAGS)
    got = hskcache.open_store(tmp_path / "default").get([0, 1], kinds=reads())
    assert got["qq_keys"].shape[2] == got["kk_keys"].shape[2] == 4
    capsys.readouterr()
    assert hskcache_main(["inspect", "--store", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["kinds"]["qq"]["relation_heads"] == info["config"]["kinds"]["kk"]["relation_heads"] == heads
    assert f"× {heads} heads × {ROWS} rows × {KEYS} keys" in info["kinds"]["qq"] and "× 4 heads" in info["kinds"]["val"]
    assert {"qq_keys", "qq_probs", "qq_rest", "kk_keys", "kk_probs", "kk_rest"} <= set(info["bytes"])
    assert hskcache_main(["inspect", "--store", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("kk") and f"× {heads} heads" in line for line in lines)
    assert any(line.split() == ["qq_probs", f"{info['bytes']['qq_probs']:,}"] for line in lines)


# A second family: ModernBERT keeps Q, K and V as three blocks of one fused Wqkv (after its attention norm).
MB_HEADS, MB_WIDTH = 4, 32


@pytest.fixture(scope="module")
def modernbert_teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modernbert")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tok = BertTokenizerFast(vocab=str(folder / "vocab.txt"))
    config = ModernBertConfig(vocab_size=len(tok), hidden_size=MB_WIDTH, num_attention_heads=MB_HEADS,
                              intermediate_size=48, num_hidden_layers=2, num_labels=2, max_position_embeddings=64,
                              initializer_range=0.2, global_attn_every_n_layers=2, local_attention=6, pad_token_id=0,
                              cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_fused_qkv_family_matches_loops(modernbert_teacher, pair_csv, tmp_path, device):
    """ModernBERT, R = 8 relation heads of its 4: Q and K are the first and second d columns of Wqkv applied to
    the normed layer input (before the rotary embedding, which the relation does not use); extracted on `device`
    in fp32, against a CPU forward."""
    run_extract(modernbert_teacher, pair_csv, tmp_path / "store", *FLAGS, "--relation-heads", 8, "--device", device,
                "--dtype", "fp32")
    got = hskcache.open_store(tmp_path / "store").get(list(range(N)), kinds=reads())
    texts_a, texts_b = _texts(pair_csv)
    tok = BertTokenizerFast.from_pretrained(modernbert_teacher)
    enc = tok(texts_a[:N], texts_b[:N], max_length=MAX_LEN, truncation=True, padding="max_length", return_tensors="pt")
    model = AutoModelForSequenceClassification.from_pretrained(modernbert_teacher, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True,
                    output_attentions=True)
        projections = {}
        for l in (1, 2):
            layer = model.model.layers[l - 1]
            qkv = layer.attn.Wqkv(layer.attn_norm(out.hidden_states[l - 1])).double()
            projections[l] = {"query": qkv[..., :MB_WIDTH], "key": qkv[..., MB_WIDTH:2 * MB_WIDTH]}
    assert _check_rows(got, enc, out, tok.sep_token_id, projections, 8, ROWS, KEYS, (1, 2)) > 0


def _relation_rows_by_hand(x, positions, attention_mask, heads):
    """softmax(x_r x_rᵀ / √d_r) over the real keys for R = `heads` column blocks of x (B, S, d), at query rows
    `positions` (B, N; -1 empty gives zeros): (B, R, N, S). Plain reshapes, not hskcache's helpers."""
    batch, seq, width = x.shape
    d = width // heads
    blocks = x.reshape(batch, seq, heads, d).permute(0, 2, 1, 3)
    scores = blocks @ blocks.transpose(-1, -2) / d ** 0.5
    probs = torch.softmax(scores.masked_fill(~attention_mask.bool()[:, None, None, :], float("-inf")), dim=-1)
    out = torch.zeros(batch, heads, positions.shape[1], seq)
    for b in range(batch):
        for n, p in enumerate(positions[b].tolist()):
            if p >= 0:
                out[b, :, n] = probs[b, :, p]
    return out


@pytest.mark.parametrize("heads,hidden,objective", [(2, 32, "qq,kk,val"), (3, 24, "qq,kk")], ids=["2heads", "3heads"])
def test_student_with_other_heads_learns_from_the_relations(qk_store, teacher_dir, tmp_path, heads, hidden, objective,
                                                            device):
    """Step 1 of `--objective qq,kk,val` (2 student heads, 4 teacher heads) and `qq,kk` (3 student heads, which do
    not divide the teacher's 4, so no att/val): the student's own queries and keys, from its HF modules, re-split into
    the store's R relation heads; val averages teacher heads as before. The trainer runs on `device` in fp32, the
    hand computation on the CPU."""
    from students import cli
    from students.losses import distribution_loss

    relation_heads, path = qk_store
    folder = tmp_path / "student"
    tiny_student(teacher_dir, folder, hidden=hidden, heads=heads)
    assert cli.main(["train", "--store", str(path), "--student", str(folder), "--out", str(tmp_path / "run"),
                     "--objective", objective, "--att-read", "4,3", "--max-steps", "1", "--log-every", "1",
                     "--hsk-batch-size", "8", "--pred-batch-size", "8", "--threads", "1", "--select-on", "last",
                     "--quiet", "--device", device, "--dtype", "fp32"]) == 0

    store = hskcache.open_store(path)
    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").train()
    batch = next(iter(store.batches(8, seed=0, epoch=0, kinds=reads(4, 3))))
    mask = batch["attention_mask"]
    expected = torch.zeros(())
    with torch.no_grad():
        out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                    output_hidden_states=True)
        for j, l in enumerate((1, 2)):
            rows = batch["rel_positions"][:, j]
            attention = model.bert.encoder.layer[l - 1].attention.self
            x = out.hidden_states[l - 1]
            student = {"qq": _relation_rows_by_hand(attention.query(x), rows, mask, relation_heads),
                       "kk": _relation_rows_by_hand(attention.key(x), rows, mask, relation_heads),
                       "val": _relation_rows_by_hand(attention.value(x), rows, mask, heads)}
            for kind in objective.split(","):
                expected += distribution_loss("kl", batch[f"{kind}_keys"][:, j], batch[f"{kind}_probs"][:, j],
                                              batch[f"{kind}_rest"][:, j], rows, student[kind])
    first = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert first["stage"] == "hsk" and first["loss"] == pytest.approx(expected.item(), rel=1e-4)


def test_relation_heads_that_do_not_divide_are_one_line(qk_store, teacher_dir, pair_csv, tmp_path, capsys):
    """R must divide the teacher's query width (32) at extraction, before anything is written, and the student's
    (15: 3 heads of 5) at training."""
    from students import cli
    from students.models.student import build_tinybert

    for bad in ("3", "0"):
        capsys.readouterr()
        args = ["extract", "--teacher", str(teacher_dir), "--data", str(pair_csv), "--store", str(tmp_path / bad),
                "--max-length", str(MAX_LEN), "--quiet", *map(str, FLAGS), "--relation-heads", bad]
        assert hskcache_main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--relation-heads" in err and "Traceback" not in err
        assert not (tmp_path / bad).exists()
    relation_heads, path = qk_store
    build_tinybert(teacher_dir, layers=2, hidden=15, ffn=32, heads=3, out_dir=tmp_path / "s15")
    capsys.readouterr()
    assert cli.main(["train", "--store", str(path), "--student", str(tmp_path / "s15"), "--out", str(tmp_path / "r"),
                     "--objective", "qq", "--max-steps", "1", "--threads", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{relation_heads} relation heads" in err and "width 15" in err
    assert not (tmp_path / "r").exists()


def test_budget_counts_qq_and_kk(qk_store, capsys):
    """Per example: the query rows once (int16), att and val at the teacher's 4 heads, qq and kk at R relation heads,
    each uint8 keys + fp16 probabilities per kept key and an fp16 rest per row."""
    relation_heads, path = qk_store
    layers = 2
    row = layers * ROWS * 2 + layers * ROWS * (KEYS * 3 + 2) * (2 * 4 + 2 * relation_heads)
    capsys.readouterr()
    assert hskcache_main(["budget", "--store", str(path), "--json"]) == 0
    [own] = json.loads(capsys.readouterr().out)
    store = hskcache.open_store(path)
    padded = -(-store.num_examples // store.chunk_rows) * store.chunk_rows
    assert own["hskcache_group_bytes"] == {"relations": padded * row}
    # plan mode: 12 teacher heads, R = 8, 9 rows × 16 keys at the last layer
    assert hskcache_main(["budget", "--plan", "--examples", "1", "--seq-len", "64", "--student-layers", "3",
                          "--teacher-width", "384", "--configs", "1,9,0.1", "--knowledge", "hsk,att,val,qq,kk",
                          "--att-heads", "12", "--relation-heads", "8", "--att-rows", "9", "--att-keys", "16",
                          "--json"]) == 0
    [plan] = json.loads(capsys.readouterr().out)
    assert plan["hskcache_group_bytes"]["relations"] == 9 * 2 + 9 * (16 * 3 + 2) * (2 * 12 + 2 * 8)


def test_online_baseline_computes_the_stores_rows(qk_store, teacher_dir, pair_csv, tmp_path, device):
    """`students train --teacher ... --knowledge ...,qq,kk --relation-heads R`: the online baseline computes the
    store's qq/kk rows live (its settings carry R), so a 3-head student's losses are the store run's."""
    from students.models.student import build_tinybert

    relation_heads, path = qk_store
    build_tinybert(teacher_dir, layers=2, hidden=24, ffn=32, heads=3, out_dir=tmp_path / "s")
    check_online_matches_store(path, teacher_dir, pair_csv, [*FLAGS, "--relation-heads", relation_heads,
                                                             "--max-length", MAX_LEN],
                               tmp_path / "s", "qq,kk", tmp_path, device)
