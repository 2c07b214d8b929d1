"""The training loop on a tiny store: loss wiring, resume, the prediction-only baseline."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hskcache
from hskcache.kinds.hsk import HSKRead
from hskcache.options import make
from hskcache.storage.packed import expand
from students.training.defaults import prediction_objective
from reference import hsk_mse
from helpers import quiet_runtime
from students.losses import prediction_loss
from students.models.student import build_tinybert, load_student
from students.stages import HSK, PRED
from students.training.trainer import TrainConfig, train
from tiny_task import Interrupting, extract

FAST = dict(hsk_lr=3e-3, pred_lr=3e-3, hsk_batch_size=16, pred_batch_size=16,
            select_on="last")  # every row trained on, as the hand computations assume


@pytest.fixture(scope="module")
def student(task, tmp_path_factory):
    out = tmp_path_factory.mktemp("students") / "tiny"
    build_tinybert(task.teacher, layers=2, hidden=16, ffn=32, heads=2, out_dir=out)
    return out


def records(run, stage=None):
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in lines if stage is None or r["stage"] == stage]


def test_a_stage_reads_the_hsk_only_when_it_compares_it(task, tmp_path):
    """Stage 1 reads the HSK at --hsk; the prediction stage's read leaves it out (`HSKRead(None)`),
    so its batches hold the logits and labels and no HSK entry."""
    cfg = TrainConfig(student=str(tmp_path / "s"), out=str(tmp_path / "run"), reads={"hsk": HSKRead((2, 4, 0.25))},
                      **FAST)
    assert cfg.read((("hsk", 1.0),)) == {"kinds": {"hsk": HSKRead((2, 4, 0.25))}}
    pred = cfg.read((("pred", 1.0), ("label", 0.5)))
    assert pred == {"kinds": {"hsk": HSKRead(None)}}
    store = hskcache.open_store(task.store)
    batch, full = store.get([0, 3], **pred), store.get([0, 3])
    assert batch.keys() == full.keys() - {"positions", "hsk", "hsk_mask"} and {"logits", "labels"} <= batch.keys()


def test_first_losses_match_a_hand_computation(task, tmp_path, device):
    """Step 1 of each stage: the loss of the untrained student on the store's first
    batch, with stored pair j matched to student layer L' - n + 1 + j (the hand computation
    on the CPU, the run in fp32 on `device`)."""
    folder = tmp_path / "wide"  # d_S = d_T: the projection is the identity, so the test needs no seed
    build_tinybert(task.teacher, layers=2, hidden=32, ffn=32, heads=2, out_dir=folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    cfg = TrainConfig(student=str(folder), out=str(tmp_path / "run"), reads={"hsk": HSKRead((2, 4, 0.25))},
                      max_steps=1, log_every=1, runtime=quiet_runtime(device, "fp32"), **FAST)
    rel = 1e-5 if device == "cpu" else 1e-4  # another processor sums in another order
    train(cfg, hskcache.open_store(task.store))

    store, model = hskcache.open_store(task.store), load_student(folder).train()
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    batch = next(iter(store.batches(16, seed=0, epoch=0, depth=2, tokens=4, width=0.25)))
    with torch.no_grad():
        states = model(**{k: batch[k] for k in inputs}, output_hidden_states=True).hidden_states
    expected = hsk_mse([states[1].numpy(), states[2].numpy()], batch["positions"].numpy(), batch["hsk_mask"].numpy(),
                       batch["hsk"].numpy(), np.eye(32), "zero-fill")
    [hsk] = records(tmp_path / "run", "hsk")
    assert (hsk["stage"], hsk["step"], hsk["epoch"], hsk["lr"]) == ("hsk", 1, 1, 3e-3)
    assert hsk["loss"] == pytest.approx(expected, rel=rel)

    # Prediction-only with the soft labels alone: the same student on the first batch of the pred stage's order.
    train(replace(cfg, out=str(tmp_path / "pred"), reads={"hsk": HSKRead(None)}, pred_objective=(("pred", 1.0),)), store)
    batch = next(iter(store.batches(16, seed=0, epoch=PRED.seed_base, depth=1, tokens=1)))
    with torch.no_grad():
        expected = prediction_loss(model(**{k: batch[k] for k in inputs}).logits, batch["logits"], 1.0, False)
    [pred] = records(tmp_path / "pred")
    assert pred["loss"] == pytest.approx(expected.item(), rel=rel)

    # With the gold labels too (`--pred-objective pred,label:0.5`, the default when the store has labels):
    # + 0.5 × cross-entropy to the labels.
    train(replace(cfg, out=str(tmp_path / "label"), reads={"hsk": HSKRead(None)}), store)
    with torch.no_grad():
        logits = model(**{k: batch[k] for k in inputs}).logits
        gold = torch.nn.functional.cross_entropy(logits, batch["labels"].long())
    assert (batch["labels"] >= 0).all()  # every row of the tiny task is labelled
    [label] = records(tmp_path / "label")
    assert label["loss"] == pytest.approx(expected.item() + 0.5 * gold.item(), rel=rel)
    config = json.loads((tmp_path / "label" / "metrics.json").read_text())["config"]
    assert config["pred_objective"] == "pred,label:0.5"


def test_the_default_prediction_objective_follows_the_gold_labels():
    """Gold labels beside the soft labels where any row has one (class >= 0, or a number), else soft labels alone."""
    assert prediction_objective(np.array([-1, 1, -1]), False) == (("pred", 1.0), ("label", 0.5))
    assert prediction_objective(np.array([-1, -1]), False) == (("pred", 1.0),)
    assert prediction_objective(np.array([np.nan, 2.5], dtype=np.float32), True) == (("pred", 1.0), ("label", 0.5))
    assert prediction_objective(np.array([np.nan, np.nan], dtype=np.float32), True) == (("pred", 1.0),)


def test_interrupted_and_resumed_equals_uninterrupted(task, student, tmp_path, device):
    """The same computation on the same machine: bit for bit on the CPU; on CUDA within float noise
    (some of its backward kernels add in a varying order). Dropout on, so the RNG state must survive
    the resume too."""
    # 16 steps per epoch.
    cfg = TrainConfig(student=str(student), out=str(tmp_path / "full"), reads={"hsk": HSKRead((2, 6, 0.25))},
                      hsk_epochs=2, pred_epochs=2, log_every=3, eval_data=str(task.dev), runtime=quiet_runtime(device),
                      **FAST)
    store = hskcache.open_store(task.store)
    train(cfg, store)

    cut = replace(cfg, out=str(tmp_path / "cut"))
    with pytest.raises(KeyboardInterrupt):  # mid-epoch 2 of stage 1, between two log records
        train(cut, Interrupting(store, 21))
    saved = torch.load(tmp_path / "cut" / "checkpoint" / "state.pt", weights_only=False)["position"]
    assert (saved["stage"], saved["epoch"], saved["batch"], saved["step"]) == (0, 1, 5, 21)
    with pytest.raises(KeyboardInterrupt):  # resumed, then interrupted again mid-epoch 1 of stage 2
        train(replace(cut, resume=True), Interrupting(store, 11 + 7))
    train(replace(cut, resume=True), store)

    full, resumed = (load_file(tmp_path / run / "student" / "model.safetensors") for run in ("full", "cut"))
    assert full.keys() == resumed.keys()
    cut_log, full_log = records(tmp_path / "cut"), records(tmp_path / "full")
    metrics = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert metrics["stages"]["hsk"]["steps"] == 32 and metrics["stages"]["pred"]["steps"] == 32
    full_eval = json.loads((tmp_path / "full" / "metrics.json").read_text())["eval"]
    if device == "cpu":
        for key in full:
            assert torch.equal(full[key], resumed[key]), key
        assert cut_log == full_log and metrics["eval"] == full_eval
    else:
        for key in full:
            torch.testing.assert_close(full[key], resumed[key], rtol=1e-4, atol=1e-5, msg=key)

        def steps(log):
            return [(r["stage"], r["step"], r.get("lr")) for r in log]

        assert steps(cut_log) == steps(full_log)
        assert [r.get("loss") for r in cut_log] == pytest.approx([r.get("loss") for r in full_log], rel=1e-4)
        assert metrics["eval"] == pytest.approx(full_eval, abs=1 / 64)  # a near-tie of the 64 dev rows may flip


def test_prediction_only_baseline_and_metrics_file(task, student, tmp_path, device):
    cfg = TrainConfig(student=str(student), out=str(tmp_path / "run"), reads={"hsk": HSKRead(None)}, pred_epochs=2,
                      max_steps=3, log_every=1, eval_data=str(task.dev), runtime=quiet_runtime(device), **FAST)
    metrics = train(cfg, hskcache.open_store(task.store))
    log = records(tmp_path / "run")
    assert {r["stage"] for r in log} == {"pred"}
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert [r["epoch"] for r in log if "eval" in r] == [1]  # --max-steps ends the stage inside epoch 1
    lrs = [r["lr"] for r in log if "lr" in r]
    assert lrs == pytest.approx([3e-3, 2e-3, 1e-3])  # linear decay over the 3 steps, no warm-up
    assert set(metrics["eval"]) == {"accuracy", "f1"}  # binary task outside GLUE
    assert metrics["best"]["metric"] == "accuracy" and metrics["config"]["reads"]["hsk"] == {"hsk": None}
    assert metrics["student"] == {"kind": "tinybert", "parameters": metrics["student"]["parameters"],
                                  "layers": 2, "hidden": 16}
    assert metrics["stages"]["pred"]["examples"] == 48 and metrics["stages"]["pred"]["examples_per_second"] > 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    assert not (tmp_path / "run" / "student.tmp").exists()
    assert (tmp_path / "run" / "student" / "student.json").is_file()


class Recording:
    """The store, keeping the read arguments and the dense batch of every batch the trainer draws."""

    def __init__(self, store) -> None:
        self._store, self.drawn = store, []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def batches(self, *args, **kwargs):
        for batch in self._store.batches(*args, **kwargs):
            self.drawn.append((kwargs, expand(batch)))
            yield batch


def test_hsk_is_the_hsk_kinds_read_setting(task, student, tmp_path):
    """`--hsk` (as a flag or TOML value is parsed) is the HSK kind's read: `none` reads no HSK, so stage 1,
    whose kind it is, is skipped (also with relation objectives, as before); `1,9,0.1` gives stage-1
    batches whose HSK is the store's own `get` at (1, 9, 0.1) for the same rows."""
    store = hskcache.open_store(extract(task.teacher, task.train, tmp_path / "store", "--tokens", 9, "--limit", 48))
    common = FAST | {"student": str(student), "max_steps": 2, "log_every": 1, "pred_objective": "pred",
                     "threads": 1, "quiet": True}  # as quiet_runtime, spelled as flags

    def config(out: str, **more) -> TrainConfig:
        return make(TrainConfig, common | {"out": str(tmp_path / out)} | more)

    skipped = config("unused", hsk="none", objective="att,val")
    assert [s.name for s in skipped.stages()] == ["pred"]

    none = Recording(store)
    metrics = train(config("none", hsk="none"), none)
    assert set(metrics["stages"]) == {"pred"} and {r["stage"] for r in records(tmp_path / "none")} == {"pred"}
    assert none.drawn and all((k["kinds"], k["epoch"]) == ({"hsk": HSKRead(None)}, PRED.seed_base) and "hsk" not in b
                              for k, b in none.drawn)  # the prediction stage decodes no HSK

    cut = Recording(store)
    metrics = train(config("cut", hsk="1,9,0.1"), cut)
    assert set(metrics["stages"]) == {"hsk", "pred"} and metrics["config"]["reads"]["hsk"] == {"hsk": [1, 9, 0.1]}
    first = [batch for kwargs, batch in cut.drawn if kwargs["epoch"] == HSK.seed_base]
    assert first and all(k["kinds"] == {"hsk": HSKRead((1, 9, 0.1))} for k, _ in cut.drawn if k["epoch"] == HSK.seed_base)
    everything = store.get(np.arange(store.num_examples), depth=1, tokens=9, width=0.1)
    row_of = {int(e): i for i, e in enumerate(everything["example_id"])}
    for batch in first:
        rows = [row_of[int(e)] for e in batch["example_id"]]
        assert batch["hsk"].shape == (len(rows), 1, 9, store.hidden)
        assert torch.equal(batch["positions"], everything["positions"][rows])
        assert torch.equal(batch["hsk_mask"], everything["hsk_mask"][rows])
        torch.testing.assert_close(batch["hsk"], everything["hsk"][rows])
        real = batch["positions"] >= 0
        assert (batch["hsk_mask"].sum(-1)[real] == 3).all()  # N^W 0.1 of d_T 32: 3 dimensions kept


@pytest.mark.parametrize("select_on", ["train-holdout:0.25", "last", "eval"])
def test_selection_uses_what_it_says_and_reports_eval_apart(task, student, tmp_path, select_on, device):
    """train-holdout: the held-out rows are never trained on and pick the epoch; the eval split is
    reported for that epoch. Checked by re-scoring RUN/student on the held-out rows by hand."""
    import math

    import numpy as np

    store = hskcache.open_store(task.store)
    cfg = TrainConfig(student=str(student), out=str(tmp_path / "run"), reads={"hsk": HSKRead(None)}, pred_epochs=3,
                      pred_lr=3e-3, pred_batch_size=16, select_on=select_on, eval_data=str(task.dev),
                      runtime=quiet_runtime(device, "fp32"))  # re-scored by hand in fp32 on the CPU
    metrics = train(cfg, store)
    evals = [r for r in records(tmp_path / "run") if "eval" in r]
    assert [r["epoch"] for r in evals] == [1, 2, 3]
    n = store.num_examples
    if select_on == "last":
        assert metrics["best"]["epoch"] == 3 and metrics["stages"]["pred"]["examples"] == 3 * n
    elif select_on == "eval":
        scores = [r["eval"]["accuracy"] for r in evals]
        assert metrics["best"]["epoch"] == 1 + scores.index(max(scores))
    else:
        held_count = math.ceil(0.25 * n)
        assert metrics["stages"]["pred"]["examples"] == 3 * (n - held_count)
        scores = [r["holdout"]["accuracy"] for r in evals]
        assert metrics["best"]["epoch"] == 1 + scores.index(max(scores))
        rows = np.sort(np.random.default_rng(0).choice(n, size=held_count, replace=False))
        batch = store.get(rows, depth=1, tokens=1)
        model = load_student(tmp_path / "run" / "student").eval()
        with torch.no_grad():
            predicted = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
        by_hand = (predicted.argmax(1) == batch["labels"]).float().mean().item()
        assert metrics["best"]["holdout"]["accuracy"] == pytest.approx(by_hand, abs=1e-6)
    assert metrics["best"]["selected_on"] == select_on.split(":")[0]
    assert metrics["eval"] == evals[metrics["best"]["epoch"] - 1]["eval"]  # the eval split, reported apart


def test_learning_rates_default_to_the_students_init(task, student, tmp_path, device):
    """No --hsk-lr/--pred-lr: the rates come from students.training.defaults by the init recorded in the
    student folder (random here, an ETD init after relabelling); a given rate wins."""
    import shutil

    from students.training.defaults import LEARNING_RATES
    from students.models.student import STUDENT_FILE

    settings = FAST | dict(hsk_lr=None, pred_lr=None, max_steps=1, log_every=1, reads={"hsk": HSKRead((2, 4, 0.25))},
                           runtime=quiet_runtime(device))
    etd = tmp_path / "etd"
    shutil.copytree(student, etd)
    info = json.loads((etd / STUDENT_FILE).read_text())
    (etd / STUDENT_FILE).write_text(json.dumps(info | {"init": "etd-impt"}))
    for folder, init in ((student, "random"), (etd, "etd-impt")):
        run = tmp_path / f"run-{init}"
        train(TrainConfig(student=str(folder), out=str(run), **settings), hskcache.open_store(task.store))
        config = json.loads((run / "metrics.json").read_text())["config"]
        assert (config["hsk_lr"], config["pred_lr"]) == LEARNING_RATES[init]
        assert records(run, "hsk")[0]["lr"] == LEARNING_RATES[init][0]
    assert LEARNING_RATES["random"] != LEARNING_RATES["etd-impt"]  # else this test could not tell them apart
    run = tmp_path / "given"
    train(TrainConfig(student=str(student), out=str(run), **(settings | dict(hsk_lr=1e-3))), hskcache.open_store(task.store))
    assert records(run, "hsk")[0]["lr"] == 1e-3


def test_kept_projection_maps_each_student_dimension_to_its_teacher_dimension(task, student, tmp_path, device):
    """--hsk-projection kept: W sends student dimension i to the teacher dimension ETD kept as i,
    and every other teacher dimension to 0 (checked element by element); a student that records
    no kept dimensions is refused in one line; a checkpoint written before the setting existed
    resumes as the default (random)."""
    import shutil

    from hskcache.errors import UserError
    from students.models.student import STUDENT_FILE
    from students.training.trainer import Trainer

    source = hskcache.open_store(task.store)
    d_student = load_student(student).config.hidden_size
    kept = sorted(np.random.default_rng(0).choice(source.hidden, d_student, replace=False).tolist())
    etd = tmp_path / "etd"
    shutil.copytree(student, etd)
    info = json.loads((etd / STUDENT_FILE).read_text())
    (etd / STUDENT_FILE).write_text(json.dumps(info | {"init": "etd-impt", "extraction": {"hidden": kept}}))
    cfg = TrainConfig(student=str(etd), out=str(tmp_path / "run"), hsk_projection="kept", runtime=quiet_runtime(device), **FAST)
    trainer = Trainer(cfg, source)
    states = torch.randn(3, d_student)
    with torch.no_grad():
        got = trainer.projection(states.to(trainer.device)).cpu()
    expected = torch.zeros(3, source.hidden)
    for i, k in enumerate(kept):
        for row in range(3):
            expected[row, k] = states[row, i]
    torch.testing.assert_close(got, expected)
    with pytest.raises(UserError, match="--hsk-projection kept needs a student extracted"):
        Trainer(replace(cfg, student=str(student), out=str(tmp_path / "run2")), source)
    old = {k: v for k, v in replace(cfg, hsk_projection="random").identity().items() if k != "hsk_projection"}
    assert replace(cfg, hsk_projection="random").changed_since(old) == []
    assert cfg.changed_since(old) == ["hsk_projection"]


# --------------------------------------------------------------------------- the general stage


def _general_student(task, out, hidden=32, seed=1):
    """A bare TinyBERT (a general student) of the task teacher's encoder, dropout off."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    bare = out.parent / f"{out.name}-teacher"
    AutoModelForSequenceClassification.from_pretrained(task.teacher).bert.save_pretrained(bare)
    AutoTokenizer.from_pretrained(task.teacher).save_pretrained(bare)
    build_tinybert(bare, layers=2, hidden=hidden, ffn=32, heads=2, out_dir=out, seed=seed)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_general_stage_selects_by_the_held_out_distillation_loss(task, tmp_path, device):
    """--general: stage 1 alone, its epochs compared by the HSK loss of the held-out rows (lower wins), which
    is recomputed here by hand for RUN/student on the CPU (d_S = d_T: W is the identity); the run in fp32 on
    `device`; the student written is bare."""
    import math

    from transformers import AutoModel

    from reference import hsk_mse
    from students.training.selection import HOLDOUT_SEED, holdout_rows

    general = _general_student(task, tmp_path / "general")
    store = hskcache.open_store(task.store)
    # --eval-batch-size 3: the held-out rows count different numbers of stored tokens, so a mean of batch means
    # would not be the held-out rows' loss computed by hand below in one piece
    cfg = TrainConfig(student=str(general), out=str(tmp_path / "run"), general=True, hsk_epochs=3, hsk_lr=3e-3,
                      hsk_batch_size=16, select_on="train-holdout:0.25", eval_batch_size=3,
                      runtime=quiet_runtime(device, "fp32"))
    metrics = train(cfg, store)
    held = [r["holdout"]["loss"] for r in records(tmp_path / "run") if "holdout" in r]
    assert len(held) == 3 and [r["stage"] for r in records(tmp_path / "run")] == ["hsk"] * len(records(tmp_path / "run"))
    assert metrics["best"]["epoch"] == 1 + held.index(min(held)) and metrics["best"]["metric"] == "loss"
    assert metrics["eval"] is None and list(metrics["stages"]) == ["hsk"]
    n = store.num_examples
    assert metrics["stages"]["hsk"]["examples"] == 3 * (n - math.ceil(0.25 * n))

    student = AutoModel.from_pretrained(tmp_path / "run" / "student").eval()
    assert type(student).__name__ == "BertModel"
    assert json.loads((tmp_path / "run" / "student" / "student.json").read_text())["stage"] == "general"
    rows = holdout_rows(np.arange(n), 0.25, HOLDOUT_SEED)
    batch = store.get(rows)
    with torch.no_grad():
        states = student(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                         output_hidden_states=True).hidden_states
    assert store.meta.stored_layers == (0, 2, 4)  # stored pair j is the student's layer j (0: the embeddings)
    by_hand = hsk_mse([s.numpy() for s in states], batch["positions"].numpy(), batch["hsk_mask"].numpy(),
                      batch["hsk"].numpy(), np.eye(32), "zero-fill")
    assert min(held) == pytest.approx(by_hand, rel=1e-4 if device == "cpu" else 1e-3)


def test_general_stage_keeps_the_lowest_held_out_loss(task, tmp_path, monkeypatch):
    """Held-out losses 3, 1, 2 (scripted): epoch 2 is selected, not the last, and RUN/student holds the
    weights the student had when epoch 2 was scored."""
    from safetensors.torch import load_file

    from students.training.trainer import Trainer

    general = _general_student(task, tmp_path / "general", hidden=16)
    scripted, seen = iter([3.0, 1.0, 2.0]), []

    def holdout_loss(self, stage):
        seen.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return next(scripted)
    monkeypatch.setattr(Trainer, "_holdout_loss", holdout_loss)
    cfg = TrainConfig(student=str(general), out=str(tmp_path / "run"), general=True, hsk_epochs=3, hsk_lr=3e-3,
                      hsk_batch_size=16, select_on="train-holdout:0.25", runtime=quiet_runtime())
    metrics = train(cfg, hskcache.open_store(task.store))
    assert (metrics["best"]["epoch"], metrics["best"]["value"]) == (2, 1.0) and len(seen) == 3
    written = load_file(tmp_path / "run" / "student" / "model.safetensors")
    assert not all(torch.equal(seen[1][k], seen[2][k]) for k in seen[2])  # epoch 3 changed the weights
    for key, value in written.items():
        assert torch.equal(value, seen[1][key]), key


def test_general_held_out_loss_does_not_depend_on_the_eval_batch_size(task, tmp_path):
    """The held-out loss is each term's sum over the held-out rows over its count there: read in batches of
    1, 3 or all of them, the same number (a mean of batch means would weigh rows by their batch)."""
    general = _general_student(task, tmp_path / "general", hidden=16)
    store = hskcache.open_store(task.store)
    held = []
    for size in (1, 3, 128):
        cfg = TrainConfig(student=str(general), out=str(tmp_path / f"run{size}"), general=True, hsk_epochs=1,
                          hsk_lr=3e-3, hsk_batch_size=16, max_steps=2, select_on="train-holdout:0.25",
                          eval_batch_size=size, runtime=quiet_runtime())
        train(cfg, store)
        held.append([r["holdout"]["loss"] for r in records(tmp_path / f"run{size}") if "holdout" in r])
    assert held[0] == pytest.approx(held[2], rel=1e-5) and held[1] == pytest.approx(held[2], rel=1e-5)


@pytest.mark.parametrize(("flags", "message"), [
    ({"eval_data": "dev.csv"}, "--eval-data belongs to the task stage"),
    ({"pred_epochs": 2}, "--pred-epochs belongs to the task stage"),
    ({"pred_objective": (("pred", 1.0),)}, "--pred-objective belongs to the task stage"),
    ({"select_on": "eval"}, "--general has no eval split"),
    ({"temperature": 2.0}, "--temperature belongs to the task stage"),
    ({"regression_head": "as-is"}, "--regression-head belongs to the task stage"),
    ({"eval_split": "test"}, "--eval-split belongs to the task stage"),
])
def test_general_refuses_task_stage_settings(tmp_path, flags, message):
    from hskcache.errors import UserError

    with pytest.raises(UserError, match=message):
        TrainConfig(student="s", out=str(tmp_path / "run"), general=True, **flags)


def test_general_student_passed_straight_to_a_task_run(task, tmp_path, capsys):
    """A bare general student as --student on a task store: its encoder as a plain HF load has it, a fresh
    head for the store's labels seeded by --seed, said in one line; the run writes a task student."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    from students.training.trainer import Trainer

    general = _general_student(task, tmp_path / "general", hidden=16)
    store = hskcache.open_store(task.store)

    def trainer(out, seed):
        return Trainer(TrainConfig(student=str(general), out=str(tmp_path / out), seed=seed, max_steps=1,
                                   runtime=quiet_runtime(), **FAST), store)

    model = trainer("a", 0).model
    assert "is a bare encoder (a general student): its head for the store's 2 outputs is fresh, seeded by --seed 0" \
        in capsys.readouterr().err
    plain = AutoModel.from_pretrained(general)
    for key, value in plain.state_dict().items():  # the pooler is no part of a bare student
        assert "pooler" in key or torch.equal(model.bert.state_dict()[key], value), key
    assert model.config.num_labels == 2 and model.config.id2label == {0: "rotten", 1: "fresh"}
    assert torch.equal(trainer("b", 0).model.classifier.weight, model.classifier.weight)
    assert not torch.equal(trainer("c", 1).model.classifier.weight, model.classifier.weight)
    train(TrainConfig(student=str(general), out=str(tmp_path / "run"), max_steps=1, runtime=quiet_runtime(), **FAST),
          store)
    written = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "student")
    assert written.config.num_labels == 2


def test_general_stage_interrupted_and_resumed_equals_uninterrupted(task, tmp_path):
    """Like the task stage: Ctrl-C mid-epoch 2 checkpoints, --resume finishes the same run (bit for bit on the
    CPU, dropout on): the same log, the same held-out losses and selected epoch, the same student."""
    general = _general_student(task, tmp_path / "general", hidden=16)
    config = json.loads((general / "config.json").read_text())  # dropout on: the RNG state must survive too
    config.update(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    (general / "config.json").write_text(json.dumps(config))
    store = hskcache.open_store(task.store)
    cfg = TrainConfig(student=str(general), out=str(tmp_path / "full"), general=True, hsk_epochs=2, hsk_lr=3e-3,
                      hsk_batch_size=16, log_every=3, select_on="train-holdout:0.25", runtime=quiet_runtime())
    train(cfg, store)
    cut = replace(cfg, out=str(tmp_path / "cut"))
    with pytest.raises(KeyboardInterrupt):
        train(cut, Interrupting(store, 17))
    saved = torch.load(tmp_path / "cut" / "checkpoint" / "state.pt", weights_only=False)["position"]
    assert (saved["stage"], saved["epoch"]) == (0, 1) and saved["best"] is not None  # epoch 1 already selected
    train(replace(cut, resume=True), store)
    assert records(tmp_path / "cut") == records(tmp_path / "full")
    full, resumed = (load_file(tmp_path / run / "student" / "model.safetensors") for run in ("full", "cut"))
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


def test_general_refuses_a_rosita_student_in_one_line(task, tmp_path, capsys):
    """ROSITA is the teacher pruned under its task head: no bare encoder for --general, said as such (not as a
    folder that cannot be loaded)."""
    from students import cli

    assert cli.main(["build", "rosita", "--teacher", str(task.teacher), "--store", str(task.store), "--layers", "1",
                     "--heads", "2", "--ffn", "16", "--emb-rank", "8", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--store", str(task.store), "--student", str(tmp_path / "r"), "--general",
                     "--out", str(tmp_path / "run"), "--threads", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a ROSITA student" in err and "no bare encoder for --general" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", [["--max-length", "16"], ["--text-cols", "sentence"], ["--label-col", "label"],
                                  ["--temperature", "2"]])
def test_general_on_a_store_refuses_eval_reading_flags(task, tmp_path, capsys, flag):
    """--general on a store reads no eval data: the flags that say how to read it are refused in one line
    (the online baseline's --max-length/--text-cols are its extraction's, and kept)."""
    from students import cli

    capsys.readouterr()
    assert cli.main(["train", "--store", str(task.store), "--student", str(tmp_path / "s"), "--general",
                     "--out", str(tmp_path / "run"), *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag[0]} belongs to the task stage" in err
