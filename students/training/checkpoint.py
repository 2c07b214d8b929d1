"""Crash-safe folders and random-number state for resumable training."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hskcache.errors import UserError
from hskcache.outputs import replaced_dir

STATE_FILE = "state.pt"


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Save a training state (tensors and plain Python) to `folder` atomically."""
    with replaced_dir(folder) as tmp:
        torch.save(state, tmp / STATE_FILE)


def read_state(folder: Path) -> dict[str, Any] | None:
    """The state saved by `write_state`, or None when there is none; an unreadable one
    (truncated, empty: written by something else, as ours are replaced atomically) is one line."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        path = candidate / STATE_FILE
        if path.is_file():
            try:  # our own file; numpy's RNG state is not a plain tensor, so no weights_only
                return torch.load(path, map_location="cpu", weights_only=False)
            except (RuntimeError, EOFError, pickle.UnpicklingError, OSError) as exc:
                raise UserError(f"--resume: cannot read {path}, it is truncated or corrupt ({type(exc).__name__}); "
                                f"remove {candidate} to start the run over, or start without --resume "
                                "in a new --out") from None
    return None


def rng_state() -> dict[str, Any]:
    """Every random stream a step may draw from (dropout, shuffles)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
