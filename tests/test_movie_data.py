"""tools/build_movie_data.py: the packaged movie-review task, and its unlabeled transfer set."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hskcache.data import load_texts

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "build_movie_data.py"


def test_transfer_set_is_train_then_unlabeled_pool_reviews(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--max-train", "50", "--unlabeled", "30"],
                   check=True, capture_output=True)
    parts = {name: pd.read_csv(tmp_path / f"{name}.csv") for name in ("train", "dev", "test", "transfer")}
    train, transfer = parts["train"], parts["transfer"]
    assert len(train) == 50 and len(transfer) == 80
    assert transfer["sentence"][:50].tolist() == train["sentence"].tolist()
    assert transfer["label"][:50].tolist() == train["label"].tolist()
    assert transfer["label"][50:].isna().all()  # the extra reviews carry no label
    held_out = set(parts["dev"]["sentence"]) | set(parts["test"]["sentence"])
    assert not held_out & set(transfer["sentence"])  # never a dev or test review
    assert transfer["sentence"].is_unique
    # what `hskcache extract` reads: the unlabeled rows as class -1 (unknown), the rest as given
    data = load_texts(str(tmp_path / "transfer.csv"), unknown_labels=True)
    assert np.array_equal(data.labels, np.concatenate([train["label"].to_numpy(), np.full(30, -1)]))
