"""One store serves students of any depth, width and head count (issue 20, item 4): each student reads the
stored pairs of its own layer map g(l, L_top), checked against a plain HF forward of the teacher and against
the store's full read indexed by hand; a depth the stored layers do not cover is refused in one line."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import hskcache
from hskcache.cli.main import main as hskcache_main
from hskcache.errors import UserError
from hskcache.kinds import KINDS, Student
from hskcache.kinds.relation import RelationRead
from hskcache.selection.hsk import layer_map
from conftest import make_teacher
from helpers import MAX_LEN, check_against_reference, quiet_runtime, read_csv, run_extract, tiny_student
from reference import expected_selection, hsk_mse, teacher_outputs
from students import cli
from students.models.student import load_student
from students.training.trainer import TrainConfig, train

TEACHER_LAYERS = 6
TOKENS = 5
EVERY = ",".join(map(str, range(TEACHER_LAYERS + 1)))


@pytest.fixture(scope="module")
def stores(tmp_path_factory, single_csv):
    """A 6-layer teacher and three stores of it: every teacher layer (relations of the HSK's pairs, qq in
    2 relation heads), the old kind for a 2-layer student (layers 0,3,6, relations of its pairs) and one
    for a 3-layer student with MiniLM's last-layer relation."""
    root = tmp_path_factory.mktemp("any-depth")
    teacher = make_teacher(root / "teacher", layers=TEACHER_LAYERS)
    common = ("--tokens", TOKENS, "--att-rows", 4, "--att-keys", 6)
    paths = {"every": root / "every", "two": root / "two", "last": root / "last"}
    run_extract(teacher, single_csv, paths["every"], "--teacher-layers", EVERY, "--knowledge", "hsk,att,qq",
                "--att-layers", "pairs", "--relation-heads", 2, *common)
    run_extract(teacher, single_csv, paths["two"], "--student-layers", 2, "--knowledge", "hsk,att",
                "--att-layers", "pairs", *common)
    run_extract(teacher, single_csv, paths["last"], "--student-layers", 3, "--knowledge", "hsk,att",
                "--att-layers", "last", *common)
    return teacher, paths


def relations(*names, rows=None, keys=None):
    return {name: RelationRead((rows, keys)) for name in names}


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_every_layer_store_reads_each_students_own_map(stores, single_csv, depth):
    """A student of `depth` layers reads teacher layers g(l, 6), l = 0..depth (depth 4: 0,2,3,5,6, not evenly
    spaced): the HF forward's states at those layers and the positions a direct extraction for that student ranks
    (their rank layers are the layers themselves), and the full read's pairs indexed by hand, relations too."""
    teacher, paths = stores
    store = hskcache.open_store(paths["every"])
    texts, _ = read_csv(single_csv)
    rows = np.arange(len(texts))
    wanted = layer_map(depth, TEACHER_LAYERS)
    full = store.get(rows, kinds=relations("att", "qq"))  # the store's own depth: all 7 pairs, relations 1..6
    got = store.get(rows, kinds=relations("att", "qq"), student_layers=depth)

    assert got["positions"].shape[1] == depth + 1  # N^D counts the student's pairs: all of its map by default
    for name in ("positions", "hsk", "hsk_mask"):
        assert torch.equal(got[name], full[name][:, list(wanted)]), name
    relation_rows = [layer - 1 for layer in wanted[1:]]  # --att-layers pairs: teacher layers 1..6 at rows 0..5
    for name in ("rel_positions", "att_keys", "att_probs", "att_rest", "qq_keys", "qq_probs", "qq_rest"):
        assert torch.equal(got[name], full[name][:, relation_rows]), name

    enc, out, tok = teacher_outputs(teacher, texts, None, MAX_LEN)
    positions, hsk = expected_selection(enc, out, tok.sep_token_id, wanted, TEACHER_LAYERS, depth + 1, TOKENS,
                                        "att-nosep-top", 1.0, "mag")
    np.testing.assert_array_equal(got["positions"].numpy(), positions)
    np.testing.assert_allclose(got["hsk"].numpy(), hsk, atol=2e-3, rtol=2e-3)

    top = store.get(rows, depth=2, tokens=3, student_layers=depth)  # the top 2 pairs of its map, 3 tokens
    assert torch.equal(top["hsk"], full["hsk"][:, list(wanted[-2:]), :3])

    spec, student = store.kinds["att"], Student.of(store.meta, depth)
    assert KINDS["att"].student_pairs(spec, student, "test") == (tuple(relation_rows), tuple(range(1, depth + 1)))


def test_students_of_two_shapes_read_the_same_rows(stores):
    """Width and head count do not enter a read: the pairs the maps of a 2- and a 4-layer student share
    (teacher layers 0, 3, 6) are the same rows, and every student depth up to L_top is served."""
    _, paths = stores
    store = hskcache.open_store(paths["every"])
    two, four = (store.get(range(6), student_layers=d) for d in (2, 4))
    for a, b in ((0, 0), (1, 2), (2, 4)):  # g(l, 6) of the 2-layer student: 0,3,6; of the 4-layer: 0,2,3,5,6
        assert torch.equal(two["hsk"][:, a], four["hsk"][:, b])
    # the HSK serves any depth; its `pairs` relations up to 2 L_top (deeper, layer 1 maps to teacher layer 0)
    assert Student.of(store.meta).served() == "serves student depths 1-12 (L_top 6)"
    hsk_alone = replace(Student.of(store.meta), records={"hsk": store.meta.kinds["hsk"]})
    assert hsk_alone.served() == "serves student depths 1-6 and deeper (L_top 6)"


@pytest.mark.parametrize("depth", [1, 3, 6, 7, 8])
def test_streamed_batches_read_the_same_pairs_as_get(stores, depth):
    """`batches` (what the trainer reads) gives each student the pairs of its own map, as `get` does, at every
    depth, deeper than L_top too (7 layers: g(l, 6) = 0,1,2,3,3,4,5,6, whose top 7 pairs (the store's N^D) repeat
    teacher layer 3, so the read has as many pairs as the store and only the pairs tell it apart): both against
    the full read indexed by hand."""
    _, paths = stores
    store = hskcache.open_store(paths["every"])
    rows = np.arange(store.num_examples)
    full = store.get(rows, kinds=relations("att"))
    student_map = list(layer_map(depth, TEACHER_LAYERS))
    wanted = student_map[-(TEACHER_LAYERS + 1):]  # the top N^D = 7 pairs of its map, at most L'' + 1
    streamed = next(store.batches(len(rows), shuffle=False, kinds=relations("att"), student_layers=depth, threads=1))
    direct = store.get(rows, kinds=relations("att"), student_layers=depth)
    for name in ("positions", "hsk", "hsk_mask"):
        assert torch.equal(streamed[name], full[name][:, wanted]), name
        assert torch.equal(direct[name], full[name][:, wanted]), name
    for name in ("att_keys", "att_probs", "att_rest"):
        expected = full[name][:, [layer - 1 for layer in student_map[1:]]]  # relations: its layers 1..L
        assert torch.equal(streamed[name], expected) and torch.equal(direct[name], expected), name


@pytest.mark.parametrize("name,kinds", [("two", ("att",)), ("two", ()), ("every", ("att", "qq"))])
def test_the_depths_a_store_says_it_serves_are_those_it_reads(stores, name, kinds):
    """Every depth up to well past `deepest` (the HSK alone of the 0,3,6 store serves 1-2 and again from 24 on,
    where the top 3 pairs of the map are 5,6,6 and then 6,6,6; its pairs relations only 1-2): a read at the
    store's N^D succeeds exactly where `served_depths` (and, beyond `deepest`, `deepest`) says."""
    _, paths = stores
    store = hskcache.open_store(paths[name])
    records = {k: v for k, v in store.meta.kinds.items() if k not in {"att", "qq"} - set(kinds)}
    student = replace(Student.of(store.meta), records=records)
    layers = student.layers
    served = set(layers.served_depths(student.covered))
    for depth in range(1, layers.deepest + 8):
        try:
            store.get(range(2), kinds=relations(*kinds), student_layers=depth)
            read = True
        except UserError:
            read = False
        assert read == (depth in served if depth <= layers.deepest else layers.deepest in served), depth
    assert (24 in served and 23 not in served) == ((name, kinds) == ("two", ()))


def test_served_depths_count_the_relations_too(tmp_path, single_csv, capsys):
    """A 1-layer student's store whose relations are the HSK's pairs (teacher layer 6 only): its HSK (N^D 1, the
    top pair) serves any depth, its relations only depth 1. `hskcache inspect` says depth 1, the depth a read with
    the relations gets, and the refusal of a 2-layer student's relation read names the same depths."""
    teacher = make_teacher(tmp_path / "teacher", layers=TEACHER_LAYERS)
    path = tmp_path / "store"
    run_extract(teacher, single_csv, path, "--student-layers", 1, "--depth", 1, "--knowledge", "hsk,att",
                "--att-layers", "pairs", "--tokens", TOKENS)
    store = hskcache.open_store(path)
    assert hskcache_main(["inspect", str(path)]) == 0
    assert "serves student depths 1 (L_top 6)" in capsys.readouterr().out
    assert store.get(range(2), student_layers=2)["hsk"].shape[1] == 1  # the HSK alone serves it: its top pair
    with pytest.raises(UserError, match=r"it serves student depths 1 \(L_top 6\);"):
        store.get(range(2), kinds=relations("att"), student_layers=2)


@pytest.mark.parametrize("depth,hidden,heads", [(2, 32, 2), (4, 16, 4)])
def test_first_step_loss_of_each_student_matches_a_hand_computation(stores, tmp_path, depth, hidden, heads):
    """Two students of other depths, widths and head counts than the teacher (6 layers, width 32, 4 heads) train
    from the one store: the first HSK step's loss is the MSE of the student's layers 0..L'' (projected by W) against
    the pairs of its own map, by loops (`reference.hsk_mse`); the relations (att in the student's heads, qq in the
    store's 2 relation heads) train too."""
    _, paths = stores
    folder = tiny_student(paths["every"].parent / "teacher", tmp_path / "student", hidden=hidden, heads=heads,
                          layers=depth)
    store = hskcache.open_store(paths["every"])
    cfg = TrainConfig(student=str(folder), out=str(tmp_path / "run"), max_steps=1, log_every=1, hsk_lr=3e-3,
                      pred_lr=3e-3, hsk_batch_size=16, pred_batch_size=16, select_on="last",
                      runtime=quiet_runtime("cpu", "fp32"))
    train(cfg, store)
    batch = next(iter(store.batches(16, seed=0, epoch=0)))  # the trainer's first batch, every stored pair
    wanted = list(layer_map(depth, TEACHER_LAYERS))  # its own map's pairs, indexed by hand
    model = load_student(folder)
    with torch.no_grad():
        states = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                       output_hidden_states=True).hidden_states
    torch.manual_seed(cfg.seed)  # the trainer draws W (d_S -> d_T, no bias) right after seeding; identity at d_S = d_T
    weight = np.eye(hidden) if hidden == 32 else torch.nn.Linear(hidden, 32, bias=False).weight.detach().numpy().T
    pairs = (batch[k][:, wanted].numpy() for k in ("positions", "hsk_mask", "hsk"))
    expected = hsk_mse([s.numpy() for s in states], *pairs, weight, "zero-fill")
    [first] = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
               if json.loads(line)["stage"] == "hsk"]
    assert first["loss"] == pytest.approx(expected, rel=1e-5)

    relation_cfg = replace(cfg, out=str(tmp_path / "relations"), objective=(("att", 1.0), ("qq", 1.0)))
    train(relation_cfg, store)
    logged = [json.loads(line) for line in (tmp_path / "relations" / "log.jsonl").read_text().splitlines()]
    assert logged[0]["stage"] == "hsk" and np.isfinite(logged[0]["loss"]) and logged[0]["loss"] > 0


def test_a_store_for_one_depth_serves_the_depths_its_layers_cover(stores, single_csv):
    """The old store (2-layer student: teacher layers 0,3,6) reads as before for its own depth (against the HF
    forward), serves a 1-layer student its map 0,6, reads the top pair of any map, and refuses the rest in one line
    naming the depths it serves and the extract flag that serves any."""
    teacher, paths = stores
    check_against_reference(teacher, single_csv, paths["two"], [0, 3, 6], 3, TOKENS, "att-nosep-top", 1.0, "mag")
    store = hskcache.open_store(paths["two"])
    own = store.get(range(8), kinds=relations("att"))
    assert all(torch.equal(own[k], v) for k, v in store.get(range(8), kinds=relations("att"), student_layers=2).items())
    one = store.get(range(8), kinds=relations("att"), student_layers=1)
    assert torch.equal(one["hsk"], own["hsk"][:, [0, 2]])  # g(l, 6) for l = 0, 1: teacher layers 0 and 6
    assert torch.equal(one["att_probs"], own["att_probs"][:, [1]])  # its layer 1 <- teacher layer 6
    top = store.get(range(8), depth=1, student_layers=4)  # the top pair of every map is L_top
    assert torch.equal(top["hsk"], own["hsk"][:, [2]])

    assert Student.of(store.meta).served() == "serves student depths 1-2 (L_top 6)"
    with pytest.raises(UserError, match=r"^--hsk stored: a 4-layer student reads the top 3 pairs of its map "
                                        r"g\(l, 6\) = 0,2,3,5,6, .*serves student depths 1-2 .*--teacher-layers "
                                        + EVERY) as refused:
        store.get(range(2), student_layers=4)
    assert "\n" not in str(refused.value)
    with pytest.raises(UserError, match="a 4-layer student matches its layers 1..4 to teacher layers 2,3,5,6 "
                                        r"\(--att-layers pairs"):
        store.get(range(2), depth=1, kinds=relations("att"), student_layers=4)


def test_last_layer_relations_serve_any_depth(stores):
    """MiniLM's relation (`--att-layers last`: the teacher's last layer to the student's last) is depth-free:
    a 5-layer student reads the same rows as the store's own 3-layer one, matched to its layer 5."""
    _, paths = stores
    store = hskcache.open_store(paths["last"])
    own = store.get(range(8), kinds=relations("att"))
    five = store.get(range(8), depth=1, kinds=relations("att"), student_layers=5)
    for name in ("rel_positions", "att_keys", "att_probs", "att_rest"):
        assert torch.equal(five[name], own[name]), name
    spec = store.kinds["att"]
    assert KINDS["att"].student_pairs(spec, Student.of(store.meta, 5), "test") == ((0,), (5,))


def test_training_an_uncovered_depth_is_refused_in_one_line(stores, tmp_path, capsys):
    """`students train` with a 4-layer student on the store of a 2-layer one: exit 2 and one line naming the depths
    the store serves and the extract flag; `hskcache inspect` and `hskcache budget --store` say which depths a
    store serves."""
    teacher, paths = stores
    folder = tiny_student(teacher, tmp_path / "student", layers=4)
    code = cli.main(["train", "--store", str(paths["two"]), "--student", str(folder), "--out", str(tmp_path / "run"),
                     "--quiet", "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "serves student depths 1-2" in err and f"--teacher-layers {EVERY}" in err
    assert not (tmp_path / "run" / "log.jsonl").exists()

    for name, served in (("two", "1-2"), ("every", "1-12")):
        for command in ("inspect", "budget"):  # budget: with the bytes of the store's own configuration
            assert hskcache_main([command, *(["--store"] if command == "budget" else []), str(paths[name])]) == 0
            assert f"serves student depths {served} (L_top 6)" in capsys.readouterr().out, command


def test_a_student_of_no_layers_is_refused_naming_the_fix(stores):
    _, paths = stores
    with pytest.raises(UserError, match=r"^a student has at least 1 layer, got 0; read the store for a student of 1 "
                                        r"or more layers") as refused:
        hskcache.open_store(paths["every"]).get(range(2), student_layers=0)
    assert "\n" not in str(refused.value)
