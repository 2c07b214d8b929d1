"""Attention and value relations through the store, against loops over a plain HF forward."""
from __future__ import annotations

import csv

import pytest
import torch
from transformers import AutoModelForSequenceClassification

import hskcache
from hskcache.errors import UserError
from hskcache.kinds.relation import RelationRead
from reference import coarsened_row, ranked_rows, teacher_outputs, projection_relation_row
from helpers import check_online_matches_store, quiet_runtime, run_extract, tiny_student

MAX_LEN = 20
ATT_FLAGS = ("--student-layers", 2, "--tokens", 4, "--width", 0.25, "--max-length", MAX_LEN, "--knowledge", "hsk,att,val",
             "--att-layers", "pairs", "--att-rows", 5, "--att-keys", 6, "--token-strategy", "att-nosep")


def reads(rows, keys):
    """Both relation kinds at (rows, keys), None as stored (what `--att-read` gives the trainer)."""
    return {kind: RelationRead((rows, keys)) for kind in ("att", "val")}


def relation_row_bytes(store) -> int:
    """Bytes per example of the store's relation arrays (budget group `relations`)."""
    from hskcache.store.shape import StoreShape
    return sum(a.row_bytes for a in StoreShape.of_store(store.meta).arrays() if a.group == "relations")


def _texts(pair_csv):
    with open(pair_csv) as f:
        rows = list(csv.DictReader(f))
    return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows]


@pytest.fixture(scope="module")
def att_store(teacher_dir, pair_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("att") / "store"
    run_extract(teacher_dir, pair_csv, out, *ATT_FLAGS)
    return out


@pytest.mark.parametrize("rows,keys", [(None, None), (3, 2)])
def test_store_round_trip_matches_loops(att_store, teacher_dir, pair_csv, rows, keys, device, tmp_path):
    """The store extracted on `device` (the cpu case reads the module's store; the cuda case extracts in the loops'
    fp32) against loops over a CPU forward."""
    if device == "cuda":
        att_store = tmp_path / "store"
        run_extract(teacher_dir, pair_csv, att_store, *ATT_FLAGS, "--device", device, "--dtype", "fp32")
    store = hskcache.open_store(att_store)
    spec = store.kinds["att"]
    assert list(store.kinds) == ["hsk", "att", "val"] and store.kinds["val"] == spec
    assert spec.layers == (1, 2) and spec.student_layers == (1, 2)
    n = 8
    got = store.get(list(range(n)), kinds=reads(rows, keys))
    rows, keys = rows or spec.rows, keys or spec.keys
    texts_a, texts_b = _texts(pair_csv)
    enc, out, tok = teacher_outputs(teacher_dir, texts_a[:n], texts_b[:n], MAX_LEN)
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="eager").eval()
    heads = model.config.num_attention_heads
    for b in range(n):
        length = int(enc["attention_mask"][b].sum())
        for j, l in enumerate(spec.layers):
            query = ranked_rows(enc, out, tok.sep_token_id, b, l, rows, "att-nosep")
            assert got["rel_positions"][b, j].tolist() == query + [-1] * (rows - len(query))
            with torch.no_grad():
                values = model.bert.encoder.layer[l - 1].attention.self.value(out.hidden_states[l - 1][b])
            for r, q in enumerate(query):
                relations = projection_relation_row(values, q, length, heads)
                for h in range(heads):
                    for kind, dist in (("att", out.attentions[l - 1][b, h, q]), ("val", relations[h])):
                        want_keys, want_probs, want_rest = coarsened_row(dist, length, keys)
                        got_keys = got[f"{kind}_keys"][b, j, h, r].tolist()
                        assert got_keys == want_keys + [-1] * (keys - len(want_keys))
                        assert got[f"{kind}_probs"][b, j, h, r, :len(want_probs)].tolist() == pytest.approx(
                            want_probs, abs=1e-3, rel=1e-3)  # fp16
                        assert got[f"{kind}_rest"][b, j, h, r].item() == pytest.approx(want_rest, abs=2e-3)


def test_relation_reads_are_checked(att_store, task):
    store = hskcache.open_store(att_store)
    with pytest.raises(UserError, match="more than the store holds"):
        store.get([0], kinds=reads(6, None))
    with pytest.raises(UserError, match="holds no att knowledge"):
        hskcache.open_store(task.store).get([0], kinds=reads(None, None))
    assert "att_keys" not in store.get([0])  # relations are read only when asked for


def test_budget_counts_relation_bytes(att_store):
    from hskcache.store.shape import StoreShape
    store = hskcache.open_store(att_store)
    # per example: positions int16 (N_A, R), and per kind uint8 keys + fp16 probs (N_A, H, R, k), fp16 rest (N_A, H, R)
    expected = 2 * 5 * 2 + 2 * (2 * 4 * 5 * 6 * (1 + 2) + 2 * 4 * 5 * 2)
    assert relation_row_bytes(store) == expected
    shape = StoreShape.of_store(store.meta)
    assert shape.bytes_by_group(10)["relations"] == expected * shape.rows_per_chunk(10) * -(-10 // shape.rows_per_chunk(10))
    # on disk (estimated): keys, probabilities and rest mass each by their measured ratio, att and val alike
    from hskcache.store.shape import estimated_disk
    measured = {"keys": 1.66, "probs": 1.29, "rest": 1.38}  # docs/benchmarks.md, the relation arrays
    padded = shape.rows_per_chunk(10) * -(-10 // shape.rows_per_chunk(10))
    raw = shape.bytes_by_array(10)
    disk = estimated_disk(shape, raw)
    for kind in ("att", "val"):
        for part, ratio in measured.items():
            assert raw[f"{kind}_{part}"] == padded * {"keys": 2 * 4 * 5 * 6, "probs": 2 * 4 * 5 * 6 * 2,
                                                      "rest": 2 * 4 * 5 * 2}[part]
            assert disk[f"{kind}_{part}"] == round(raw[f"{kind}_{part}"] / ratio)
    assert disk["rel_positions"] == round(padded * 2 * 5 * 2 / 2.43)


def test_first_relation_loss_matches_an_hf_forward(att_store, teacher_dir, tmp_path, device):
    """Step 1 of `--objective hsk,att:0.5,val`: HSK MSE + 0.5 Att-KL + Val-KL of the untrained
    student, its attention taken from HF's eager attentions and its values from the value
    module (the trainer computes both from hooked projections, on `device` in fp32; the
    hand computation on the CPU). 2 student heads, 4 teacher heads."""
    import json
    from transformers import AutoModelForSequenceClassification

    from hskcache.selection.attention import gather_rows, relation, split_heads
    import numpy as np
    from reference import hsk_mse
    from students.losses import distribution_loss
    from students.training.objectives import parse_objective
    from students.training.trainer import TrainConfig, train

    folder = tmp_path / "student"
    tiny_student(teacher_dir, folder)
    cfg = TrainConfig(student=str(folder), out=str(tmp_path / "run"), objective=parse_objective("hsk,att:0.5,val"),
                      reads=reads(4, 3), max_steps=1, log_every=1, hsk_batch_size=8, select_on="last",
                      pred_batch_size=8, runtime=quiet_runtime(device, "fp32"))
    train(cfg, hskcache.open_store(att_store))

    store = hskcache.open_store(att_store)
    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").train()
    batch = next(iter(store.batches(8, seed=0, epoch=0, kinds=reads(4, 3))))
    with torch.no_grad():
        out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                    output_hidden_states=True, output_attentions=True)
        expected = hsk_mse([h.numpy() for h in out.hidden_states[:3]], batch["positions"].numpy(),
                           batch["hsk_mask"].numpy(), batch["hsk"].numpy(), np.eye(32), "zero-fill")
        for j, l in enumerate((1, 2)):
            rows = batch["rel_positions"][:, j]
            att = gather_rows(out.attentions[l - 1], rows)
            v = split_heads(model.bert.encoder.layer[l - 1].attention.self.value(out.hidden_states[l - 1]), 2)
            val = relation(gather_rows(v, rows), v, batch["attention_mask"])
            for kind, student, weight in (("att", att, 0.5), ("val", val, 1.0)):
                expected += weight * distribution_loss("kl", batch[f"{kind}_keys"][:, j], batch[f"{kind}_probs"][:, j],
                                                       batch[f"{kind}_rest"][:, j], rows, student)
    first = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert first["stage"] == "hsk" and first["loss"] == pytest.approx(expected.item(), rel=1e-4)


def test_online_baseline_computes_the_stores_relations(att_store, teacher_dir, pair_csv, tmp_path, device):
    """`students train --teacher ... --knowledge hsk,att,val`: the same relation rows, live (on `device`, in the
    store's fp32), so the same losses."""
    from hskcache.teacher.config import build_config
    from students.models.student import build_tinybert
    from students.training.online import OnlineSource

    flags = dict(zip((str(f)[2:].replace("-", "_") for f in ATT_FLAGS[::2]), ATT_FLAGS[1::2]))
    online = OnlineSource(build_config({**flags, "teacher": str(teacher_dir), "data": str(pair_csv),
                                        "batch_size": 8, "device": device, "dtype": "fp32"}))
    store = hskcache.open_store(att_store)
    assert online.kinds == store.kinds
    live, stored = online.get(range(6), kinds=reads(3, 2)), store.get(range(6), kinds=reads(3, 2))
    for name in ("rel_positions", "att_keys", "val_keys"):
        assert torch.equal(live[name], stored[name]), name
    for name in ("att_probs", "att_rest", "val_probs", "val_rest"):
        torch.testing.assert_close(live[name], stored[name], atol=2e-3, rtol=2e-3)  # fp16 of live floats

    build_tinybert(teacher_dir, layers=2, hidden=32, ffn=32, heads=2, out_dir=tmp_path / "s")
    check_online_matches_store(att_store, teacher_dir, pair_csv, ATT_FLAGS, tmp_path / "s", "att,val", tmp_path, device)


def test_relation_objective_needs_relations(att_store, task, teacher_dir, tmp_path):
    from students.models.student import build_tinybert
    from students.training.objectives import parse_objective
    from students.training.trainer import TrainConfig, train

    build_tinybert(task.teacher, layers=2, hidden=16, ffn=32, heads=2, out_dir=tmp_path / "s")
    cfg = TrainConfig(student=str(tmp_path / "s"), out=str(tmp_path / "run"), objective=parse_objective("att"),
                      runtime=quiet_runtime())
    with pytest.raises(UserError, match="needs att knowledge"):
        train(cfg, hskcache.open_store(task.store))
    build_tinybert(teacher_dir, layers=2, hidden=24, ffn=32, heads=3, out_dir=tmp_path / "s3")
    with pytest.raises(UserError, match="3 attention heads, which do not divide the teacher's 4"):
        train(TrainConfig(student=str(tmp_path / "s3"), out=str(tmp_path / "run3"),
                          objective=parse_objective("val"), runtime=quiet_runtime()), hskcache.open_store(att_store))
    with pytest.raises(UserError, match="unknown objective"):
        parse_objective("hsk,attention")


def test_budget_plan_and_store_count_relations(att_store, capsys):
    import json

    from hskcache.cli.main import main

    assert main(["budget", "--store", str(att_store), "--json"]) == 0
    [own] = json.loads(capsys.readouterr().out)
    store = hskcache.open_store(att_store)
    rows = store.num_examples
    chunk = store.chunk_rows
    padded = -(-rows // chunk) * chunk
    assert own["hskcache_group_bytes"] == {"relations": padded * relation_row_bytes(store)}
    # plan mode: 2 kinds × 12 heads × 9 rows × (16 keys × 3 B + 2 B) + 9 int16 positions per example
    assert main(["budget", "--plan", "--examples", "1000", "--seq-len", "128", "--student-layers", "6",
                 "--teacher-width", "768", "--configs", "1,9,0.1", "--knowledge", "hsk,att,val", "--att-heads", "12",
                 "--att-rows", "9", "--att-keys", "16", "--json"]) == 0
    [plan] = json.loads(capsys.readouterr().out)
    assert plan["hskcache_group_bytes"]["relations"] % (2 * 12 * 9 * (16 * 3 + 2) + 2 * 9) == 0
    assert plan["hskcache_group_bytes"]["relations"] >= 1000 * (2 * 12 * 9 * (16 * 3 + 2) + 2 * 9)
    assert main(["budget", "--plan", "--examples", "10", "--seq-len", "16", "--student-layers", "2",
                 "--teacher-width", "32", "--att-rows", "4"]) == 2
    assert "only apply with --knowledge" in capsys.readouterr().err
