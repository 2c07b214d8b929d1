"""Where a command may write its output (`students build`, `hskcache augment`, `hskcache finetune`).

One rule for every `--out` that is not a store: an existing file or non-empty folder is
replaced only with `--overwrite`, and nothing is ever written into an HSK store (or any
zarr hierarchy), even with `--overwrite`. Checked before any work starts.

And one rule for writing one: whole or not at all (`replaced_dir`, `replaced_file`), so that a
cut run never leaves a part that a rerun, or a script's "is it there?" check, takes for a finished one.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def replaced_dir(final: Path) -> Iterator[Path]:
    """Yield an empty sibling folder to write into; on success it replaces `final`.

    The old folder is renamed aside before the new one takes its name, so a crash
    at any point leaves either the old or the new folder complete (`read_state`
    falls back to the aside copy). A write that fails (a full disk) leaves `final`
    as it was and removes the partial sibling.
    """
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def replaced_file(final: Path) -> Iterator[Path]:
    """Yield a sibling path to write a file into; on success it is renamed over `final` (atomic on one file
    system), so `final` is the old file or the whole new one, never a part; a failed write leaves no sibling."""
    tmp = final.with_name(final.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_whole(path: Path, text: str) -> None:
    with replaced_file(path) as tmp:
        tmp.write_text(text)
