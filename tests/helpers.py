"""Helpers that several test modules share: running an extraction, checking a store against the
independent recomputation in `reference.py`, and comparing two stores array by array.

Test modules import these from here, never from one another: a `test_*.py` module holds tests, and
one that imported another's helpers would load that module (and its imports) to run.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import hskcache
import hskcache.storage.backends
from hskcache.cli.main import main
from reference import expected_selection, teacher_outputs
from students.models.student import build_tinybert
from students.training.runtime import Runtime

MAX_LEN = 24  # also the reference tokenization length


def read_csv(path):
    """(first texts, second texts or None) of a tests' CSV file."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if "sentence" in rows[0]:
        return [r["sentence"] for r in rows], None
    return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows]


def run_extract(teacher_dir, data, out, *extra):
    """`hskcache extract` at MAX_LEN, quietly; it must succeed."""
    args = ["extract", "--teacher", str(teacher_dir), "--data", str(data), "--store", str(out),
            "--max-length", str(MAX_LEN), "--batch-size", "8", "--quiet", *map(str, extra)]
    assert main(args) == 0


def tiny_student(teacher_dir, out_dir, *, hidden: int = 32, heads: int = 2, layers: int = 2, ffn: int = 32) -> Path:
    """A TinyBERT-style student of the teacher with dropout off, so that a training step is a function of the
    batch alone and a hand computation (or another process) can repeat it; returns its folder."""
    build_tinybert(teacher_dir, layers=layers, hidden=hidden, ffn=ffn, heads=heads, out_dir=out_dir)
    config_path = Path(out_dir) / "config.json"
    config = json.loads(config_path.read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config_path.write_text(json.dumps(config))
    return Path(out_dir)


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone --nproc_per_node nproc -m ARGS` (one CPU thread a rank),
    with this checkout importable."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "-m", *args], env=env, capture_output=True, text=True, timeout=300)


def quiet_runtime(device: str = "cpu", dtype: str | None = None) -> Runtime:
    """The runtime of the tests' training runs: one CPU thread (the suite shares its cores), no progress bars."""
    return Runtime(device=device, dtype=dtype, threads=1, quiet=True)


def check_online_matches_store(store, teacher_dir, data, extraction, student, objective, out, device) -> None:
    """`students train` of `student` twice, from the store and from the online teacher run with `extraction` (the
    store's own `hskcache extract` flags), two steps per stage at `--att-read 3,2`: the same stages, the same losses
    (the store's values are fp16 of the live floats, hence the tolerance)."""
    from students import cli

    common = ["--student", str(student), "--objective", objective, "--att-read", "3,2", "--max-steps", "2",
              "--log-every", "1", "--hsk-batch-size", "8", "--pred-batch-size", "8", "--threads", "1",
              "--select-on", "last", "--quiet", "--device", device, "--dtype", "fp32"]
    assert cli.main(["train", "--store", str(store), "--out", str(Path(out) / "offline"), *common]) == 0
    assert cli.main(["train", "--teacher", str(teacher_dir), "--data", str(data), *map(str, extraction),
                     "--out", str(Path(out) / "online"), *common]) == 0
    offline, online = ([json.loads(line) for line in (Path(out) / run / "log.jsonl").read_text().splitlines()]
                       for run in ("offline", "online"))
    assert [r["stage"] for r in offline] == ["hsk", "hsk", "pred", "pred"]
    assert [r["loss"] for r in online] == pytest.approx([r["loss"] for r in offline], rel=1e-3)


def check_against_reference(teacher_dir, data, store_path, teacher_layers, depth, tokens, strategy, width, width_strategy,
                            read=None, seed=0):
    """The store's rows (at `read`, default as stored) equal `reference.expected_selection` over a
    plain HF forward of the same texts; returns (the rows read, the opened store)."""
    texts_a, texts_b = read_csv(data)
    enc, out, tok = teacher_outputs(teacher_dir, texts_a, texts_b, MAX_LEN)
    store = hskcache.open_store(store_path)
    read = read or {}
    got = store.get(np.arange(len(texts_a)), **read)
    exp_pos, exp_hsk = expected_selection(
        enc, out, tok.sep_token_id, teacher_layers, len(out.hidden_states) - 1,
        read.get("depth", depth), read.get("tokens", tokens), strategy, read.get("width", width), width_strategy, seed)
    np.testing.assert_array_equal(got["positions"].numpy(), exp_pos)
    np.testing.assert_allclose(got["hsk"].numpy(), exp_hsk, atol=2e-3, rtol=2e-3)
    assert torch.equal(got["hsk_mask"], torch.from_numpy(exp_hsk != 0) | (got["hsk_mask"] & (got["hsk"] == 0)))
    np.testing.assert_array_equal(got["input_ids"].numpy(), enc["input_ids"].numpy())
    np.testing.assert_array_equal(got["attention_mask"].numpy(), enc["attention_mask"].numpy())
    types = enc["token_type_ids"].numpy() if "token_type_ids" in enc else np.zeros_like(enc["input_ids"].numpy())
    np.testing.assert_array_equal(got["token_type_ids"].numpy(), types)
    np.testing.assert_allclose(got["logits"].numpy(), out.logits.numpy(), atol=1e-5)
    return got, store


def arrays(url: str) -> dict[str, np.ndarray]:
    """Every array of a store (local path or fsspec URL), whole."""
    group = zarr.open_group(hskcache.storage.backends.Location.parse(url).zarr_store(read_only=True), mode="r")
    return {name: group[name][:] for name in group.array_keys()}


def assert_same_store(got: str, want: str) -> None:
    """Two complete stores hold the same arrays, bit for bit, and the same attributes."""
    a, b = arrays(got), arrays(want)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    attrs = [dict(zarr.open_group(hskcache.storage.backends.Location.parse(u).zarr_store(read_only=True), mode="r").attrs)
             for u in (got, want)]
    assert attrs[0] == attrs[1] and attrs[0]["complete"]


def store_shape(seq_len: int, vocab_size: int, num_logits: int, regression: bool, depth: int, tokens: int,
                hidden: int, width: float, width_strategy: str = "mag", width_code: str = "bitmask",
                values: str = "fp16", compress: str = "zstd", kinds=None):
    """A `StoreShape` holding the HSK at (depth, tokens, width) with these settings (and `kinds`' records)."""
    from hskcache.kinds.hsk import HSKRecord, HSKSettings
    from hskcache.store.shape import StoreShape

    hsk = HSKRecord.of(HSKSettings(depth, tokens, width, width_strategy, width_code=width_code, values=values),
                       depth, tokens, hidden)
    return StoreShape(seq_len, vocab_size, num_logits, regression, hidden, compress, {"hsk": hsk, **(kinds or {})})
