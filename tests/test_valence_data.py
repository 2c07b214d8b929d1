"""tools/build_valence_data.py: the packaged valence-rating regression task."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hskcache.data import load_texts

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "build_valence_data.py"
sys.path.insert(0, str(ROOT / "tools"))
from build_valence_data import SCORE, norms_file  # noqa: E402


def build(out: Path, *flags: str) -> dict[str, pd.DataFrame]:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *flags], check=True, capture_output=True)
    return {name: pd.read_csv(out / f"{name}.csv") for name in ("train", "dev", "test")}


def test_splits_are_seeded_disjoint_and_carry_the_raters_means(tmp_path):
    try:
        ratings = pd.read_csv(norms_file(), usecols=["Word", SCORE]).dropna()
    except SystemExit:
        pytest.skip("labMTsimple is not installed (tools/setup_env.sh installs it)")
    parts = build(tmp_path / "a", "--dev", "40", "--test", "50", "--max-train", "200")
    assert [len(parts[n]) for n in ("train", "dev", "test")] == [200, 40, 50]
    words = [set(p["sentence"]) for p in parts.values()]
    assert not (words[0] & words[1]) and not (words[0] & words[2]) and not (words[1] & words[2])
    # every row's label is the package's mean valence of that word (read here independently)
    mean = dict(zip(ratings["Word"].str.lower(), ratings[SCORE]))
    for part in parts.values():
        assert np.allclose(part["label"], [mean[w] for w in part["sentence"]], atol=0.005)
    again = build(tmp_path / "b", "--dev", "40", "--test", "50", "--max-train", "200")
    assert all(again[n].equals(parts[n]) for n in parts)  # reruns give identical files
    data = load_texts(str(tmp_path / "a" / "train.csv"))
    assert data.is_regression and data.labels.dtype == np.float32
