"""Store schema 4: width codes, value formats and compression decode to the same
batches; old stores are refused clearly; the reader's batches do not depend on
threads or DataLoader workers, and the packed form expands to the dense one."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

import hskcache
from conftest import DEVICES, on_device
from hskcache.cli.main import main
from hskcache.errors import UserError
from hskcache.kinds import KINDS
from hskcache.kinds.hsk import HSKRead
from hskcache.storage.backends import Location
from hskcache.storage.packed import PackedBatch, expand
from hskcache.store.group import StoreData
from hskcache.store.shape import StoreShape

ARGS = ["--student-layers", "2", "--depth", "2", "--tokens", "6", "--width", "0.25", "--max-length", "24",
        "--batch-size", "8", "--quiet"]


def extract(teacher_dir, data, out, *extra) -> hskcache.store.reader.HSKStore:
    assert main(["extract", "--teacher", str(teacher_dir), "--data", str(data), "--store", str(out), *ARGS, *extra]) == 0
    return hskcache.open_store(out)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module", params=DEVICES)
def stores(request, tmp_path_factory, teacher_dir, single_csv):
    """One store per codec, extracted on the device (where selection, int8 scaling and bit packing run)."""
    root = tmp_path_factory.mktemp("codecs")
    variants = {"bitmask": [], "rank": ["--width-code", "rank"], "indices": ["--width-code", "indices"],
                "none": ["--compress", "none"], "int8": ["--values", "int8"]}
    with pytest.MonkeyPatch.context() as patch, on_device(request.param) as device:
        patch.setattr(hskcache.storage.layout, "CHUNK_TARGET_BYTES", 1000)  # small chunks: several per store
        out = {name: extract(teacher_dir, single_csv, root / name, *flags, "--device", device)
               for name, flags in variants.items()}
    assert all(s.chunk_rows < s.num_examples / 3 for s in out.values())
    return out


def test_codes_and_compression_decode_to_identical_batches(stores):
    rows = np.arange(stores["bitmask"].num_examples)
    reference = stores["bitmask"].get(rows)
    for name in ("rank", "indices", "none"):
        assert_same(stores[name].get(rows), reference)
        for read in ({"depth": 1, "tokens": 3, "width": 0.125}, {"width": 0.2}):
            assert_same(stores[name].get(rows, **read), stores["bitmask"].get(rows, **read))
    def codecs(name: str) -> list[str]:
        return [type(c).__name__ for c in zarr.open_group(str(stores[name].path), mode="r")["values"].compressors]

    assert codecs("bitmask") == ["BloscCodec", "Crc32cCodec"] and codecs("none") == ["Crc32cCodec"]  # always checksummed
    assert stores["rank"].width_encoding == "rank"


@pytest.mark.parametrize("through_zarr", [False, True])
def test_reader_chunks_equal_zarrs_own_read(stores, monkeypatch, through_zarr):
    """StoreData.read_chunk (numcodecs, straight into a given buffer) against zarr's read of
    the same rows, for every codec the stores use; with no decoders, it reads through zarr."""
    if through_zarr:
        monkeypatch.setattr(hskcache.storage.chunks, "DECODERS", {})
    for name in ("bitmask", "none", "int8", "rank"):
        data = StoreData(stores[name].path)
        names = [n for n in data.arrays if n != "static_dims"]
        assert all((data._decoders[n] is None) == (through_zarr and len(data.arrays[n].compressors) > 1) for n in names)
        codecs = {type(c).__name__ for n in names for c in data.arrays[n].compressors}
        assert codecs == {"Crc32cCodec"} | (set() if name == "none" else {"ZstdCodec"} | ({"BloscCodec"} if name != "int8" else set()))
        chunks = -(-data.num_examples // data.chunk_rows)
        for chunk in (0, chunks - 1):  # a whole chunk and the (shorter) last one
            lo, hi = chunk * data.chunk_rows, min((chunk + 1) * data.chunk_rows, data.num_examples)
            buffers = {n: np.full(data.arrays[n].chunks, 7, dtype=data.arrays[n].dtype) for n in names[::2]}
            got = data.read_chunk(names, chunk, buffers)
            for n in names:
                np.testing.assert_array_equal(got[n], data.arrays[n][lo:hi])
                assert got[n].dtype == data.arrays[n].dtype
            for n, buffer in buffers.items():
                np.testing.assert_array_equal(buffer[:hi - lo], data.arrays[n][lo:hi])


def test_store_data_makes_its_shape_once(stores, monkeypatch):
    """StoreData's shape is the metadata's, made when it opens: reading rows, chunks and the chunk size
    makes no other."""
    data = StoreData(stores["rank"].path)
    assert data.shape == StoreShape.of_store(data.meta)
    made = []
    of_store = StoreShape.of_store
    monkeypatch.setattr(StoreShape, "of_store", classmethod(lambda cls, meta: made.append(meta) or of_store(meta)))
    names = [a.name for a in data.shape.arrays()]
    assert data.chunk_rows == data.arrays[names[0]].chunks[0]
    data.read(names, np.arange(data.num_examples))
    data.read_chunk(names, 0)
    assert not made


def test_int8_values_are_fp16_values_within_half_a_step(stores):
    rows = np.arange(stores["int8"].num_examples)
    exact, lossy = stores["bitmask"].get(rows), stores["int8"].get(rows)
    assert torch.equal(exact["hsk_mask"], lossy["hsk_mask"]) and torch.equal(exact["positions"], lossy["positions"])
    # per vector: |error| <= scale / 2 with scale = absmax / 127 (plus fp16 rounding of the reference)
    absmax = exact["hsk"].abs().amax(-1, keepdim=True)
    assert ((lossy["hsk"] - exact["hsk"]).abs() <= absmax / 127 / 2 + 1e-3 * absmax + 1e-6).all()
    assert not torch.equal(exact["hsk"], lossy["hsk"])  # it is lossy
    z = zarr.open_group(str(stores["int8"].path), mode="r")
    assert z["values"].dtype == np.int8 and z["value_scale"].dtype == np.float16


def test_old_schema_store_is_refused_with_the_fix(stores, tmp_path, teacher_dir, single_csv):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(stores["none"].path, old)
    zarr.open_group(str(old), mode="r+").attrs["schema_version"] = 1
    with pytest.raises(UserError) as exc:
        hskcache.open_store(old)
    message = str(exc.value)
    assert "schema 1" in message and "--overwrite" in message and "\n" not in message
    # rerunning the same extraction on it says the same, and leaves it untouched
    before = {p.name: p.stat().st_mtime_ns for p in old.rglob("*")}
    assert main(["extract", "--teacher", str(teacher_dir), "--data", str(single_csv), "--store", str(old), *ARGS,
                 "--compress", "none"]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in old.rglob("*")} == before


def _collect(iterator) -> list[dict]:
    return [expand(b) if isinstance(b, PackedBatch) else b for b in iterator]


@pytest.mark.parametrize("read", [{}, {"depth": 1, "tokens": 4, "width": 0.125}])
def test_reader_batches_do_not_depend_on_threads_or_workers(stores, read):
    store = stores["rank"]
    kwargs = dict(shuffle=True, seed=3, epoch=1, window_chunks=1, **read)
    one = _collect(store.batches(5, threads=1, **kwargs))
    assert len(one) == store.num_batches(5)
    # the rows of one epoch, each once, in a shuffled order, equal to random access
    ids = torch.cat([b["example_id"] for b in one])
    assert sorted(ids.tolist()) == list(range(store.num_examples)) and ids.tolist() != sorted(ids.tolist())
    for batch in one:
        assert_same(batch, store.get(batch["example_id"].numpy(), **read))
    for other in (_collect(store.batches(5, threads=4, **kwargs)),
                  _collect(store.batches(5, threads=3, packed=True, **kwargs)),
                  _collect(torch.utils.data.DataLoader(store.dataset(5, packed=True, **kwargs), batch_size=None,
                                                       num_workers=2))):
        assert len(other) == len(one)
        for a, b in zip(one, other):
            assert_same(a, b)
    # resuming mid-epoch gives the tail of the same order
    tail = _collect(store.batches(5, threads=2, start_batch=3, **kwargs))
    for a, b in zip(one[3:], tail):
        assert_same(a, b)


def test_packed_batch_expands_like_a_dense_scatter(stores):
    """expand() against a plain loop: kept values at their dimensions, zero elsewhere."""
    store = stores["bitmask"]
    batch = next(store.batches(4, shuffle=False, packed=True, threads=1))
    dense = expand(batch)
    values = batch.tensors["values"].float()
    bits = np.unpackbits(batch.tensors["width_code"].numpy(), axis=-1, bitorder="little")[..., :store.hidden]
    for b, j, t in np.ndindex(*values.shape[:3]):
        dims = np.nonzero(bits[b, j, t])[0]
        expected = torch.zeros(store.hidden)
        expected[dims] = values[b, j, t]
        filled = batch.tensors["positions"][b, j, t] >= 0
        assert torch.equal(dense["hsk"][b, j, t], expected)
        assert dense["hsk_mask"][b, j, t].nonzero().flatten().tolist() == (dims.tolist() if filled else [])


def test_a_read_without_the_hsk_fetches_none_of_its_arrays(stores, monkeypatch):
    """A read whose HSK settings are none (a prediction stage's, `HSKRead(None)`) fetches no chunk of an
    HSK array (so decodes none), by `get` and by `batches`; what it returns is the full read's other entries."""
    store = stores["int8"]  # every HSK array: positions, int8 values, their scales, width codes
    hsk = {a.name for a in KINDS["hsk"].arrays(StoreShape.of_store(store.meta))}
    assert hsk >= {"positions", "values", "value_scale", "width_code"}
    fetched: list[str] = []
    cat = Location.cat
    monkeypatch.setattr(Location, "cat", lambda self, keys: fetched.extend(k.split("/")[0] for k in keys) or cat(self, keys))
    rows = np.arange(store.num_examples)
    full = store.get(rows)
    assert hsk <= set(fetched)  # the spy sees the full read's HSK chunks
    dense = {"positions", "hsk", "hsk_mask"}  # the HSK's entries of a batch
    assert dense <= full.keys()

    none = {"kinds": {"hsk": HSKRead(None)}}
    fetched.clear()
    got = store.get(rows, **none)
    assert fetched and not hsk & set(fetched)
    assert got.keys() == full.keys() - dense
    assert_same(got, {k: full[k] for k in got})

    fetched.clear()
    batches = _collect(store.batches(5, seed=3, threads=2, **none))
    assert fetched and not hsk & set(fetched)
    assert sum(len(b["example_id"]) for b in batches) == store.num_examples
    for batch in batches:
        assert_same(batch, {k: full[k][batch["example_id"]] for k in batch})

    with pytest.raises(UserError, match="once"):  # the HSK's read given twice
        store.get(rows, depth=1, **none)
