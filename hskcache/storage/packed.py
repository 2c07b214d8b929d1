"""HSK in its stored form as torch tensors: encoded on the teacher's device,
expanded to the dense batch on the trainer's device.

A dense float32 HSK at (4,50,0.2) and d_T = 768 is 614 KB per row, too much
to build on a CPU at the rate a GPU student consumes rows. So the reader
ships what the store holds (fp16 or int8 kept values, packed bitmasks, int16
positions, uint16 token ids: about 80 KB per row there) as a `PackedBatch`,
and `expand` builds the documented batch dictionary (docs/design.md) with a
few torch ops wherever the batch was moved to. The extractor runs the
inverse (`encode_hsk`) on the teacher's device, so that only kept bytes
cross to the host. One home for both directions of the value formats and
the bit order.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hskcache.errors import UserError
from hskcache.storage.layout import INT8_MAX

if TYPE_CHECKING:
    from hskcache.kinds import Kind, Read
    from hskcache.kinds.hsk import HSKCut

FP16_MAX = 65504.0


def pack_bits(mask: Tensor) -> Tensor:
    """(..., d) bool -> (..., ceil(d / 8)) uint8, little bit order (numpy.packbits(bitorder="little"))."""
    pad = (-mask.shape[-1]) % 8
    if pad:
        mask = torch.nn.functional.pad(mask, (0, pad))
    bits = mask.reshape(*mask.shape[:-1], -1, 8).to(torch.uint8)
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=mask.device)
    return (bits * weights).sum(-1, dtype=torch.uint8)


def unpack_bits(codes: Tensor, d: int) -> Tensor:
    """(..., ceil(d / 8)) uint8 -> (..., d) bool; the inverse of pack_bits."""
    shifts = torch.arange(8, dtype=torch.uint8, device=codes.device)
    bits = (codes.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(*codes.shape[:-1], -1)[..., :d].bool()


def quantize_int8(values: Tensor) -> tuple[Tensor, Tensor]:
    """(..., K) float -> (int8 values, fp16 per-vector scale), scale = absmax / 127.

    The values are divided by the fp16-rounded scale, so dequantizing with the
    stored scale is exact up to the int8 rounding (half a step)."""
    scale = values.abs().amax(dim=-1).float() / INT8_MAX
    if scale.numel() and not float(scale.max()) <= FP16_MAX:  # also catches inf and nan
        raise UserError("hidden states too large (or not finite) for --values int8's fp16 scale; use --values fp16")
    scale16 = scale.to(torch.float16)
    divisor = torch.where(scale16 > 0, scale16.float(), torch.ones_like(scale)).unsqueeze(-1)
    q = torch.round(values.float() / divisor).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale16


def encode_hsk(sel: dict[str, Tensor], hidden: int, values: str, per_vector_dims: bool) -> dict[str, Tensor]:
    """Selected HSK (select_hsk's output) -> stored dtypes, on the same device.

    `width_code` is the packed bitmask of the kept dimensions (per_vector_dims:
    magnitude selection below the full width); other codes are made from it on the host."""
    if sel["positions"].numel() and int(sel["positions"].max()) > torch.iinfo(torch.int16).max:
        raise UserError("token positions above 32767 do not fit the store's int16 positions; lower --max-length")
    out = {"positions": sel["positions"].to(torch.int16)}
    if values == "int8":
        out["values"], out["value_scale"] = quantize_int8(sel["values"])
    else:
        if sel["values"].numel() and float(sel["values"].abs().max()) > FP16_MAX:
            raise UserError("hidden states above 65504 do not fit fp16 values; this teacher's HSK cannot be stored")
        out["values"] = sel["values"].to(torch.float16)
    if per_vector_dims:
        mask = torch.zeros((*sel["dims"].shape[:-1], hidden), dtype=torch.bool, device=sel["dims"].device)
        out["width_code"] = pack_bits(mask.scatter_(-1, sel["dims"], True))
    return out


@dataclass
class PackedBatch:
    """One batch as stored: `tensors` in the store's dtypes (input_ids, length,
    token_type_ids, labels, example_id, logits, positions, values, and
    value_scale / width_code where the store has them; width_code always as a
    bitmask; relations already decoded), the knowledge kinds it holds, plus the
    read (each kind's resolved read, e.g. the HSK's `kinds.hsk.HSKCut`) that `expand` follows."""

    tensors: dict[str, Tensor]
    hidden: int  # d_T
    read: Read  # each kind's resolved read (`Kind.resolve_read`)
    kinds: tuple[Kind, ...] = ()  # hskcache.kinds, each expanding its own tensors

    def __len__(self) -> int:
        return len(self.tensors["length"])

    def pin_memory(self) -> "PackedBatch":
        """Page-locked copies, so `expand(..., non_blocking=True)` overlaps the copy to CUDA."""
        return replace(self, tensors={k: v.pin_memory() for k, v in self.tensors.items()})


def expand(batch: PackedBatch | dict[str, Tensor], device: torch.device | str | None = None,
           non_blocking: bool = False) -> dict[str, Tensor]:
    """The dense batch dictionary on `device` (a dense batch is only moved there)."""
    if isinstance(batch, dict):
        return batch if device is None else {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}
    t = {k: v.to(device, non_blocking=non_blocking) for k, v in batch.tensors.items()} if device is not None else batch.tensors
    out: dict[str, Tensor] = {}
    for kind in batch.kinds:
        out |= kind.expand(t, batch)
    return out


def expand_hsk(t: dict[str, Tensor], hidden: int, cut: HSKCut) -> dict[str, Tensor]:
    """The HSK's entries (positions, hsk, hsk_mask) from its stored tensors, where they are, at the
    read `cut` (a teacher of width `hidden`)."""
    dev = t["values"].device
    out = {"positions": t["positions"].long()}
    values = t["values"].float()
    if "value_scale" in t:
        values = values * t["value_scale"].float().unsqueeze(-1)
    shape = (*values.shape[:-1], hidden)
    if cut.dims is None:  # magnitude: a stored mask per vector (all True at full width)
        stored = (unpack_bits(t["width_code"], hidden) if "width_code" in t
                  else torch.ones(shape, dtype=torch.bool, device=dev))
        mask = stored
        if cut.kept < values.shape[-1]:  # the top K' of the stored K, by magnitude
            top = values.abs().topk(cut.kept, dim=-1).indices
            keep = torch.zeros_like(values, dtype=torch.bool).scatter_(-1, top, True)
            values = values.masked_fill(~keep, 0.0)
            mask = torch.zeros(shape, dtype=torch.bool, device=dev).masked_scatter_(stored, keep)
        hsk = torch.zeros(shape, dtype=torch.float32, device=dev).masked_scatter_(stored, values)
    else:
        columns, dims = cut.columns.to(dev), cut.dims.to(dev)
        hsk = torch.zeros(shape, dtype=torch.float32, device=dev)
        hsk[..., dims] = values[..., columns]
        mask = torch.zeros(shape, dtype=torch.bool, device=dev)
        mask[..., dims] = True
    out["hsk"] = hsk
    out["hsk_mask"] = mask & (out["positions"] >= 0).unsqueeze(-1)
    return out
