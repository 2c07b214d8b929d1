"""Where a store lives: a local folder or an fsspec URL, opened as a zarr store.

A store argument is a local path or a URL of any fsspec protocol (`s3://`,
`gs://`, `file://`, `memory://`, ...). Local folders open zarr's `LocalStore`;
every other protocol opens zarr's `FsspecStore` on fsspec's filesystem for it
(s3fs, gcsfs, ...). No transport is written here. Options such as an S3
endpoint come from where those libraries already look: fsspec's configuration
(`FSSPEC_S3_ENDPOINT_URL=...`, `~/.config/fsspec/*.json`) and the backend's own
credential chain (`AWS_ENDPOINT_URL`, `AWS_PROFILE`, ... for s3fs;
`GOOGLE_APPLICATION_CREDENTIALS` for gcsfs).
"""
from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

from .errors import UserError


def _local_store(location: Location, read_only: bool) -> Store:
    return LocalStore(location.path, read_only=read_only)


def _fsspec_store(location: Location, read_only: bool) -> Store:
    return FsspecStore.from_url(location.url, read_only=read_only)


# How each kind of filesystem becomes a zarr store; the next backend goes here.
ZARR_STORES: dict[str, Callable[[Location, bool], Store]] = {"local": _local_store, "fsspec": _fsspec_store}


@dataclass(frozen=True)
class Location:
    """A store's root: what the user passed (`url`), and fsspec's filesystem and path for it."""

    url: str
    fs: fsspec.AbstractFileSystem
    path: str

    @classmethod
    def parse(cls, url: str) -> Location:
        """Resolve a path or URL; a clear error for an unknown protocol or a missing library."""
        text = str(url)
        try:
            fs, path = fsspec.url_to_fs(text)
        except (ImportError, ValueError) as exc:
            raise UserError(f"cannot open {text}: {exc}") from None
        return cls(text, fs, path.rstrip("/") or path)

    @property
    def kind(self) -> str:
        return "local" if isinstance(self.fs, LocalFileSystem) else "fsspec"

    def __str__(self) -> str:
        return self.url

    def zarr_store(self, read_only: bool) -> Store:
        return ZARR_STORES[self.kind](self, read_only)

    def _join(self, name: str) -> str:
        return posixpath.join(self.path, name) if name else self.path

    def exists(self, name: str = "") -> bool:
        return self.fs.exists(self._join(name))

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def is_empty(self) -> bool:
        """True when nothing is there, or an empty folder (or prefix)."""
        return not self.fs.exists(self.path) or not self.fs.ls(self.path, detail=False)

    def folders(self) -> list[str]:
        """Names of the folders (prefixes) directly under the root, from a fresh listing."""
        entries = self.fs.ls(self.path, detail=True, refresh=True)
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")

    def read_json(self, name: str) -> Any | None:
        """A JSON file under the root, or None when it is missing or not JSON."""
        try:
            return json.loads(self.fs.cat_file(self._join(name)))
        except (OSError, ValueError):
            return None

    def cat(self, names: list[str]) -> dict[str, bytes | Exception]:
        """Files under the root, fetched with one fsspec `cat` (on an object store the
        requests are in flight together); a file that cannot be read maps to its error."""
        out = self._cat(names)
        missing = [name for name, got in out.items() if isinstance(got, FileNotFoundError)]
        if missing:  # s3fs sizes a file from its listing cache, which may predate the file: ask once more, uncached
            for name in missing:
                self.fs.invalidate_cache(self._join(name))  # the file's folders' listings
            out |= self._cat(missing)
        return out

    def _cat(self, names: list[str]) -> dict[str, bytes | Exception]:
        paths = {name: self._join(name) for name in names}
        fetched = self.fs.cat(list(paths.values()), on_error="return") if names else {}
        return {name: fetched.get(self.fs._strip_protocol(path), FileNotFoundError(path)) for name, path in paths.items()}

    def remove(self) -> None:
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)

    def sizes(self) -> dict[str, int]:
        """Bytes of every object under the root, by path relative to it (one listing)."""
        found = self.fs.find(self.path, detail=True)
        prefix = self.fs._strip_protocol(self.path).rstrip("/") + "/"
        out = {}
        for key, info in found.items():
            if info.get("type", "file") == "file":
                key = self.fs._strip_protocol(key)
                out[key[len(prefix):] if key.startswith(prefix) else key] = int(info["size"])
        return out
