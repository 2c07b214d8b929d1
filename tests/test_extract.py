"""Extraction against an independent recomputation, smaller reads, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

import hskcache
from hskcache.storage import layout
from hskcache.selection import hsk as selection
from hskcache.store import group as store_mod
from hskcache.cli.main import main
from helpers import MAX_LEN, arrays, check_against_reference, run_extract


@pytest.mark.parametrize("strategy", ["left", "att", "att-nosep", "att-nosep-top"])
@pytest.mark.parametrize("pairs", [False, True])
def test_token_strategies_match_reference(tmp_path, teacher_dir, single_csv, pair_csv, strategy, pairs, device):
    data = pair_csv if pairs else single_csv
    # L'=2 with L_top=1 on a 2-layer teacher: g = 0,1,1 (half rounds up), so
    # att and att-nosep-top rank with different layers. Selection on `device`, in the reference's fp32.
    run_extract(teacher_dir, data, tmp_path / "s", "--student-layers", 2, "--ltop", 1, "--tokens", 12,
                "--token-strategy", strategy, "--width", 0.5, "--device", device, "--dtype", "fp32")
    got, store = check_against_reference(teacher_dir, data, tmp_path / "s", [0, 1, 1], 3, 12, strategy, 0.5, "mag")
    assert store.teacher_layers == [0, 1, 1]
    # some examples are shorter than N^L: their tail is empty
    assert (got["positions"] == -1).any() and (got["positions"] >= 0).any()
    if strategy != "left" and strategy != "att":
        sep = got["input_ids"].gather(1, got["positions"].clamp(min=0).flatten(1)) == 3
        assert not (sep & (got["positions"].flatten(1) >= 0)).any()  # [SEP] never stored
    # smaller configurations read from the same store equal a reference computed at that size
    check_against_reference(teacher_dir, data, tmp_path / "s", [0, 1, 1], 3, 12, strategy, 0.5, "mag",
                            read={"depth": 2, "tokens": 4, "width": 0.125})


@pytest.mark.parametrize("width_strategy,width", [("mag", 0.1), ("mag", 1.0), ("rand", 0.25), ("uniform", 0.3)])
def test_width_strategies_match_reference(tmp_path, teacher_dir, pair_csv, width_strategy, width, device):
    run_extract(teacher_dir, pair_csv, tmp_path / "s", "--teacher-layers", "0,2", "--tokens", 6,
                "--width", width, "--width-strategy", width_strategy, "--width-seed", 3, "--device", device,
                "--dtype", "fp32")
    got, store = check_against_reference(teacher_dir, pair_csv, tmp_path / "s", [0, 2], 2, 6, "att-nosep-top",
                                         width, width_strategy, seed=3)
    kept = got["hsk_mask"][got["positions"] >= 0].sum(-1)
    assert (kept == selection.kept_width(width, 32)).all()
    if width_strategy == "rand":  # a smaller rand width is the seeded order's prefix
        check_against_reference(teacher_dir, pair_csv, tmp_path / "s", [0, 2], 2, 6, "att-nosep-top", 0.125, "rand",
                                read={"width": 0.125}, seed=3)


@pytest.mark.parametrize("name", list(selection.WIDTH_STRATEGIES))
def test_width_strategy_registry(name):
    """Each registered strategy says whether its kept dimensions are shared (stored once) and gives them."""
    strategy, dims = selection.WIDTH_STRATEGIES[name], selection.static_dims(name, 32, 8, seed=3)
    if not strategy.static:  # mag: each vector's own largest magnitudes, nothing shared
        assert dims is None
        return
    assert len(set(dims.tolist())) == len(dims) == 8 and 0 <= int(dims.min()) <= int(dims.max()) < 32
    assert torch.equal(dims, selection.static_dims(name, 32, 8, seed=3))  # the same in every vector and every call
    if name == "uniform":  # round(i × 32 / 8) − 1 = 4i − 1 for i = 1..8
        assert dims.tolist() == [3, 7, 11, 15, 19, 23, 27, 31]
    if name == "rand":  # a smaller width keeps a prefix of the seeded order
        assert torch.equal(selection.static_dims(name, 32, 4, seed=3), dims[:4])


def test_width_code_is_bitmask_unless_asked(tmp_path, teacher_dir, single_csv, device):
    run_extract(teacher_dir, single_csv, tmp_path / "s", "--student-layers", 1, "--tokens", 3, "--width", 0.5,
                "--device", device)
    assert hskcache.open_store(tmp_path / "s").width_encoding == "bitmask"
    run_extract(teacher_dir, single_csv, tmp_path / "r", "--student-layers", 1, "--tokens", 3, "--width", 0.5,
                "--device", device,
                "--width-code", "rank")
    assert hskcache.open_store(tmp_path / "r").width_encoding == "rank"


def test_get_refuses_more_than_stored(tmp_path, teacher_dir, single_csv, device):
    run_extract(teacher_dir, single_csv, tmp_path / "s", "--student-layers", 2, "--depth", 2, "--tokens", 4, "--width", 0.5,
                "--device", device)
    store = hskcache.open_store(tmp_path / "s")
    for kwargs in ({"depth": 3}, {"tokens": 5}, {"width": 0.75}):
        with pytest.raises(hskcache.errors.UserError, match="store holds depth 2, tokens 4, width 0.5"):
            store.get([0], **kwargs)


def test_batches_cover_every_row_once_and_are_seeded(tmp_path, teacher_dir, single_csv, monkeypatch, device):
    monkeypatch.setattr(layout, "CHUNK_TARGET_BYTES", 600)  # several chunks
    run_extract(teacher_dir, single_csv, tmp_path / "s", "--student-layers", 2, "--tokens", 5, "--width", 0.25,
                "--device", device)
    store = hskcache.open_store(tmp_path / "s")
    assert store.chunk_rows < store.num_examples
    ids = [b["example_id"] for b in store.batches(5, seed=1, epoch=0, window_chunks=2)]
    flat = torch.cat(ids).tolist()
    assert sorted(flat) == list(range(store.num_examples))
    assert flat != sorted(flat)
    again = torch.cat([b["example_id"] for b in store.batches(5, seed=1, epoch=0, window_chunks=2)]).tolist()
    other = torch.cat([b["example_id"] for b in store.batches(5, seed=1, epoch=1, window_chunks=2)]).tolist()
    assert again == flat and other != flat
    resumed = torch.cat([b["example_id"] for b in store.batches(5, seed=1, epoch=0, window_chunks=2, start_batch=3)]).tolist()
    assert resumed == flat[15:]
    # batch content equals random access to the same rows
    first = next(iter(store.batches(5, seed=1, epoch=0, window_chunks=2, tokens=3, width=0.125)))
    direct = store.get(first["example_id"].numpy(), tokens=3, width=0.125)
    for key in direct:
        assert torch.equal(first[key], direct[key]), key


def test_resume_after_crash_equals_uninterrupted(tmp_path, teacher_dir, pair_csv, monkeypatch, device, capsys):
    monkeypatch.setattr(layout, "CHUNK_TARGET_BYTES", 700)
    common = ("--student-layers", 2, "--tokens", 5, "--width", 0.2, "--batch-size", 8, "--device", device)
    run_extract(teacher_dir, pair_csv, tmp_path / "full", *common)

    real_commit = store_mod.StoreWriter._commit
    calls = {"n": 0}

    def dying_commit(self, chunk, block):
        calls["n"] += 1
        if calls["n"] == 3:  # die half-way through a chunk: first array written, no commit marker
            name = next(iter(block))
            lo = chunk * self.chunk_rows
            self.group[name][lo:lo + len(block[name])] = block[name] * 0 + 7
            raise KeyboardInterrupt
        real_commit(self, chunk, block)

    monkeypatch.setattr(store_mod.StoreWriter, "_commit", dying_commit)
    assert main(["extract", "--teacher", str(teacher_dir), "--data", str(pair_csv), "--store", str(tmp_path / "cut"),
                 "--max-length", str(MAX_LEN), "--quiet", *map(str, common)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "hskcache: interrupted; rerun the same command to resume (committed chunks are kept)")
    partial = store_mod.describe(str(tmp_path / "cut"))
    assert 0 < partial["rows_committed"] < partial["num_examples"] and not partial["complete"]
    with pytest.raises(hskcache.errors.UserError, match="incomplete"):
        hskcache.open_store(tmp_path / "cut")
    monkeypatch.setattr(store_mod.StoreWriter, "_commit", real_commit)
    run_extract(teacher_dir, pair_csv, tmp_path / "cut", *common)
    full, cut = arrays(str(tmp_path / "full")), arrays(str(tmp_path / "cut"))  # the commit markers too
    assert full.keys() == cut.keys()
    for name in full:
        np.testing.assert_array_equal(full[name], cut[name], err_msg=name)
    a, b = (zarr.open_group(str(p), mode="r").attrs for p in (tmp_path / "full", tmp_path / "cut"))
    assert a["identity"] == b["identity"] and b["complete"]


def test_rerun_with_other_settings_refuses_unless_overwrite(tmp_path, teacher_dir, single_csv, capsys, device):
    run_extract(teacher_dir, single_csv, tmp_path / "s", "--student-layers", 2, "--tokens", 4, "--device", device)
    before = arrays(str(tmp_path / "s"))
    args = ["extract", "--teacher", str(teacher_dir), "--data", str(single_csv), "--store", str(tmp_path / "s"),
            "--max-length", str(MAX_LEN), "--quiet", "--student-layers", "2", "--tokens", "5", "--device", device]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    after = arrays(str(tmp_path / "s"))
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert main(args + ["--overwrite"]) == 0
    assert hskcache.open_store(tmp_path / "s").tokens == 5


def test_toml_config_with_flag_override(tmp_path, teacher_dir, single_csv, device):
    cfg = tmp_path / "extract.toml"
    cfg.write_text(f'teacher = "{teacher_dir}"\ndata = "{single_csv}"\nstudent-layers = 2\ntokens = 7\n'
                   f'width = 0.5\nmax_length = {MAX_LEN}\n')
    assert main(["extract", "--config", str(cfg), "--store", str(tmp_path / "s"), "--tokens", "3", "--quiet",
                 "--device", device]) == 0
    store = hskcache.open_store(tmp_path / "s")
    assert store.tokens == 3 and store.width == 0.5 and store.config.max_length == MAX_LEN


def test_inspect_json(tmp_path, teacher_dir, single_csv, capsys, device):
    import json
    run_extract(teacher_dir, single_csv, tmp_path / "s", "--student-layers", 2, "--device", device)
    capsys.readouterr()
    assert main(["inspect", "--store", str(tmp_path / "s"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and info["rows_committed"] == info["num_examples"] == 36
    assert set(info["bytes"]) >= {"values", "positions", "logits", "input_ids"}


@pytest.mark.parametrize("width_strategy", ["mag", "uniform"])
def test_budget_plan_equals_real_store_bytes(tmp_path, teacher_dir, single_csv, capsys, width_strategy, device):
    """`budget --plan` before extraction predicts the bytes `extract` then writes."""
    import json

    from hskcache.storage.layout import CHECKSUM_BYTES
    from hskcache.store.group import on_disk_bytes

    run_extract(teacher_dir, single_csv, tmp_path / "s", "--student-layers", 2, "--depth", 2, "--tokens", 5,
                "--width", 0.2, "--width-strategy", width_strategy, "--compress", "none", "--device", device)
    capsys.readouterr()
    assert main(["budget", "--plan", "--teacher", str(teacher_dir), "--data", str(single_csv), "--seq-len", str(MAX_LEN),
                 "--student-layers", "2", "--width-strategy", width_strategy, "--configs", "2,5,0.2", "--json",
                 "--compress", "none"]) == 0
    plan = json.loads(capsys.readouterr().out)[0]
    disk = on_disk_bytes(tmp_path / "s")
    meta = {name: len((tmp_path / "s" / name / "zarr.json").read_bytes()) for name in disk}
    checksums = {name: CHECKSUM_BYTES * sum(p.is_file() for p in (tmp_path / "s" / name / "c").rglob("*"))
                 for name in disk}  # each chunk file: its data, then its crc32c
    chunks = {name: disk[name] - meta[name] - checksums[name] for name in disk}
    values = chunks["values"]
    mask = chunks["positions"] + chunks.get("width_code", 0) + chunks.get("static_dims", 0)
    assert plan["hskcache_values_bytes"] == values
    assert plan["hskcache_mask_bytes"] == mask
    assert plan["hskcache_total_bytes"] == sum(chunks.values())
