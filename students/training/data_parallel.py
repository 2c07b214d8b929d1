"""Data-parallel training with torch.distributed: what the trainer adds to one process.

Each rank trains on its share of every global batch: the rows that lie in the
chunks it reads (`hskcache.store.reader.epoch_batches`), so the ranks read disjoint
chunks and the shares are uneven, sometimes empty. `DistributedDataParallel`
averages the gradients over the ranks; for that average to be the gradient of
the one-process loss, every loss divides its rank's sum by the *global* count
divided by the number of ranks (`Parallel.denominator`). A rank with an empty
share runs one placeholder row whose loss is multiplied by 0, so it still takes
part in every collective. One process (no process group) takes the same code
path with no collectives.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from hskcache.distributed import Ranks
from students.losses import Denominator, batch_count


class Parallel:
    """The collectives of one training process (all no-ops for a single process)."""

    def __init__(self, ranks: Ranks, device: torch.device) -> None:
        self.ranks, self.device = ranks, device
        self.active = ranks.world_size > 1

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP around the trainable module. Unused parameters are expected: the
        classifier in the HSK stage, the projection in the prediction stage."""
        if not self.active:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def denominator(self, counted: bool) -> Denominator:
        """Global count / ranks: the sum over ranks of (local sum / this) is the
        global mean, and DDP's gradient average divides by the ranks again."""
        if not self.active:
            return batch_count

        def global_count(count: Tensor) -> Tensor:
            total = count.detach().clone() if counted else torch.zeros_like(count)
            dist.all_reduce(total)
            return total.clamp(min=1) / self.ranks.world_size

        return global_count

    def step_totals(self, loss: Tensor, rows: int, stop: bool) -> tuple[float, int, bool]:
        """(global batch loss, global rows, whether any rank was interrupted), with
        one collective: every rank must stop at the same step to save together."""
        if not self.active:
            return loss.item(), rows, stop
        totals = torch.stack([loss.detach().double(), torch.tensor(float(rows), dtype=torch.float64,
                                                                   device=loss.device),
                              torch.tensor(float(stop), dtype=torch.float64, device=loss.device)])
        dist.all_reduce(totals)
        return totals[0].item() / self.ranks.world_size, int(totals[1].item()), bool(totals[2].item())

    def any(self, flag: bool) -> bool:
        if not self.active:
            return flag
        value = torch.tensor(float(flag), device=self.device)
        dist.all_reduce(value)
        return bool(value.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.ranks.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def placeholder(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """One row shaped like `batch`'s (empty) rows that selects nothing: a single
    real token and every stored position empty."""
    row = {k: torch.zeros((1, *v.shape[1:]), dtype=v.dtype) for k, v in batch.items()}
    row["attention_mask"][:, 0] = 1
    if "positions" in row:
        row["positions"].fill_(-1)
    return row


def rank_seed(*parts: int) -> int:
    """A torch seed for a rank whose random state was not saved (a resume with more ranks)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def cores_per_rank() -> int:
    """The cores this process may use, shared among the ranks of its node."""
    return max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
