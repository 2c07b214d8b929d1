"""Store metadata: the typed `StoreMeta` reads back exactly the attributes the extractor wrote,
its settings are `extract`'s flags, and a store with a missing or malformed attribute is
refused with one line when it is opened."""
from __future__ import annotations

import json
import shutil
from dataclasses import fields

import pytest
import zarr

import hskcache
from hskcache.cli.main import main
from hskcache.teacher.config import ExtractConfig
from hskcache.errors import UserError
from hskcache.store.meta import Settings, StoreMeta

BOOKKEEPING = ("format", "schema_version", "rows_committed", "complete")  # hskcache.store.group's own keys


def stored_attrs(path) -> dict:
    """The attributes as written on disk, read with json (not through hskcache)."""
    return json.loads((path / "zarr.json").read_text())["attributes"]


def test_attributes_round_trip_exactly(task):
    attrs = stored_attrs(task.store)
    meta = StoreMeta.from_attrs(attrs, str(task.store))
    assert meta.to_attrs() == {k: v for k, v in attrs.items() if k not in BOOKKEEPING}
    assert meta.identity == attrs["identity"]  # derived from the fields: one home for what identifies a store
    store = hskcache.open_store(task.store)
    assert store.meta == meta and store.tokens == attrs["kinds"]["hsk"]["tokens"] == store.config.kinds["hsk"].tokens
    assert store.config.teacher_layers == tuple(attrs["teacher_layers"])


def test_settings_are_the_stored_extract_flags():
    stored = [f.name for f in fields(ExtractConfig) if f.name not in (*ExtractConfig.RUNTIME, "store")]
    assert [f.name for f in fields(Settings)] == stored


@pytest.mark.parametrize("change, name", [
    (lambda a: a["kinds"]["hsk"].pop("kept"), "kinds.hsk.kept"),
    (lambda a: a["config"]["kinds"]["hsk"].pop("width_seed"), "config.kinds.hsk.width_seed"),
    (lambda a: a["config"]["kinds"]["hsk"].update(tokens="8"), "config.kinds.hsk.tokens"),
    (lambda a: a["tokenizer"].update(vocab_size=None), "tokenizer.vocab_size"),
    (lambda a: a.update(regression=0), "regression"),
    (lambda a: a["kinds"].update(att={"heads": 2}), "kinds.att.layers"),
    (lambda a: a["kinds"].update(toy={}), "kinds.toy"),
])
def test_bad_attributes_are_one_line_at_open(task, tmp_path, capsys, change, name):
    bad = tmp_path / "bad"
    shutil.copytree(task.store, bad)
    attrs = dict(zarr.open_group(str(bad), mode="r").attrs)
    change(attrs)
    zarr.open_group(str(bad), mode="r+").attrs.put(attrs)
    with pytest.raises(UserError) as exc:
        hskcache.open_store(bad)
    message = str(exc.value)
    assert f"attribute {name}" in message and "--overwrite" in message and "\n" not in message
    for command in ("budget", "inspect"):
        capsys.readouterr()
        assert main([command, str(bad)]) == 2
        assert capsys.readouterr().err.strip().endswith(message)
