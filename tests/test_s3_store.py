"""A store on S3 (moto's standalone server): extract, interrupt, resume, read, measure."""
from __future__ import annotations

import json
from unittest import mock

import boto3
import pytest
import torch

import hskcache
from hskcache.storage import layout
from hskcache.store import group as store_mod
from hskcache.cli.main import main
from helpers import assert_same_store
from tiny_task import CHUNK_BYTES, STORE_FLAGS, extract


def extract_args(task, out: str, device: str) -> list[str]:
    return ["extract", "--teacher", str(task.teacher), "--data", str(task.train), "--store", out,
            "--batch-size", "32", "--quiet", *map(str, STORE_FLAGS), "--device", device]


def test_extract_to_s3_resume_read_and_bytes(task, s3_bucket, monkeypatch, capsys, device, tmp_path):
    """Against the local store of the same command on `device` (the cpu case: the task's store)."""
    url = f"{s3_bucket}/runs/store"
    local_store = task.store if device == "cpu" else extract(task.teacher, task.train, tmp_path / "local",
                                                             "--device", device)
    commit, calls = store_mod.StoreWriter._commit, {"n": 0}

    def interrupted_commit(self, chunk, block):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        commit(self, chunk, block)

    with mock.patch.object(layout, "CHUNK_TARGET_BYTES", CHUNK_BYTES), \
            mock.patch.object(store_mod.StoreWriter, "_commit", interrupted_commit):
        assert main(extract_args(task, url, device)) == 130
    partial = store_mod.describe(url)
    assert not partial["complete"] and partial["rows_committed"] == 3 * hskcache.open_store(local_store).chunk_rows
    with pytest.raises(hskcache.errors.UserError, match="incomplete"):
        hskcache.open_store(url)

    extract(task.teacher, task.train, url, "--device", device)  # the same command resumes on S3
    assert_same_store(url, str(local_store))  # the local store of the same command, array for array

    # Bytes: what the store reports equals S3's own listing, and the local store's.
    bucket, _, prefix = url[len("s3://"):].partition("/")
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]
    by_array: dict[str, int] = {}
    for item in listing:
        name = item["Key"][len(prefix) + 1:].split("/")[0]
        if name not in ("zarr.json", store_mod.COMMITS):
            by_array[name] = by_array.get(name, 0) + item["Size"]
    assert store_mod.on_disk_bytes(url) == by_array == store_mod.on_disk_bytes(str(local_store))
    capsys.readouterr()
    assert main(["inspect", "--store", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and info["total_bytes"] == sum(item["Size"] for item in listing)
    assert main(["budget", url]) == 0 and "bytes on disk per array" in capsys.readouterr().out

    # Batches from S3 are the local store's batches.
    remote, local = hskcache.open_store(url), hskcache.open_store(local_store)
    read = dict(shuffle=True, seed=3, epoch=1, depth=2, tokens=4, width=0.25)
    for a, b in zip(remote.batches(16, **read), local.batches(16, **read), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
