"""Which process of a `torchrun` launch this is, and the device it owns.

torchrun (torch.distributed.elastic) starts the processes and sets RANK,
WORLD_SIZE and LOCAL_RANK; this module only reads them, picks the rank's
device (cuda:LOCAL_RANK, or the CPU) and the matching collective backend (nccl
on CUDA, gloo on the CPU), and opens the default process group. Extraction and
training share it, so both launch the same way.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from hskcache.errors import UserError
from hskcache.device import pick_device


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, models and final attributes."""
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Ranks:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK; one process without them."""
        try:
            world = int(environ.get("WORLD_SIZE", "1"))
            rank = int(environ.get("RANK", "0"))
            local = int(environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None
        if world < 1 or not 0 <= rank < world or local < 0:
            raise UserError(f"RANK {rank} / WORLD_SIZE {world} is not a valid place in a job; launch with torchrun")
        return cls(rank, world, local)

    @classmethod
    def current(cls) -> Ranks:
        """The ranks of the initialised default process group (one process if none)."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def rank_device(requested: str, local_rank: int, cuda_devices: int | None = None) -> torch.device:
    """`--device` for one rank: on CUDA each rank of a node owns cuda:LOCAL_RANK."""
    device = pick_device(requested)
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    if local_rank >= count:
        raise UserError(f"local rank {local_rank} has no GPU: this node has {count}; "
                        f"pass --nproc_per_node {count} or fewer to torchrun")
    return torch.device("cuda", local_rank)


def broadcast(value: Any) -> Any:
    """Rank 0's `value` (any picklable object) on every rank of the default group."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def backend_for(device: torch.device) -> str:
    """nccl moves CUDA tensors, gloo CPU ones."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(requested_device: str, timeout_minutes: float = 30) -> Iterator[tuple[Ranks, torch.device]]:
    """Open the default process group when launched by torchrun with several
    processes (a single process runs without one) and close it on the way out."""
    ranks = Ranks.from_env()
    device = rank_device(requested_device, ranks.local_rank)
    if ranks.world_size == 1 or dist.is_initialized():
        yield ranks, device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), timeout=timedelta(minutes=timeout_minutes),
                            device_id=device if device.type == "cuda" else None)
    try:
        yield ranks, device
    finally:
        dist.destroy_process_group()
