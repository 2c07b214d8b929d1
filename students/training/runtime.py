"""How a training run computes and reports: the settings `students train` and `hskcache finetune` share.

One settings dataclass, `Runtime`, nested in both commands' settings (`hskcache.options.nested`), so
`--device`, `--dtype`, `--threads` and `--quiet` have one spelling, help, default and check. None of
them changes what is trained: a run resumes under other values. A run's records hold them at their
top level, as its TOML file does (`settings_json`). `--threads` is also the field of `students build`
and `students eval` (`threads_setting`), applied alike (`set_cpu_threads`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from hskcache.device import DEVICES, DTYPES
from hskcache.options import Settings, setting
from students.training.data_parallel import cores_per_rank


def threads_setting() -> Any:
    """`--threads`: one spelling, help and bound for every command that runs torch on the CPU."""
    return setting(None, "torch CPU threads", show_default="all available cores", at_least=1)


@dataclass(frozen=True)
class Runtime(Settings):
    """Where a run computes, in which precision, on how many CPU threads, and whether it shows progress."""

    device: str = setting("auto", "where the run computes (auto: CUDA when present)", choices=DEVICES)
    dtype: str | None = setting(None, "forward precision of training and eval, weights and losses in fp32 "
                                "(default: bf16 on CUDA, fp32 on CPU)", choices=DTYPES)
    threads: int | None = threads_setting()
    quiet: bool = setting(False, "no progress bars")


def set_cpu_threads(device: torch.device, threads: int | None) -> None:
    """On CPU, torch threads = --threads, else the cores this process may use,
    shared among the ranks of its node (fewer on shared machines: oversubscribed
    threads slow small models badly)."""
    if device.type == "cpu":
        torch.set_num_threads(threads or cores_per_rank())


def settings_json(settings: Any) -> dict[str, Any]:
    """A command's settings as JSON-shaped values, its `runtime`'s fields at the top level (the keys of
    its TOML file), so a run's records keep the keys they had before the settings were nested."""
    values = asdict(settings)
    runtime = values.pop("runtime")
    return values | runtime
