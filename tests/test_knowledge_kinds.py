"""The knowledge-kind registry: a new kind is one entry in `hskcache.kinds.KINDS`, and the
store, its byte arithmetic and the reader's batches follow from it, with the other kinds'
batches unchanged."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import hskcache
from hskcache.kinds import KINDS, Kind
from hskcache.kinds.relation import RelationSpec
from hskcache.layout import ArraySpec, StoreShape
from reference import teacher_outputs
from helpers import MAX_LEN, run_extract


class LastCLS(Kind):
    """A toy kind: the teacher's last hidden state at [CLS], stored as fp16."""

    name = "cls"

    def arrays(self, shape):
        return [ArraySpec("cls_state", (shape.hidden,), np.dtype(np.float16), "cls")]

    def encode(self, forward):
        return {"cls_state": forward.out.hidden_states[-1][:, 0].to(torch.float16).cpu().numpy()}

    def expand(self, tensors, batch):
        return {"cls_state": tensors["cls_state"].float()}


def test_registering_one_kind_stores_counts_and_reads_it(teacher_dir, single_csv, tmp_path, monkeypatch, device):
    on = ("--device", device, "--dtype", "fp32")  # the new entry is checked against a CPU forward
    run_extract(teacher_dir, single_csv, tmp_path / "plain", "--student-layers", 2, "--tokens", 4, "--width", 0.5, *on)
    plain = hskcache.open_store(tmp_path / "plain")
    rows = list(range(plain.num_examples))
    before = plain.get(rows)
    monkeypatch.setitem(KINDS, "cls", LastCLS())  # the toy kind's arrays say it is in every store from here on
    run_extract(teacher_dir, single_csv, tmp_path / "cls", "--student-layers", 2, "--tokens", 4, "--width", 0.5, *on)
    store = hskcache.open_store(tmp_path / "cls")
    n = store.num_examples
    batch = store.get(rows)
    # the new entry, against a plain HF forward
    with open(single_csv) as f:
        texts = [r["sentence"] for r in csv.DictReader(f)]
    _, out, _ = teacher_outputs(teacher_dir, texts[:n], None, MAX_LEN)
    want = out.hidden_states[-1][:, 0].to(torch.float16).float()
    torch.testing.assert_close(batch.pop("cls_state"), want, atol=1e-3, rtol=1e-3)  # fp16 of the same forward
    # every other entry as without the kind, in the same order
    assert list(batch) == list(before)
    assert all(torch.equal(batch[k], before[k]) for k in before)
    packed = next(iter(store.batches(4, shuffle=False, packed=True)))
    assert "cls" in [k.name for k in packed.kinds] and "cls_state" in hskcache.packed.expand(packed)
    # its bytes: one fp16 vector per row, in its own budget group, in the total
    shape = StoreShape.of_store(store.meta)
    groups = shape.bytes_by_group(n)
    padded = -(-n // shape.rows_per_chunk(n)) * shape.rows_per_chunk(n)
    assert groups["cls"] == padded * 2 * store.hidden
    assert sum(groups.values()) == sum(shape.bytes_by_array(n).values())


def test_every_kind_names_its_arrays_once():
    """The store's arrays are the kinds' arrays, each owned by one kind (the relation kinds share
    their query rows); the registry's objectives have unique names."""
    spec = RelationSpec(("att", "val"), (1,), (1,), (1,), 2, 3, 4, 8, "att")
    shape = StoreShape(8, 100, 2, False, 2, 3, 16, 0.5, "mag", values="int8", relations=spec)
    owners: dict[str, set[str]] = {}
    for kind in KINDS.values():
        for a in kind.arrays(shape):
            owners.setdefault(a.name, set()).add(kind.name)
    assert [a.name for a in shape.arrays()] == list(owners)
    assert {n: o for n, o in owners.items() if len(o) > 1} == {"rel_positions": {"att", "val"}}
    names = [n for kind in KINDS.values() for n in kind.objectives]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", list(KINDS))
def test_kinds_unpickle_to_the_registry(name):
    import pickle

    assert pickle.loads(pickle.dumps(KINDS[name])) is KINDS[name]
