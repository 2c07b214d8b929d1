"""Hidden-state knowledge: the selected layers × tokens × activations (`hskcache.selection.hsk`),
coded by `hskcache.storage.packed` (values fp16 or int8, kept dimensions as a width code).

Its settings (`HSKSettings`: N^D, N^L, N^W, the width strategy, seed and code, the value
format) are `extract` flags like any kind's; what a store records of it (`HSKRecord`) is
them resolved against the teacher (N^D, N^L and K filled in); a read (`HSKRead`, its read
settings: `students train --hsk`, and the `depth`, `tokens`, `width` of `HSKStore.get`/`batches`)
is checked against the record here, in one place (`HSK.resolve_read`), for the student it serves:
N^D counts pairs of that student's layer map (`selection.layers`), so one store serves students of
several depths."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from hskcache.storage import widthcode
from hskcache.errors import UserError
from hskcache.hskread import parse_triple
from hskcache.storage.layout import VALUE_FORMATS, ArraySpec
from hskcache.options import Settings, setting
from hskcache.storage.packed import encode_hsk, expand_hsk
from hskcache.selection.hsk import WIDTH_STRATEGIES, kept_width, select_hsk, static_dims
from hskcache.selection.layers import as_cut
from hskcache.kinds.base import Cut, Kind, Read, Student, TeacherForward, TeacherInfo, register

if TYPE_CHECKING:
    from hskcache.store.shape import StoreShape
    from hskcache.storage.packed import PackedBatch


DEFAULT_TOKENS = 50  # N^L when --tokens is not given (capped at --max-length)

# Measured disk ratios (`ArraySpec.disk_ratio`) on stores of the packaged MiniLM (d_T = 384) over 3000
# movie reviews, max length 64: fp16 values (blosc-lz4, bit-shuffled), bitmasks and positions at
# (1,9,0.1), the most conservative for values (1.25 at (4,16,0.2)); bitmasks compress less as N^W
# grows (1.59 at N^W = 0.2); int8 values, their scales and rank codes at (4,16,0.2). Indices: none.
VALUE_RATIOS = {"fp16": 1.21, "int8": 1.25}
WIDTH_CODE_RATIOS = {"bitmask": 2.05, "rank": 1.16}


@dataclass(frozen=True)
class HSKSettings(Settings):
    """The HSK's extraction parameters (each an `extract` flag and TOML key, recorded in the store)."""

    depth: int | None = setting(None, "N^D: the top N^D pairs (default all L'+1)")
    tokens: int | None = setting(None, "N^L: most tokens per layer, at most --max-length",
                                 show_default=f"{DEFAULT_TOKENS}, or --max-length if smaller", at_least=1)
    width: float = setting(1.0, "N^W: fraction of activations kept, (0, 1]", above=0, at_most=1)
    width_strategy: str = setting("mag", " | ".join(WIDTH_STRATEGIES), choices=WIDTH_STRATEGIES)
    width_seed: int = setting(0, "seed of the rand width mask", aliases=("--seed",))
    width_code: str = setting(widthcode.DEFAULT, "how mag's kept dimensions are stored: "
                              + " | ".join(widthcode.WIDTH_CODES), choices=widthcode.WIDTH_CODES)
    values: str = setting("fp16", "fp16 | int8 (lossy: int8 with a per-vector absmax scale)", choices=VALUE_FORMATS)


@dataclass(frozen=True)
class HSKRecord:
    """What a store records of its HSK: the settings resolved against the teacher."""

    depth: int  # N^D: stored layer pairs
    tokens: int  # N^L
    width: float  # N^W
    kept: int  # K = round(N^W × d_T)
    width_strategy: str
    width_seed: int
    width_code: str
    width_encoding: str | None  # width code of per-vector masks; None: nothing per vector
    values: str  # fp16 | int8

    @classmethod
    def of(cls, settings: HSKSettings, depth: int, tokens: int, hidden: int) -> "HSKRecord":
        """The record of `settings` at (depth, tokens) for a teacher of width `hidden`."""
        kept = kept_width(settings.width, hidden)
        per_vector = not WIDTH_STRATEGIES[settings.width_strategy].static and kept < hidden
        return cls(depth, tokens, settings.width, kept, settings.width_strategy, settings.width_seed,
                   settings.width_code, settings.width_code if per_vector else None, settings.values)

    @property
    def static(self) -> bool:
        """A static width strategy: the same kept dimensions in every vector."""
        return WIDTH_STRATEGIES[self.width_strategy].static


Amount = tuple[int | None, int | None, float | None]  # (N^D, N^L, N^W) of a read; None: as stored
STORED: Amount = (None, None, None)


def parse_amount(text: str) -> Amount | None:
    """`--hsk`: `none` (the HSK not read: prediction-only KD), `stored`, or `N_D,N_L,N_W` (N_W a fraction)."""
    if text == "none":
        return None
    if text == "stored":
        return STORED
    try:
        return parse_triple(text, "--hsk")
    except UserError as exc:
        raise UserError(f"{exc} (or 'stored', or 'none' for prediction-only KD)") from None


@dataclass(frozen=True)
class HSKRead:
    """The HSK's read settings (`Kind.read_settings`: `students train --hsk`; `get`/`batches`' depth,
    tokens, width): (N^D, N^L, N^W) at or below the stored, None as stored; `hsk` None: not read
    (`--hsk none`; `HSK.reads`), so the trainer skips the stage that needs it."""

    hsk: Amount | None = setting(STORED, "N_D,N_L,N_W (N_W a fraction), 'stored' or 'none' (prediction-only "
                                 "KD: stage 1 skipped)", parse=parse_amount, show_default="stored")

    def __str__(self) -> str:
        """As `--hsk` is spelled."""
        if self.hsk is None:
            return "none"
        return "stored" if self.hsk == STORED else ",".join(map(str, self.hsk))


@dataclass(frozen=True)
class HSKCut:
    """An HSK read resolved against a store (`HSK.resolve_read`): what its `cuts` and `expand` use."""

    depth: int  # N^D of the read: the top pairs of the student's map
    tokens: int
    kept: int  # K' of the read
    pairs: slice | tuple[int, ...]  # the stored pairs it reads, in student-layer order (an axis cut)
    columns: Tensor | None = None  # rand/uniform: stored value columns the read keeps
    dims: Tensor | None = None  # rand/uniform: their dimensions, ascending


class HSK(Kind):
    """Hidden-state knowledge: the selected layers × tokens × activations (`hskcache.selection.hsk`),
    coded by `hskcache.storage.packed` (values fp16 or int8, kept dimensions as a width code)."""

    name = "hsk"
    order = 20
    groups = ("positions", "values", "mask")
    listed = True  # `--knowledge hsk` (always stored: a store is an HSK store)
    settings = HSKSettings
    read_settings = HSKRead  # `students train --hsk`; `get`/`batches` build it from their depth, tokens, width
    record = HSKRecord

    def complete(self, settings: HSKSettings, max_length: int) -> HSKSettings:
        """N^L defaults to DEFAULT_TOKENS (at most --max-length), resolved before anything is recorded;
        more tokens than a row has are refused."""
        if settings.tokens is None:
            return replace(settings, tokens=min(DEFAULT_TOKENS, max_length))
        if settings.tokens > max_length:
            raise UserError(f"--tokens {settings.tokens} is above --max-length {max_length}: a row has at most "
                            f"{max_length} tokens to keep; pass --tokens {max_length} or less")
        return settings

    def resolve(self, settings: HSKSettings, teacher: TeacherInfo) -> HSKRecord:
        """N^D defaults to every layer pair (L'+1); K from N^W and the teacher's width."""
        pairs = len(teacher.teacher_layers)
        if settings.depth is not None and not 1 <= settings.depth <= pairs:
            raise UserError(f"--depth {settings.depth} is out of range: there are {pairs} student/teacher "
                            "layer pairs (L'+1)")
        return HSKRecord.of(settings, settings.depth or pairs, settings.tokens or teacher.seq_len, teacher.hidden)

    def describe(self, record: HSKRecord) -> str:
        return (f"(N^D, N^L, N^W) = ({record.depth}, {record.tokens}, {record.width}), {record.kept} dims kept "
                f"({record.width_strategy}), width code {record.width_encoding or 'none'}, {record.values} values")

    def reads(self, read: HSKRead) -> bool:
        """`--hsk none` reads no HSK, so the trainer skips the stage that needs it (stage 1)."""
        return read.hsk is not None

    def read(self, read: Read) -> bool:
        """In a read that asks for it: `get`/`batches` do by default; a read whose HSK settings are
        `HSKRead(None)` (a stage that compares no HSK) leaves its arrays unfetched and undecoded."""
        return self.name in read.kinds

    def resolve_read(self, record: HSKRecord, read: HSKRead, where: str, shape: StoreShape,
                     static: Mapping[str, np.ndarray], student: Student) -> HSKCut:
        """(depth, tokens, kept) of a read, None as stored, the stored pairs of the student's map and a static
        strategy's columns: the one check of whether a read can be served (every reader and the trainer's
        `--hsk` use it)."""
        if read.hsk is None:
            raise ValueError("--hsk none reads no HSK: nothing to resolve")
        try:
            return self._cut(record, read.hsk, where, shape.hidden, static.get("static_dims"), student)
        except UserError as exc:
            raise UserError(f"--hsk {read}: {exc}") from None

    def covers(self, record: HSKRecord, student: Student) -> bool:
        """The top N^D pairs of the student's map (at most L''+1) are stored."""
        return student.layers.serves(student.depth)

    def _cut(self, record: HSKRecord, amount: Amount, where: str, hidden: int, static: np.ndarray | None,
             student: Student) -> HSKCut:
        depth, tokens, width = amount
        depth = student.layers.default_pairs(student.depth) if depth is None else depth
        tokens = record.tokens if tokens is None else tokens
        kept = record.kept if width is None else kept_width(width, hidden)
        stored = (f"the store holds depth {record.depth}, tokens {record.tokens}, width {record.width} ({where}); "
                  "read at or below it, or extract a larger store")
        if not 1 <= depth <= record.depth:
            raise UserError(f"depth {depth} is not available: {stored}")
        if not 1 <= tokens <= record.tokens:
            raise UserError(f"tokens {tokens} is not available: {stored}")
        if (width is not None and not 0 < width <= 1) or kept > record.kept:
            raise UserError(f"width {width} is not available: {stored}")
        pairs = self._pairs(depth, student, where)
        if not record.static:
            return HSKCut(depth, tokens, kept, pairs)
        base = np.sort(static) if static is not None else np.arange(hidden)
        cols = self._width_columns(record, kept, hidden, base)
        return HSKCut(depth, tokens, kept, pairs, torch.from_numpy(cols.astype(np.int64)),
                      torch.from_numpy(base[cols].astype(np.int64)))

    @staticmethod
    def _pairs(pairs: int, student: Student, where: str) -> slice | tuple[int, ...]:
        """The stored pairs a student of `student.depth` layers reads, as an axis cut: the top `pairs` of its own
        map (at its own depth, the store's top pairs as extracted); a map the store does not hold is refused in
        one line."""
        layers, depth = student.layers, student.depth
        if pairs > layers.most_pairs(depth):
            held = ",".join(map(str, layers.stored))
            raise UserError(f"a {depth}-layer student reads the top {pairs} pairs of its map g(l, {layers.top}) = "
                            f"{','.join(map(str, layers.student_map(depth)))}, and the store holds teacher layers "
                            f"{held} ({where}); it {student.served()} at N^D {len(layers.stored)}; read at most "
                            f"{layers.most_pairs(depth)} pairs (--hsk N_D,N_L,N_W), or {layers.fix(depth)}")
        return as_cut(layers.pair_rows(depth, pairs))

    @staticmethod
    def _width_columns(record: HSKRecord, kept: int, hidden: int, stored: np.ndarray) -> np.ndarray:
        """Static strategies: the stored columns that a smaller width keeps (a subset of the stored ones)."""
        if kept == record.kept:
            return np.arange(len(stored))
        wanted = np.sort(static_dims(record.width_strategy, hidden, kept, record.width_seed).numpy())
        columns = np.searchsorted(stored, wanted)
        if not np.array_equal(stored[np.minimum(columns, len(stored) - 1)], wanted):
            raise UserError(f"{record.width_strategy} width {kept}/{hidden} is not a subset of the stored "
                            f"dimensions; extract at that width")
        return columns

    def arrays(self, shape: StoreShape) -> list[ArraySpec]:
        hsk: HSKRecord = shape.kinds["hsk"]
        vectors = (hsk.depth, hsk.tokens)
        specs = [
            ArraySpec("positions", vectors, np.dtype(np.int16), "positions", fill=-1, disk_ratio=2.45),
            ArraySpec("values", (*vectors, hsk.kept), np.dtype(np.float16 if hsk.values == "fp16" else np.int8),
                      "values", "blosc-lz4-bitshuffle" if hsk.values == "fp16" else "zstd",
                      disk_ratio=VALUE_RATIOS[hsk.values]),
        ]
        if hsk.values == "int8":
            specs.append(ArraySpec("value_scale", vectors, np.dtype(np.float16), "values", disk_ratio=1.25))
        if hsk.width_encoding is not None:
            nbytes = widthcode.code_bytes(hsk.width_encoding, shape.hidden, hsk.kept)
            specs.append(ArraySpec("width_code", (*vectors, nbytes), np.dtype(np.uint8), "mask",
                                   disk_ratio=WIDTH_CODE_RATIOS.get(hsk.width_encoding, 1.0)))
        return specs

    def static_arrays(self, shape: StoreShape) -> list[ArraySpec]:
        """A static width strategy keeps the same dimensions in every vector: stored once
        (`selection.hsk.WIDTH_STRATEGIES`)."""
        hsk: HSKRecord = shape.kinds["hsk"]
        if hsk.static and hsk.kept < shape.hidden:
            return [ArraySpec("static_dims", (hsk.kept,), np.dtype(np.int32), "mask", codec="none")]
        return []

    def encode(self, forward: TeacherForward) -> dict[str, np.ndarray]:
        """Selection, the value format and bit packing on the teacher's device; other width
        codes are made from the bitmask on the host."""
        shape, out, hsk = forward.shape, forward.out, forward.shape.kinds["hsk"]
        sel = select_hsk(forward.plan, out.hidden_states, out.attentions, forward.masks["attention_mask"],
                         forward.masks["sep_mask"])
        stored = encode_hsk(sel, shape.hidden, hsk.values, hsk.width_encoding is not None)
        rows = {name: value.cpu().numpy() for name, value in stored.items()}
        if hsk.width_encoding is not None and hsk.width_encoding != "bitmask":
            bits = rows["width_code"]
            codes = widthcode.from_bitmask(bits.reshape(-1, bits.shape[-1]), shape.hidden, hsk.kept,
                                           hsk.width_encoding)
            rows["width_code"] = codes.reshape(*bits.shape[:-1], -1)
        return rows

    def cuts(self, shape: StoreShape, read: Read) -> dict[str, Cut]:
        """The stored pairs of the read (the top `depth` of the student's map, each pair with its own
        positions) and the first `tokens` positions (rows are importance-ordered)."""
        own: HSKCut = read.kinds["hsk"]
        pairs = own.pairs if isinstance(own.pairs, slice) else list(own.pairs)
        cut = (slice(None), pairs, slice(None, own.tokens))
        return {a.name: cut for a in self.arrays(shape)}

    def pack(self, shape: StoreShape, rows: dict[str, np.ndarray], names: Sequence[str],
             read: Read) -> dict[str, Tensor]:
        """Rank and index width codes become bitmasks, what a `PackedBatch` carries."""
        out, hsk = super().pack(shape, rows, names, read), shape.kinds["hsk"]
        if hsk.width_code != "bitmask" and "width_code" in out:  # the store's width encoding is its width code
            codes = rows["width_code"]
            bits = widthcode.to_bitmask(codes.reshape(-1, codes.shape[-1]), shape.hidden, hsk.kept, hsk.width_code)
            out["width_code"] = torch.from_numpy(np.ascontiguousarray(bits.reshape(*codes.shape[:-1], -1)))
        return out

    def expand(self, tensors: dict[str, Tensor], batch: PackedBatch) -> dict[str, Tensor]:
        return expand_hsk(tensors, batch.hidden, batch.read.kinds["hsk"])

register(HSK())
