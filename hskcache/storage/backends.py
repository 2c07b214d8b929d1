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

import errno
import json
import posixpath
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

from hskcache.errors import UserError


def _local_store(location: Location, read_only: bool) -> Store:
    return LocalStore(location.path, read_only=read_only)


def _fsspec_store(location: Location, read_only: bool) -> Store:
    return FsspecStore.from_url(location.url, read_only=read_only)


def _named(exc: BaseException, *names: str) -> bool:
    """Whether the exception's class (e.g. botocore's, without importing it) has one of these names."""
    return type(exc).__name__ in names


@dataclass(frozen=True)
class Fault:
    """A storage failure a user can fix: how to recognise one exception of its chain, what to say."""

    match: Callable[[BaseException], bool]
    say: Callable[[BaseException], str]


# The storage failures said in one line; the next backend's go here. s3fs raises FileNotFoundError
# or PermissionError over botocore's errors, and botocore raises over aiohttp's connection errors.
FAULTS: dict[str, Fault] = {
    "disk full": Fault(lambda e: isinstance(e, OSError) and e.errno == errno.ENOSPC,
                       lambda e: "no space left on device"),
    "no bucket": Fault(lambda e: _named(e, "NoSuchBucket") or "bucket does not exist" in str(e).lower(),
                       lambda e: "its bucket does not exist; create the bucket or fix the URL"),
    "unreachable": Fault(lambda e: isinstance(e, ConnectionError)
                         or _named(e, "EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"),
                         lambda e: f"cannot reach the storage endpoint ({e}); is the server up, and is its address "
                                   "right (AWS_ENDPOINT_URL or fsspec's configuration)?"),
    "refused": Fault(lambda e: isinstance(e, PermissionError) or _named(e, "NoCredentialsError", "PartialCredentialsError"),
                     lambda e: f"access refused ({e}); check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...) "
                               "and their permissions"),
}


def fault(exc: BaseException | None) -> tuple[str, str] | None:
    """(name, message) of a storage failure (`FAULTS`), found in the exception or what caused it."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for name, known in FAULTS.items():
            if known.match(exc):
                return name, known.say(exc)
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def faults(url: str, space: Callable[[], str] | None = None) -> Iterator[None]:
    """Storage failures inside as one line naming the store (`FAULTS`); others pass through.
    `space`: how much more the store needs, said when the disk is full."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        found = fault(exc)
        if found is None:
            raise
        name, message = found
        if name == "disk full":
            message += f"{f' ({space()})' if space else ''}; free space, then rerun the same command to resume " \
                       "(committed chunks are kept)"
        raise UserError(f"store {url}: {message}") from None


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

    def missing_bucket(self) -> str | None:
        """An object store's bucket (the path's first part), when it does not exist."""
        top = self.path.split("/", 1)[0]
        return top if self.kind != "local" and top != self.path and not self.fs.exists(top) else None

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def is_empty(self) -> bool:
        """True when nothing is there, or an empty folder (or prefix). A zarr write in flight (the
        `*.partial` file zarr's LocalStore renames into place) is nothing yet: it is another
        writer creating the same store at this instant."""
        if not self.fs.exists(self.path):
            return True
        return all(name.endswith(".partial") for name in self.fs.ls(self.path, detail=False))

    def folders(self) -> list[str]:
        """Names of the folders (prefixes) directly under the root, from a fresh listing."""
        entries = self.fs.ls(self.path, detail=True, refresh=True)
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")

    def read_bytes(self, name: str) -> bytes | None:
        """A file under the root, or None when there is none (other failures raise)."""
        try:
            return self.fs.cat_file(self._join(name))
        except (FileNotFoundError, IsADirectoryError):
            return None

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

    def delete(self, names: list[str]) -> None:
        """Files under the root; those already gone are skipped."""
        for name in names:
            try:
                self.fs.rm_file(self._join(name))
            except FileNotFoundError:
                pass

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
