"""The store is never silently wrong: checksummed chunks, damage found and repaired,
concurrent creation, and storage faults as one line (issue 18, part A).

Damage is made by hand (a flipped byte, a truncated or deleted chunk file) on a
copy of a store whose other copy stays clean; reads, `hskcache verify` and the
rerun extraction are compared with the clean copy, array for array.
"""
from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import boto3
import numpy as np
import pytest
import zarr

import hskcache
from hskcache.storage import layout, backends as storage
from hskcache.store import group as store_mod
from hskcache.storage.chunks import BadChunk
from hskcache.cli.main import main
from hskcache.errors import UserError
from hskcache.store.shape import StoreShape
from students import cli as students_cli
from helpers import assert_same_store
from tiny_task import CHUNK_BYTES, STORE_FLAGS, extract

TESTS = Path(__file__).resolve().parent


def extract_args(task, out) -> list[str]:
    return ["extract", "--teacher", str(task.teacher), "--data", str(task.train), "--store", str(out),
            "--batch-size", "32", "--quiet", *map(str, STORE_FLAGS)]


def chunk_file(root: Path, array: str, chunk: int) -> Path:
    """The file of chunk `chunk` of a local store's array (zarr's default key encoding: c/<chunk>/0/...)."""
    arr = zarr.open_group(str(root), mode="r")[array]
    return root / store_mod.chunk_key(arr, array, chunk)


def flip(data: bytes) -> bytes:
    """One byte in the middle inverted."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


# (array, chunk, what is done to its file): one of each kind of damage, in different chunks
DAMAGE = (("values", 1, "flip"), ("logits", 2, "truncate"), ("length", 3, "delete"))


def damage_local(root: Path) -> None:
    for array, chunk, how in DAMAGE:
        path = chunk_file(root, array, chunk)
        if how == "flip":
            path.write_bytes(flip(path.read_bytes()))
        elif how == "truncate":
            path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
        else:
            path.unlink()


def one_line_error(capsys, code: int, prog: str = "hskcache") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"{prog}: error: "), (code, err)
    return err[0]


@pytest.fixture
def damaged(task, tmp_path) -> Path:
    path = tmp_path / "damaged"
    shutil.copytree(task.store, path)
    damage_local(path)
    return path


def test_every_chunk_carries_a_crc32c_checksum(task):
    group = zarr.open_group(str(task.store), mode="r")
    for name in group.array_keys():
        assert type(group[name].compressors[-1]).__name__ == "Crc32cCodec", name
    # the file is the compressed bytes, then their CRC-32C (computed here with the library zarr uses)
    import google_crc32c

    data = chunk_file(task.store, "values", 0).read_bytes()
    assert google_crc32c.value(data[:-4]) == int.from_bytes(data[-4:], "little")


@pytest.mark.parametrize("array, chunk, how", DAMAGE)
def test_damaged_chunk_is_one_line_never_fill_values(task, tmp_path, array, chunk, how):
    path = tmp_path / "s"
    shutil.copytree(task.store, path)
    target = chunk_file(path, array, chunk)
    if how == "flip":
        target.write_bytes(flip(target.read_bytes()))
    elif how == "truncate":
        target.write_bytes(target.read_bytes()[:-7])
    else:
        target.unlink()
    store, clean = hskcache.open_store(path), hskcache.open_store(task.store)
    rows = np.arange(chunk * store.chunk_rows, (chunk + 1) * store.chunk_rows)
    for read in (lambda: store.get(rows), lambda: list(store.batches(16, shuffle=False))):
        with pytest.raises(BadChunk) as caught:
            read()
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and f"chunk {chunk} of array {array}" in message
        assert "hskcache verify" in message and "re-extract" in message
        assert ("missing" if how == "delete" else "checksum") in message
    # other chunks still read, equal to the clean store's
    other = np.arange(((chunk + 1) % 4) * store.chunk_rows, ((chunk + 1) % 4 + 1) * store.chunk_rows)
    want = clean.get(other)
    assert all(np.array_equal(v, want[k]) for k, v in store.get(other).items())


def test_corrupt_width_code_is_detected_not_shifted_into_other_rows(task, tmp_path):
    """Before checksums, a bad width code in chunk 1 shifted the values of every later row of
    the same get(). Now the read of rows across chunks 1 and 2 is refused, and chunk 2 alone reads as stored."""
    path = tmp_path / "s"
    shutil.copytree(task.store, path)
    target = chunk_file(path, "width_code", 1)
    target.write_bytes(flip(target.read_bytes()))
    store, clean = hskcache.open_store(path), hskcache.open_store(task.store)
    cr = store.chunk_rows
    with pytest.raises(BadChunk, match="chunk 1 of array width_code"):
        store.get(np.arange(cr + cr // 2, 2 * cr + cr // 2))
    later = np.arange(2 * cr, 3 * cr)
    got, want = store.get(later), clean.get(later)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_training_on_a_store_with_a_missing_chunk_stops_in_one_line(task, damaged, tmp_path, capsys):
    student = tmp_path / "student"
    assert students_cli.main(["build", "tinybert", "--init", "random", "--teacher", str(task.teacher), "--layers", "2",
                              "--hidden", "16", "--ffn", "32", "--heads", "2", "--out", str(student)]) == 0
    capsys.readouterr()
    code = students_cli.main(["train", "--store", str(damaged), "--student", str(student), "--out",
                              str(tmp_path / "run"), "--max-steps", "40", "--hsk-epochs", "1", "--pred-epochs", "1",
                              "--threads", "1", "--quiet"])
    message = one_line_error(capsys, code, "students")
    assert str(damaged) in message and "of array" in message and "hskcache verify" in message
    assert not (tmp_path / "run" / "student").exists()


def test_verify_repair_and_rerun_restore_the_clean_store(task, damaged, capsys):
    capsys.readouterr()
    assert main(["verify", "--store", str(damaged), "--quiet"]) == 1
    out = capsys.readouterr().out
    listed = {(line.split()[0], int(line.split()[2].rstrip(":"))) for line in out.splitlines() if line.startswith("  ")}
    assert listed == {(array, chunk) for array, chunk, _ in DAMAGE}, out
    untouched = {p: p.stat().st_mtime_ns for p in (damaged / "values" / "c").iterdir() if int(p.name) not in (1, 2, 3)}

    assert main(["verify", "--store", str(damaged), "--repair", "--quiet"]) == 0
    assert "chunks 1, 2, 3" in capsys.readouterr().out
    with pytest.raises(UserError, match="incomplete"):
        hskcache.open_store(damaged)
    assert main(["verify", "--store", str(damaged), "--quiet"]) == 0  # the uncommitted chunks are not damage
    assert "0 bad" in capsys.readouterr().out

    with mock.patch.object(layout, "CHUNK_TARGET_BYTES", CHUNK_BYTES):
        assert main(extract_args(task, damaged)) == 0
    assert_same_store(str(damaged), str(task.store))
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # only the damaged chunks were rewritten
    assert main(["verify", "--store", str(damaged), "--quiet"]) == 0


def test_verify_repair_on_s3(task, s3_bucket, capsys):
    url = f"{s3_bucket}/store"
    extract(task.teacher, task.train, url)
    s3 = boto3.client("s3")
    bucket, prefix = url[len("s3://"):].split("/", 1)
    group = zarr.open_group(storage.Location.parse(url).zarr_store(read_only=True), mode="r")
    for array, chunk, how in DAMAGE:
        key = f"{prefix}/{store_mod.chunk_key(group[array], array, chunk)}"
        if how == "delete":
            s3.delete_object(Bucket=bucket, Key=key)
            continue
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=bucket, Key=key, Body=flip(data) if how == "flip" else data[:len(data) // 2])
    with pytest.raises(BadChunk):
        hskcache.open_store(url).get(np.arange(hskcache.open_store(url).num_examples))
    capsys.readouterr()
    assert main(["verify", "--store", url, "--quiet"]) == 1
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]) == len(DAMAGE)
    assert main(["verify", "--store", url, "--repair", "--quiet"]) == 0
    with mock.patch.object(layout, "CHUNK_TARGET_BYTES", CHUNK_BYTES):
        assert main(extract_args(task, url)) == 0
    assert_same_store(url, str(task.store))


def test_a_deleted_array_folder_is_refused_then_repaired(task, tmp_path, capsys):
    path = tmp_path / "s"
    shutil.copytree(task.store, path)
    shutil.rmtree(path / "logits")
    with pytest.raises(UserError, match="array logits .* is missing.*--repair"):
        hskcache.open_store(path)
    capsys.readouterr()
    assert main(["verify", "--store", str(path), "--quiet"]) == 1
    assert main(["verify", "--store", str(path), "--quiet", "--repair"]) == 0
    with mock.patch.object(layout, "CHUNK_TARGET_BYTES", CHUNK_BYTES):
        assert main(extract_args(task, path)) == 0
    assert_same_store(str(path), str(task.store))


def test_schema_3_store_without_checksums_is_refused_with_the_fix(task, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(task.store, old)
    zarr.open_group(str(old), mode="r+").attrs["schema_version"] = 3
    with pytest.raises(UserError) as caught:
        hskcache.open_store(old)
    assert "schema 3" in str(caught.value) and "checksum" in str(caught.value) and "--overwrite" in str(caught.value)


@pytest.mark.parametrize("where", ["zarr.json", "values/zarr.json"])
def test_corrupt_metadata_is_one_line_on_open_inspect_verify_and_resume(task, tmp_path, capsys, where):
    """The root's zarr.json (the store's bookkeeping) cannot be rebuilt: every command refuses the
    store and changes nothing. An array's zarr.json follows from the settings: rerunning the
    extraction writes it again, identical to the clean store's."""
    path = tmp_path / "s"
    shutil.copytree(task.store, path)
    (path / where).write_text('{"zarr_format": 3, "node_ty')
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=f"{where} is corrupt"):
        hskcache.open_store(path)
    for argv in (["inspect", "--store", str(path)], ["verify", "--store", str(path)]):
        capsys.readouterr()
        assert where in one_line_error(capsys, main(argv))
    capsys.readouterr()
    with mock.patch.object(layout, "CHUNK_TARGET_BYTES", CHUNK_BYTES):
        code = main(extract_args(task, path))
    if where == "zarr.json":
        assert where in one_line_error(capsys, code)
        assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    else:
        assert code == 0 and (path / where).read_bytes() == (task.store / where).read_bytes()
        assert_same_store(str(path), str(task.store))


def test_full_disk_during_extraction_is_one_line_and_resumable(task, tmp_path, capsys):
    out = tmp_path / "full"
    put, calls = zarr.storage._local._put, {"n": 0}

    def put_until_full(path, value, exclusive=False):
        calls["n"] += 1
        if calls["n"] > 40 and "/c/" in str(path):  # after the metadata and a few chunks: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return put(path, value, exclusive=exclusive)

    with mock.patch.object(zarr.storage._local, "_put", put_until_full), \
            mock.patch.object(layout, "CHUNK_TARGET_BYTES", CHUNK_BYTES):
        message = one_line_error(capsys, main(extract_args(task, out)))
    assert "no space left on device" in message and "more is needed for the" in message and "rerun" in message
    partial = store_mod.describe(str(out))
    assert not partial["complete"] and 0 < partial["rows_committed"] < partial["num_examples"]
    capsys.readouterr()
    assert main(["verify", "--store", str(out), "--quiet"]) == 0  # committed chunks are whole
    with mock.patch.object(layout, "CHUNK_TARGET_BYTES", CHUNK_BYTES):
        assert main(extract_args(task, out)) == 0
    assert_same_store(str(out), str(task.store))


def _create_at(url: str, at: float, results) -> None:
    data = store_mod.StoreData(url.rsplit("/", 1)[0] + "/clean")
    shape = StoreShape.of_store(data.meta)
    while time.time() < at:
        pass
    try:
        store_mod.StoreWriter.create(url, shape, data.num_examples, data.meta, {}, overwrite=False)
        store_mod.StoreWriter.attach(url, shape, data.num_examples)
        results.put("ok")
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {exc}")


def test_creation_is_idempotent_for_writers_starting_together(task, tmp_path):
    """Eight processes create the same store at the same instant, five times: none fails, and
    the store is the one a single writer creates (zarr's 'already exists' errors are success)."""
    shutil.copytree(task.store, tmp_path / "clean")
    context = multiprocessing.get_context("fork")
    for trial in range(5):
        url = str(tmp_path / f"race{trial}")
        results = context.Queue()
        at = time.time() + 1.5
        workers = [context.Process(target=_create_at, args=(url, at, results)) for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert [results.get(timeout=5) for _ in workers] == ["ok"] * 8, trial
        assert store_mod.describe(url)["rows_committed"] == 0


def test_shards_started_at_the_same_instant_complete_the_store(task, tmp_path):
    """`--shard 0/2` and `1/2` as two processes that create the store at the same instant (a
    barrier in tests/hooked_cli.py), twice: both succeed and the store is the one-process store."""
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    for trial in range(2):
        out = tmp_path / f"shards{trial}"
        barrier = tmp_path / f"barrier{trial}"
        barrier.mkdir()
        env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "TEST_CHUNK_BYTES": str(CHUNK_BYTES),
               "TEST_CREATE_BARRIER": str(barrier), "TEST_CREATE_PARTIES": "2"}  # both create the store together
        shards = [subprocess.Popen([sys.executable, "-m", "hooked_cli", *extract_args(task, out), "--shard", f"{i}/2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for i in range(2)]
        done = [p.communicate(timeout=300) for p in shards]
        assert [p.returncode for p in shards] == [0, 0], [err[-2000:] for _, err in done]
        assert any("wrote" in stdout for stdout, _ in done)  # the last to finish completes the store
        assert_same_store(str(out), str(task.store))


@pytest.fixture
def fast_failing_s3(monkeypatch):
    """botocore tries once: an endpoint that is down fails at once instead of after retries."""
    import s3fs

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps one filesystem per set of arguments, made
    yield  # with the environment it was made in; these tests change the environment
    s3fs.S3FileSystem.clear_instance_cache()


def test_missing_bucket_is_one_line(task, s3_endpoint, fast_failing_s3, capsys):
    url = "s3://no-such-bucket/store"
    for argv in (["inspect", "--store", url], ["verify", "--store", url], extract_args(task, url)):
        capsys.readouterr()
        message = one_line_error(capsys, main(argv))
        assert "bucket does not exist" in message or "bucket no-such-bucket does not exist" in message


def test_endpoint_down_is_one_line(task, s3_endpoint, fast_failing_s3, monkeypatch, capsys):
    from s3_server import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    for argv in (["inspect", "--store", "s3://bucket/store"], extract_args(task, "s3://bucket/store")):
        capsys.readouterr()
        assert "cannot reach the storage endpoint" in one_line_error(capsys, main(argv))


def test_refused_credentials_are_one_line(task, s3_endpoint, fast_failing_s3, monkeypatch, capsys):
    from s3_server import moto_server

    with moto_server(check_credentials=True) as strict:
        monkeypatch.setenv("AWS_ENDPOINT_URL", strict)
        for argv in (["inspect", "--store", "s3://bucket/store"], extract_args(task, "s3://bucket/store")):
            capsys.readouterr()
            assert "access refused" in one_line_error(capsys, main(argv))
