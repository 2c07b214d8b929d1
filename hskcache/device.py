"""Where models run and in which precision: one home for devices, dtypes and autocast."""
from __future__ import annotations

import contextlib

import torch

from .errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def pick_device(device: str) -> torch.device:
    """auto: CUDA when present, else CPU."""
    if device not in DEVICES:
        raise UserError(f"--device {device!r} is unknown; use one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return torch.device(device)
