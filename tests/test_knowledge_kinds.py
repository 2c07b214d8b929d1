"""The knowledge-kind registry: a new kind is one module (here: one registration) in `hskcache.kinds`
and one in `students.kinds`, and extraction (its flag, its recorded settings), the store's arrays and
bytes, `inspect`, `budget`, the reader's batches and training follow from it, with the other kinds'
batches unchanged."""
from __future__ import annotations

import csv
import json
import pickle
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import hskcache
from hskcache.selection.attention import RelationSpec
from hskcache.kinds import KINDS, Kind, TeacherInfo, register
from hskcache.storage.layout import ArraySpec
from hskcache.options import setting
from hskcache.store.shape import StoreShape
from reference import teacher_outputs
from helpers import MAX_LEN, quiet_runtime, run_extract, store_shape, tiny_student


@dataclass(frozen=True)
class ClsSettings:
    """The toy kind's own parameter: one field, so one `extract` flag (`--cls-layer`) and TOML key."""

    cls_layer: int | None = setting(None, "teacher hidden state whose [CLS] vector the cls kind stores "
                                    "(default: the last)")


class LastCLS(Kind):
    """A toy opt-in kind (`--knowledge hsk,cls`): the teacher's [CLS] vector of hidden state
    `--cls-layer`, stored as fp16."""

    name = "cls"
    order = 90
    groups = ("cls",)
    listed = opt_in = True
    settings = record = ClsSettings

    def resolve(self, settings: ClsSettings, teacher: TeacherInfo) -> ClsSettings:
        return ClsSettings(teacher.num_layers if settings.cls_layer is None else settings.cls_layer)

    def arrays(self, shape):
        return [ArraySpec("cls_state", (shape.hidden,), np.dtype(np.float16), "cls")]

    def encode(self, forward):
        layer = forward.shape.kinds[self.name].cls_layer
        return {"cls_state": forward.out.hidden_states[layer][:, 0].to(torch.float16).cpu().numpy()}

    def expand(self, tensors, batch):
        return {"cls_state": tensors["cls_state"].float()}


def cls_student_kind():
    """The toy kind's student side: the student's last [CLS] vector's norm against the stored one's."""
    from students.kinds import Objective, StudentKind

    def loss(student, batch, settings):
        return ((student - batch["cls_state"].norm(dim=-1)) ** 2).mean()

    class ClsStudent(StudentKind):
        name = "cls"
        objectives = {"cls": Objective(loss, "toy: squared difference of the [CLS] vectors' norms")}
        hidden_states = True

        def student(self, forward, batch):
            return forward.out.hidden_states[-1][:, 0].float().norm(dim=-1)

    return ClsStudent()


@pytest.fixture
def toy_kind():
    """The toy kind registered through the registries' public `register`, removed afterwards."""
    from students.kinds import STUDENT_KINDS
    from students.kinds import register as register_student

    saved = dict(KINDS), dict(STUDENT_KINDS)
    register(LastCLS())
    register_student(cls_student_kind())
    yield
    for registry, entries in zip((KINDS, STUDENT_KINDS), saved):
        registry.clear()
        registry.update(entries)


def test_an_opt_in_kind_with_its_own_flag_extracts_reads_and_trains(toy_kind, teacher_dir, single_csv, tmp_path,
                                                                    capsys):
    from hskcache.cli.main import main
    from students.training.objectives import parse_objective
    from students.training.trainer import TrainConfig, train

    common = ("--student-layers", 2, "--tokens", 4, "--width", 0.5, "--device", "cpu", "--dtype", "fp32")
    run_extract(teacher_dir, single_csv, tmp_path / "plain", *common)
    run_extract(teacher_dir, single_csv, tmp_path / "cls", *common, "--knowledge", "hsk,cls", "--cls-layer", 1)
    plain, store = hskcache.open_store(tmp_path / "plain"), hskcache.open_store(tmp_path / "cls")
    assert "cls" not in plain.kinds and set(plain.meta.config.kinds) == {"hsk"}  # opt-in: only stored when asked for
    assert store.kinds == plain.kinds | {"cls": ClsSettings(1)}
    assert store.meta.config.kinds == plain.meta.config.kinds | {"cls": ClsSettings(1)}
    rows = list(range(store.num_examples))
    before = plain.get(rows)
    batch = store.get(rows, kinds={"cls": None})
    assert "cls_state" not in store.get(rows)  # read only when asked for
    # the new entry, against a plain HF forward: hidden state 1's [CLS], as --cls-layer 1 asked
    with open(single_csv) as f:
        texts = [r["sentence"] for r in csv.DictReader(f)]
    _, out, _ = teacher_outputs(teacher_dir, texts[:len(rows)], None, MAX_LEN)
    torch.testing.assert_close(batch.pop("cls_state"), out.hidden_states[1][:, 0].to(torch.float16).float(),
                               atol=1e-3, rtol=1e-3)  # fp16 of the same forward
    # every other entry as without the kind, in the same order
    assert list(batch) == list(before)
    assert all(torch.equal(batch[k], before[k]) for k in before)
    packed = next(iter(store.batches(4, shuffle=False, packed=True, kinds={"cls": None})))
    assert "cls" in [k.name for k in packed.kinds] and "cls_state" in hskcache.storage.packed.expand(packed)
    # its bytes: one fp16 vector per row, in its own budget group, in the total
    shape = StoreShape.of_store(store.meta)
    n = store.num_examples
    groups = shape.bytes_by_group(n)
    padded = -(-n // shape.rows_per_chunk(n)) * shape.rows_per_chunk(n)
    assert groups["cls"] == padded * 2 * store.hidden
    assert sum(groups.values()) == sum(shape.bytes_by_array(n).values())
    # inspect prints its record, budget gives its group a column
    assert main(["inspect", "--store", str(tmp_path / "cls")]) == 0
    assert "cls         cls_layer 1" in capsys.readouterr().out
    assert main(["budget", "--store", str(tmp_path / "cls"), "--json"]) == 0
    [own] = json.loads(capsys.readouterr().out)
    assert own["hskcache_group_bytes"] == {"cls": padded * 2 * store.hidden}

    # trained: step 1 of `--objective cls` is the toy loss of the untrained student, by hand from HF forwards
    folder = tmp_path / "student"
    tiny_student(teacher_dir, folder)
    cfg = TrainConfig(student=str(folder), out=str(tmp_path / "run"), objective=parse_objective("cls"),
                      max_steps=1, log_every=1, hsk_batch_size=8, select_on="last", pred_batch_size=8,
                      runtime=quiet_runtime("cpu", "fp32"))
    train(cfg, store)
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(folder).train()
    first = next(iter(store.batches(8, seed=0, epoch=0, kinds={"cls": None})))
    with torch.no_grad():
        hidden = model(**{k: first[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                       output_hidden_states=True).hidden_states[-1][:, 0]
    expected = ((hidden.norm(dim=-1) - first["cls_state"].norm(dim=-1)) ** 2).mean()
    logged = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert logged["stage"] == "hsk" and logged["loss"] == pytest.approx(expected.item(), rel=1e-4)


@dataclass(frozen=True)
class ClsScaleSettings(ClsSettings):
    """A second toy kind's settings: the first's field (inherited, so the same flag) and one more."""

    cls_scale: float = setting(1.0, "a scale the second toy kind would apply")


def test_a_registered_kinds_settings_are_extract_flags(toy_kind, capsys):
    from hskcache.cli.main import main
    from hskcache.teacher.config import build_config

    class Scaled(LastCLS):
        name, order, settings, record = "cls2", 91, ClsScaleSettings, ClsScaleSettings

    register(Scaled())
    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    text = capsys.readouterr().out  # the registry's settings are the command's flags, a shared field's once
    assert text.count("\n  --cls-layer") == 1 and text.count("\n  --cls-scale") == 1
    cfg = build_config({"teacher": "T", "data": "D", "store": "S", "student_layers": 2, "cls_layer": 1,
                        "cls_scale": 2.0, "knowledge": "hsk,cls,cls2"})
    assert cfg.kinds["cls"] == ClsSettings(1) and cfg.kinds["cls2"] == ClsScaleSettings(1, 2.0)


def test_every_kind_names_its_arrays_once():
    """The store's arrays are the kinds' arrays, each owned by one kind (the relation kinds share
    their query rows)."""
    spec = RelationSpec((1,), (1,), (1,), 2, 3, 4, 8, "att")
    shape = store_shape(8, 100, 2, False, 2, 3, 16, 0.5, "mag", values="int8", kinds={"att": spec, "val": spec})
    owners: dict[str, set[str]] = {}
    for kind in KINDS.values():
        if kind.stored(shape):
            for a in kind.arrays(shape):
                owners.setdefault(a.name, set()).add(kind.name)
    assert [a.name for a in shape.arrays()] == list(owners)
    assert {n: o for n, o in owners.items() if len(o) > 1} == {"rel_positions": {"att", "val"}}
    assert not KINDS["att"].stored(store_shape(8, 100, 2, False, 2, 3, 16, 0.5, "mag"))  # opt-in


@pytest.mark.parametrize("name", list(KINDS))
def test_kinds_unpickle_to_the_registry(name):
    assert pickle.loads(pickle.dumps(KINDS[name])) is KINDS[name]
