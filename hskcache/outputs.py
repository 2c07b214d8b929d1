"""Where a command may write its output (`students build`, `hskcache augment`, `hskcache finetune`).

One rule for every `--out` that is not a store: an existing file or non-empty folder is
replaced only with `--overwrite`, and nothing is ever written into an HSK store (or any
zarr hierarchy), even with `--overwrite`. Checked before any work starts.
"""
from __future__ import annotations

from pathlib import Path

from hskcache.errors import UserError


def inside_store(path: Path) -> Path | None:
    """The zarr store (a folder with a zarr.json) that `path` is or lies in, if any."""
    for folder in (path, *path.parents):
        if (folder / "zarr.json").is_file():
            return folder
    return None


def _refuse_store(path: Path, flag: str) -> None:
    store = inside_store(path.resolve())
    if store is not None:
        where = "is" if store == path.resolve() else "lies in"
        raise UserError(f"{flag} {path} {where} the store {store}; writing there would damage it, "
                        "so even --overwrite is refused: choose a path outside the store")


def check_out_folder(out: str | Path, flag: str = "--out", overwrite: bool = False) -> None:
    """A folder output (a model folder): new, empty, or replaced with --overwrite; never a file or a store."""
    path = Path(out)
    _refuse_store(path, flag)
    if path.is_file():
        raise UserError(f"{flag} {path} is a file; pass a folder path")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserError(f"{flag} {path} already holds files; pass --overwrite to replace them or choose a new folder")


def check_out_file(out: str | Path, flag: str = "--out", overwrite: bool = False) -> None:
    """A file output (a data file): new, or replaced with --overwrite; never a folder or inside a store."""
    path = Path(out)
    _refuse_store(path, flag)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; pass a file path")
    if path.exists() and not overwrite:
        raise UserError(f"{flag} {path} exists; pass --overwrite to replace it or choose a new file")
