"""The Zarr v3 group on disk: create, resume, commit rows, read rows. numpy only.

Rows are written a whole chunk at a time and `rows_committed` advances only
after every array's chunk is on disk, so a run killed at any point leaves
committed rows intact and the rerun rewrites just the uncommitted tail.

Each array's codec is named by its `layout.ArraySpec` and built from
`CODECS`; the level is the one measured in docs/design.md ("Codecs").
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from typing import Callable

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from .errors import UserError
from .layout import StoreShape

SCHEMA_VERSION = 3  # 2: settings `store` and `width_seed`; 3: codecs, width_code/values/compress settings
FORMAT = "hskcache"
# docs/design.md ("Codecs"): level 1 keeps 93-100% of level 3's ratio and writes about twice as fast;
# negative levels skip entropy coding and leave fp16 values and bitmasks nearly uncompressed.
ZSTD_LEVEL = 1
# Codec name (layout.ArraySpec.codec) -> the Zarr v3 compressors of an array.
CODECS: dict[str, Callable[[], list | None]] = {
    "zstd": lambda: [ZstdCodec(level=ZSTD_LEVEL)],
    "none": lambda: None,
}


def schema_error(path: Path | str, version: Any) -> UserError:
    return UserError(f"store {path} was written with store schema {version}, this hskcache reads schema {SCHEMA_VERSION}; "
                     "re-extract it: rerun its `hskcache extract` command with --overwrite")


def _is_store(path: Path) -> bool:
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return attrs.get("format") == FORMAT


def on_disk_bytes(path: Path | str) -> dict[str, int]:
    """Stored bytes of every array (compressed chunks and metadata)."""
    group = zarr.open_group(str(path), mode="r")
    return {name: int(arr.nbytes_stored()) for name, arr in sorted(group.arrays())}


class StoreWriter:
    """Appends committed rows to a new or partially written store."""

    def __init__(self, group: zarr.Group, shape: StoreShape, num_examples: int):
        self.group = group
        self.shape = shape
        self.num_examples = num_examples
        self.chunk_rows = shape.rows_per_chunk(num_examples)
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._buffered = 0

    @property
    def rows_committed(self) -> int:
        return int(self.group.attrs["rows_committed"])

    @classmethod
    def open(
        cls,
        path: str | Path,
        shape: StoreShape,
        num_examples: int,
        attrs: dict[str, Any],
        static_dims: np.ndarray | None,
        overwrite: bool,
    ) -> "StoreWriter":
        """Resume a store with identical settings, else create one (refusing to clobber)."""
        path = Path(path)
        if path.is_file():
            raise UserError(f"--out {path} is a file; pass a directory path for the store")
        if path.exists():
            if not _is_store(path):
                if any(path.iterdir()):
                    raise UserError(f"--out {path} exists and is not an hskcache store; choose a new path")
            else:
                group = zarr.open_group(str(path), mode="r+")
                version = group.attrs.get("schema_version")
                if version != SCHEMA_VERSION and not overwrite:
                    raise schema_error(path, version)
                if group.attrs.get("identity") == attrs["identity"] and not overwrite:
                    return cls(group, shape, num_examples)
                if not overwrite:
                    raise UserError(
                        f"store {path} was written with different settings or teacher/data; "
                        "pass --overwrite to replace it or choose another --out"
                    )
                shutil.rmtree(path)
        group = zarr.open_group(str(path), mode="w")
        rows = shape.rows_per_chunk(num_examples)
        for spec in shape.arrays():
            group.create_array(
                spec.name,
                shape=(num_examples, *spec.row_shape),
                chunks=(rows, *spec.row_shape),
                dtype=spec.dtype,
                compressors=CODECS[spec.codec](),
                fill_value=spec.fill,
                config={"write_empty_chunks": True},
            )
        if static_dims is not None:
            group.create_array("static_dims", data=np.asarray(static_dims, dtype=np.int32), compressors=None)
        group.attrs.update({**attrs, "format": FORMAT, "schema_version": SCHEMA_VERSION,
                            "rows_committed": 0, "complete": False})
        return cls(group, shape, num_examples)

    def append(self, rows: dict[str, np.ndarray]) -> None:
        """Buffer rows (in order) and write every chunk that is now full."""
        for name, value in rows.items():
            self._buffer.setdefault(name, []).append(value)
        self._buffered += len(next(iter(rows.values())))
        start = self.rows_committed
        end_of_data = start + self._buffered >= self.num_examples
        while self._buffered >= self.chunk_rows or (end_of_data and self._buffered):
            self._commit(min(self.chunk_rows, self._buffered))

    def _commit(self, n: int) -> None:
        start = self.rows_committed
        for name, parts in self._buffer.items():
            block = np.concatenate(parts) if len(parts) > 1 else parts[0]
            self.group[name].with_config({"write_empty_chunks": True})[start:start + n] = block[:n]
            self._buffer[name] = [block[n:]] if len(block) > n else []
        self._buffered -= n
        self.group.attrs["rows_committed"] = start + n

    def finish(self) -> None:
        if self.rows_committed != self.num_examples:
            raise RuntimeError(f"finish() with {self.rows_committed}/{self.num_examples} rows committed")
        self.group.attrs["complete"] = True


class StoreData:
    """Read-only numpy access to a complete store."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.exists():
            raise UserError(f"store {path} does not exist")
        if not _is_store(path):
            raise UserError(f"{path} is not an hskcache store (no hskcache zarr.json); run `hskcache extract` first")
        self.path = path
        self.group = zarr.open_group(str(path), mode="r")
        self.attrs = dict(self.group.attrs)
        if self.attrs.get("schema_version") != SCHEMA_VERSION:
            raise schema_error(path, self.attrs.get("schema_version"))
        if not self.attrs.get("complete"):
            raise UserError(
                f"store {path} is incomplete ({self.attrs.get('rows_committed')}/{self.attrs.get('num_examples')} rows); "
                "rerun the same `hskcache extract` command to finish it"
            )
        self.arrays = {name: self.group[name] for name in self.group.array_keys()}

    @property
    def num_examples(self) -> int:
        return int(self.attrs["num_examples"])

    @property
    def chunk_rows(self) -> int:
        return int(self.arrays["values"].chunks[0])

    def read(self, names: list[str], rows: np.ndarray | slice) -> dict[str, np.ndarray]:
        """Rows of the named arrays; a slice reads whole chunks, an index array reads selected rows."""
        out = {}
        for name in names:
            arr = self.arrays[name]
            if isinstance(rows, slice):
                out[name] = arr[rows]
            else:
                out[name] = arr.get_orthogonal_selection((np.asarray(rows, dtype=np.int64),) + (slice(None),) * (arr.ndim - 1))
        return out

    def static_dims(self) -> np.ndarray | None:
        return self.arrays["static_dims"][:] if "static_dims" in self.arrays else None


def describe(path: str | Path) -> dict[str, Any]:
    """What `hskcache inspect` prints; works on incomplete stores too."""
    path = Path(path)
    if not _is_store(path):
        raise UserError(f"{path} is not an hskcache store; run `hskcache extract` first")
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    return {
        "path": str(path),
        "complete": bool(attrs.get("complete")),
        "rows_committed": attrs.get("rows_committed"),
        "num_examples": attrs.get("num_examples"),
        "teacher": attrs.get("teacher"),
        "teacher_layers": attrs.get("teacher_layers"),
        "schema_version": attrs.get("schema_version"),
        "width_encoding": attrs.get("width_encoding"),
        "config": attrs.get("config"),
        "bytes": on_disk_bytes(path),
        "total_bytes": sum(os.path.getsize(f) for f in path.rglob("*") if f.is_file()),
    }
