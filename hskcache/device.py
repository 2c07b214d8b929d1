"""Where models run and in which precision: one home for devices, dtypes and autocast."""
from __future__ import annotations

import contextlib

import torch

from hskcache.errors import UserError

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


DTYPES = ("fp32", "bf16")


def pick_dtype(dtype: str | None, device: torch.device) -> str:
    """--dtype of a forward: as given, else bf16 on CUDA (tensor cores) and fp32 on CPU."""
    if dtype is None:
        return "bf16" if device.type == "cuda" else "fp32"
    check_dtype(dtype)
    return dtype


def check_dtype(dtype: str | None) -> None:
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r} is unknown; use one of {', '.join(DTYPES)}")


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """The one precision context of every forward (teacher, training, eval): bf16
    autocast, or nothing for fp32. Losses are computed in fp32 either way."""
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
