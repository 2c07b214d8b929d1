"""Store locations: local paths and fsspec URLs (s3:// on moto's server, memory://, file://) as zarr stores."""
from __future__ import annotations

import os

import boto3
import numpy as np
import pytest
import zarr
from zarr.storage import FsspecStore, LocalStore

from hskcache.errors import UserError
from hskcache.storage.backends import Location

CHUNK_BYTES = 10 * 8 * 4  # chunks of (10, 8) float32, uncompressed


def write_group(location: Location) -> np.ndarray:
    data = np.arange(100 * 8, dtype=np.float32).reshape(100, 8)
    group = zarr.open_group(location.zarr_store(read_only=False), mode="w")
    group.create_array("x", shape=data.shape, chunks=(10, 8), dtype=data.dtype, compressors=None)[:] = data
    group.attrs["format"] = "test"
    return data


def listed(url: str, tmp_path) -> dict[str, int]:
    """Object sizes from a client that is not fsspec: the file system, or boto3 for S3."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        objects = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]
        return {o["Key"][len(prefix) + 1:]: o["Size"] for o in objects}
    root = url.removeprefix("file://")
    return {os.path.relpath(os.path.join(d, f), root): os.path.getsize(os.path.join(d, f))
            for d, _, files in os.walk(root) for f in files}


@pytest.mark.parametrize("kind", ["path", "file", "memory", "s3"])
def test_a_store_round_trips_at_every_kind_of_location(kind, tmp_path, request):
    url = {"path": lambda: str(tmp_path / "store"), "file": lambda: f"file://{tmp_path}/store",
           "memory": lambda: f"memory://location-test/{os.urandom(4).hex()}",
           "s3": lambda: request.getfixturevalue("s3_bucket") + "/store"}[kind]()
    location = Location.parse(url)
    assert isinstance(location.zarr_store(read_only=True), LocalStore if kind in ("path", "file") else FsspecStore)
    assert location.is_empty() and not location.exists("zarr.json")
    data = write_group(location)
    reopened = zarr.open_group(Location.parse(url).zarr_store(read_only=True), mode="r")
    np.testing.assert_array_equal(reopened["x"][:], data)
    assert location.read_json("zarr.json")["attributes"] == {"format": "test"}
    assert location.read_json("missing.json") is None and not location.is_empty() and not location.is_file()
    sizes = location.sizes()
    assert {k: v for k, v in sizes.items() if "/c/" in k} == {f"x/c/{i}/0": CHUNK_BYTES for i in range(10)}
    if kind != "memory":
        assert sizes == listed(url, tmp_path)
    location.remove()
    assert location.is_empty()


def test_unknown_protocols_are_one_line_errors():
    with pytest.raises(UserError, match="cannot open nosuchprotocol://bucket/store"):
        Location.parse("nosuchprotocol://bucket/store")
