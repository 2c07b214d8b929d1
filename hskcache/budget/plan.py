"""Storage-budget reports: what a (N^D, N^L, N^W) configuration costs on disk.

Two layouts side by side, so users can weigh the paper's numbers against
what this project writes:

- ``paper``: fp32 values of the kept activations plus one byte per activation
  of the full width for the magnitude mask (none at full width): the layout
  behind Table 3 of the paper. It stores only existing tokens, so examples
  shorter than N^L cost less when real lengths are known.
- ``hskcache``: the store's own arrays, from ``hskcache.store.shape.StoreShape`` (the
  writer's arithmetic): fp16 (or int8) values, a width code, int16 positions,
  inputs and logits, with N^L slots per layer whatever the example's length.
  Its uncompressed bytes are exact; its bytes on disk are estimated from
  compression ratios measured on real stores (each kind's `ArraySpec.disk_ratio`), or measured
  (a store's own row).

Pure computation and formatting; the command line lives in ``hskcache.cli.budget``.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from hskcache.teacher.config import ExtractConfig
from hskcache.errors import UserError
from hskcache.hskread import parse_triple
from hskcache.kinds import KINDS
from hskcache.kinds.hsk import HSKRecord, HSKSettings
from hskcache.store.shape import StoreShape, estimated_disk
from hskcache.storage.layout import human
from hskcache.selection.hsk import kept_width

DISK_SOURCE = "the codecs' ratios measured on movie-review stores (each array's ArraySpec.disk_ratio)"

# The paper's Table 5 (appendix C), exactly as printed, by A^HSK group. Its
# 5±5% column also holds a lone "/" cell, which names no configuration.
TABLE5: dict[str, tuple[tuple[int, int, float], ...]] = {
    "1±10%": (
        (2, 1, 0.5), (5, 2, 0.1), (1, 9, 0.1), (1, 2, 0.5), (1, 5, 0.2), (1, 1, 1.0), (3, 3, 0.1),
        (3, 1, 0.3), (1, 10, 0.1), (2, 5, 0.1), (1, 1, 0.9), (5, 1, 0.2), (1, 3, 0.3),
    ),
    "3±5%": (
        (6, 1, 0.5), (6, 5, 0.1), (1, 29, 0.1), (1, 10, 0.3), (1, 5, 0.6), (2, 15, 0.1), (5, 2, 0.3),
        (5, 1, 0.6), (5, 6, 0.1), (3, 5, 0.2), (1, 30, 0.1), (5, 3, 0.2), (1, 6, 0.5), (1, 15, 0.2),
        (2, 3, 0.5), (1, 3, 1.0), (2, 5, 0.3), (3, 10, 0.1), (3, 2, 0.5), (3, 1, 1.0),
    ),
    "5±5%": (
        (1, 13, 0.4), (6, 2, 0.4), (5, 5, 0.2), (2, 24, 0.1), (1, 25, 0.2), (1, 6, 0.8), (7, 7, 0.1),
        (6, 8, 0.1), (4, 4, 0.3), (2, 6, 0.4), (2, 3, 0.8), (3, 8, 0.2), (4, 12, 0.1), (1, 7, 0.7),
        (1, 49, 0.1), (2, 4, 0.6), (5, 10, 0.1), (1, 5, 1.0), (3, 4, 0.4), (1, 10, 0.5), (2, 13, 0.2),
        (3, 2, 0.8), (4, 3, 0.4), (1, 8, 0.6), (5, 2, 0.5), (2, 5, 0.5), (6, 1, 0.8), (4, 6, 0.2),
        (1, 16, 0.3), (4, 13, 0.1), (6, 4, 0.2),
    ),
    "10±5%": (
        (7, 3, 0.5), (1, 49, 0.2), (3, 8, 0.4), (3, 5, 0.7), (1, 25, 0.4), (2, 7, 0.7), (3, 16, 0.2),
        (7, 14, 0.1), (2, 8, 0.6), (5, 3, 0.7), (3, 7, 0.5), (4, 8, 0.3), (5, 7, 0.3), (6, 8, 0.2),
        (5, 5, 0.4), (6, 2, 0.8), (5, 4, 0.5), (4, 5, 0.5), (1, 13, 0.8), (1, 32, 0.3), (3, 33, 0.1),
        (3, 34, 0.1), (4, 25, 0.1), (6, 4, 0.4), (5, 10, 0.2), (2, 26, 0.2), (7, 15, 0.1), (1, 11, 0.9),
        (4, 6, 0.4), (2, 6, 0.8), (2, 10, 0.5), (1, 10, 1.0), (4, 26, 0.1), (5, 2, 1.0), (3, 4, 0.8),
        (4, 3, 0.8),
    ),
    "50±5%": (
        (6, 10, 0.8), (2, 36, 0.7), (3, 25, 0.7), (2, 27, 0.9), (6, 9, 0.9), (6, 12, 0.7), (6, 27, 0.3),
        (7, 24, 0.3), (4, 18, 0.7), (3, 21, 0.8), (5, 10, 1.0), (7, 23, 0.3), (5, 25, 0.4), (4, 26, 0.5),
        (6, 17, 0.5), (2, 26, 1.0), (6, 8, 1.0), (4, 12, 1.0), (2, 43, 0.6), (5, 16, 0.6), (4, 25, 0.5),
    ),
}

# The paper's search space (section 5): N^D in 1..L'+1, N^L in 1..50, N^W in 0.1..1.0 by 0.1.
GRID_MAX_TOKENS = 50
GRID_WIDTHS = tuple(round(0.1 * i, 1) for i in range(1, 11))

CONFIG_HELP = "N^D,N^L,N^W (e.g. 1,9,0.1), full, table5 or grid:A±TOL (e.g. grid:5±10%)"
_GRID = re.compile(r"^grid:\s*([0-9.]+)\s*(?:±|\+-|\+/-)\s*([0-9.]+)\s*(%?)$")


@dataclass(frozen=True)
class Config:
    """One (N^D, N^L, N^W); ``name`` is how reports label it ("1,9,0.1" or "full")."""

    n_d: int
    n_l: int
    n_w: float
    name: str

    @classmethod
    def of(cls, n_d: int, n_l: int, n_w: float) -> "Config":
        return cls(n_d, n_l, float(n_w), f"{n_d},{n_l},{float(n_w)}")

    @property
    def a_hsk(self) -> float:
        return round(self.n_d * self.n_l * self.n_w, 9)


@dataclass(frozen=True)
class Setting:
    """Everything besides the configuration that fixes the bytes: teacher, student, data."""

    examples: int
    seq_len: int
    student_layers: int
    hidden: int
    vocab_size: int = 30522  # BERT's; these defaults are also `hskcache budget --plan`'s
    num_logits: int = 3
    regression: bool = False
    width_strategy: str = HSKSettings.width_strategy  # a planned store is extract's default store
    # Examples per eligible token count 0..seq_len; None: every example fills seq_len.
    length_counts: tuple[int, ...] | None = None
    width_code: str = HSKSettings.width_code
    values: str = HSKSettings.values
    compress: str = ExtractConfig.compress
    kinds: Mapping[str, Any] = field(default_factory=dict)  # each opt-in kind stored with every configuration:
    # what the store records of it (`Kind.record`), by kind name

    @property
    def extra_groups(self) -> tuple[str, ...]:
        """The budget groups of its opt-in kinds: one more report column each."""
        return tuple(dict.fromkeys(g for name in self.kinds for g in KINDS[name].groups))

    @property
    def full_amount(self) -> int:
        """(L'+1) × |x| units (SPEC.md)."""
        return (self.student_layers + 1) * self.seq_len

    def tokens_kept(self, n_l: int) -> int:
        """Σ over examples of min(N^L, eligible tokens): what a length-aware layout stores."""
        if self.length_counts is None:
            return self.examples * n_l
        counts = np.asarray(self.length_counts, dtype=np.int64)
        return int((counts * np.minimum(np.arange(len(counts)), n_l)).sum())

    def store_shape(self, config: Config) -> StoreShape:
        """The shape of the store extracted at `config` with these settings (the HSK's record: `config`'s
        amount with this setting's width strategy, code and value format)."""
        hsk = HSKRecord.of(HSKSettings(config.n_d, config.n_l, config.n_w, self.width_strategy,
                                       width_code=self.width_code, values=self.values),
                           config.n_d, config.n_l, self.hidden)
        return StoreShape(seq_len=self.seq_len, vocab_size=self.vocab_size, num_logits=self.num_logits,
                          regression=self.regression, hidden=self.hidden, compress=self.compress,
                          kinds={"hsk": hsk, **self.kinds})


@dataclass(frozen=True)
class Row:
    """One configuration's costs. ``hskcache_*`` are exact uncompressed bytes;
    ``hskcache_mask_bytes`` is everything that says where the kept values sit (positions,
    width code, static dimensions); ``hskcache_other_bytes`` is inputs, labels and logits.
    ``ratio`` = paper total / hskcache (values + mask), uncompressed. ``disk_*`` are bytes on
    disk, estimated from the arrays' `disk_ratio` or, with ``disk_measured``, measured on the store;
    ``disk_ratio`` = paper total / on-disk (values + mask)."""

    config: str
    n_d: int
    n_l: int
    n_w: float
    kept_width: int
    a_hsk: float
    fraction: float
    paper_values_bytes: int
    paper_mask_bytes: int
    paper_total_bytes: int
    width_encoding: str
    hskcache_values_bytes: int
    hskcache_mask_bytes: int
    hskcache_other_bytes: int
    hskcache_group_bytes: dict[str, int]  # the opt-in kinds' budget groups (`Setting.extra_groups`), e.g. relations
    hskcache_total_bytes: int
    ratio: float
    disk_values_bytes: int
    disk_mask_bytes: int
    disk_total_bytes: int
    disk_ratio: float
    disk_measured: bool = False
    disk_bytes: dict[str, int] | None = None  # store mode, the store's own row: bytes per array on disk


def full_config(student_layers: int, seq_len: int) -> Config:
    return Config(student_layers + 1, seq_len, 1.0, "full")


def _triple(spec: str, student_layers: int, seq_len: int) -> Config:
    n_d, n_l, n_w = parse_triple(spec, "configuration")
    if n_d > student_layers + 1:
        raise UserError(f"N^D={n_d} in {spec!r} is outside 1..{student_layers + 1} (L'+1 with --student-layers {student_layers}); lower it")
    if n_l > seq_len:
        raise UserError(f"N^L={n_l} in {spec!r} is outside 1..{seq_len} (the sequence length); lower it")
    return Config.of(n_d, n_l, n_w)


def grid(target: float, tol: float, student_layers: int, seq_len: int) -> list[Config]:
    """Every configuration of the paper's search space with |A^HSK - target| <= tol."""
    return [
        Config.of(d, n, w)
        for d in range(1, student_layers + 2)
        for n in range(1, min(GRID_MAX_TOKENS, seq_len) + 1)
        for w in GRID_WIDTHS
        if abs(d * n * w - target) <= tol + 1e-9
    ]


def _grid(spec: str, student_layers: int, seq_len: int) -> list[Config]:
    match = _GRID.match(spec)
    try:
        target, tol = float(match[1]), float(match[2])
    except (TypeError, ValueError):
        raise UserError(f"malformed set {spec!r}: write grid:A±TOL or grid:A+-TOL, e.g. grid:5±0.5 or grid:5±10%") from None
    configs = grid(target, target * tol / 100 if match[3] else tol, student_layers, seq_len)
    if not configs:
        raise UserError(f"{spec} matches no configuration of the search space; widen TOL")
    return configs


def table5(student_layers: int, seq_len: int) -> list[Config]:
    """Table 5, without the configurations this student or sequence length cannot hold
    (the paper likewise drops N^D above 5 for TinyBERT-4)."""
    return [
        Config.of(d, n, w)
        for group in TABLE5.values()
        for d, n, w in group
        if d <= student_layers + 1 and n <= seq_len
    ]


def parse_configs(specs: Iterable[str], student_layers: int, seq_len: int) -> list[Config]:
    """Expand ``--configs`` items in order, dropping repeats; bad items raise UserError."""
    out: dict[tuple[int, int, float], Config] = {}
    for spec in specs:
        spec = spec.strip()
        if spec == "full":
            found = [full_config(student_layers, seq_len)]
        elif spec == "table5":
            found = table5(student_layers, seq_len)
        elif spec.startswith("grid:"):
            found = _grid(spec, student_layers, seq_len)
        else:
            found = [_triple(spec, student_layers, seq_len)]
        for config in found:
            out.setdefault((config.n_d, config.n_l, config.n_w), config)
    return list(out.values())


def paper_bytes(config: Config, setting: Setting) -> tuple[int, int]:
    """(values, mask) of the paper's layout: fp32 kept values, one byte per activation of
    the full width as the mask, nothing per vector when the whole width is kept."""
    k = kept_width(config.n_w, setting.hidden)
    vectors = config.n_d * setting.tokens_kept(config.n_l)
    return vectors * k * 4, vectors * setting.hidden if k < setting.hidden else 0


def grouped(shape: StoreShape, by_array: dict[str, int]) -> tuple[int, int, int]:
    """(values, mask + positions, total) of per-array bytes."""
    groups = shape.groups()
    values = sum(n for a, n in by_array.items() if groups.get(a) == "values")
    mask = sum(n for a, n in by_array.items() if groups.get(a) in ("mask", "positions"))
    return values, mask, sum(by_array.values())


def report(config: Config, setting: Setting, measured: dict[str, int] | None = None) -> Row:
    """One configuration; `measured`: the store's own bytes on disk per array."""
    shape = setting.store_shape(config)
    hsk = shape.kinds["hsk"]
    groups = shape.bytes_by_group(setting.examples)
    paper_values, paper_mask = paper_bytes(config, setting)
    values = groups["values"]
    mask = groups["mask"] + groups["positions"]
    encoding = hsk.width_encoding or ("static" if shape.static_bytes() else "none")
    disk = measured if measured is not None else estimated_disk(shape, shape.bytes_by_array(setting.examples))
    disk_values, disk_mask, disk_total = grouped(shape, disk)
    return Row(
        config=config.name, n_d=config.n_d, n_l=config.n_l, n_w=config.n_w, kept_width=hsk.kept,
        a_hsk=config.a_hsk, fraction=config.a_hsk / setting.full_amount,
        paper_values_bytes=paper_values, paper_mask_bytes=paper_mask,
        paper_total_bytes=paper_values + paper_mask, width_encoding=encoding,
        hskcache_values_bytes=values, hskcache_mask_bytes=mask,
        hskcache_other_bytes=groups["inputs"] + groups["logits"], hskcache_group_bytes={g: groups[g] for g in setting.extra_groups},
        hskcache_total_bytes=sum(groups.values()),
        ratio=(paper_values + paper_mask) / (values + mask),
        disk_values_bytes=disk_values, disk_mask_bytes=disk_mask, disk_total_bytes=disk_total,
        disk_ratio=(paper_values + paper_mask) / max(1, disk_values + disk_mask),
        disk_measured=measured is not None, disk_bytes=measured,
    )


# --- formatting ------------------------------------------------------------



def describe_setting(setting: Setting) -> str:
    lengths = "" if setting.length_counts is None else (
        f", mean eligible length {setting.tokens_kept(setting.seq_len) / max(1, setting.examples):.1f}"
    )
    return (
        f"{setting.examples} examples × {setting.seq_len} tokens{lengths}; L'={setting.student_layers}, "
        f"d_T={setting.hidden}, vocab {setting.vocab_size}, {setting.num_logits} logits, "
        f"width strategy {setting.width_strategy}, {setting.values} values, compression {setting.compress}; "
        f"full amount (L'+1)×|x| = {setting.full_amount} units"
        + "".join(f"; {name}: {KINDS[name].describe(record)}" for name, record in setting.kinds.items())
        + "".join(f"; {group} {nbytes:,} B per example" for group, nbytes in group_row_bytes(setting).items())
    )


def group_row_bytes(setting: Setting) -> dict[str, int]:
    """Bytes per example of each opt-in kinds' budget group (the same for every configuration)."""
    shape = setting.store_shape(full_config(setting.student_layers, setting.seq_len))
    return {g: sum(a.row_bytes for a in shape.arrays() if a.group == g) for g in setting.extra_groups}


NOTES = (
    "paper: fp32 kept values + 1 byte per activation of the full width as mask (Table 3 layout); "
    "only existing tokens are stored when real lengths are known.",
    "hskcache: fp16/int8 values + width code + int16 positions (mask/pos), exact uncompressed bytes, fixed N^L "
    "slots per layer (short examples pay full slots); total adds inputs, labels and logits.",
    "ratio = paper (values+mask) / hskcache (values+mask/pos), uncompressed; disk ratio: the same on disk, "
    f"* measured on the store, else estimated from {DISK_SOURCE}.",
)


def format_table(rows: Sequence[Row], setting: Setting) -> str:
    header = ("config", "N^D", "N^L", "N^W", "A^HSK", "fraction", "paper values", "paper mask",
              "paper total", "code", "hsk values", "hsk mask/pos", "hsk total", "ratio", "on disk", "disk ratio")
    body = [
        (r.config, str(r.n_d), str(r.n_l), str(r.n_w), f"{r.a_hsk:g}", f"{r.fraction:.2%}",
         human(r.paper_values_bytes), human(r.paper_mask_bytes), human(r.paper_total_bytes),
         r.width_encoding, human(r.hskcache_values_bytes), human(r.hskcache_mask_bytes),
         human(r.hskcache_total_bytes), f"{r.ratio:.2f}×",
         human(r.disk_total_bytes) + ("*" if r.disk_measured else ""), f"{r.disk_ratio:.2f}×")
        for r in rows
    ]
    for group in setting.extra_groups:  # one more column per opt-in kinds' group, before the total
        at = header.index("hsk total")
        header = (*header[:at], group, *header[at:])
        body = [(*line[:at], human(r.hskcache_group_bytes[group]), *line[at:]) for line, r in zip(body, rows)]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))

    return "\n".join([describe_setting(setting), fmt(header), *map(fmt, body), *NOTES])


def format_disk(disk: dict[str, int], planned: dict[str, int]) -> str:
    """Per-array bytes on disk next to the writer's arithmetic (the rest is metadata)."""
    names = list(dict.fromkeys([*planned, *disk]))
    lines = [f"{'array':<16}{'on disk':>14}{'planned':>14}{'metadata/other':>16}"]
    for name in names:
        on_disk, plan = disk.get(name, 0), planned.get(name, 0)
        lines.append(f"{name:<16}{on_disk:>14,}{plan:>14,}{on_disk - plan:>16,}")
    total_disk, total_plan = sum(disk.values()), sum(planned.values())
    lines.append(f"{'total':<16}{total_disk:>14,}{total_plan:>14,}{total_disk - total_plan:>16,}"
                 f"   ({human(total_disk)} on disk)")
    return "\n".join(lines)


def to_json(rows: Sequence[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)


def to_csv(rows: Sequence[Row]) -> str:
    """One line per configuration; the per-array disk bytes collapse to their total, the opt-in
    kinds' groups are a column each (`hskcache_<group>_bytes`)."""
    groups = list(rows[0].hskcache_group_bytes) if rows else []
    flat = ("disk_bytes", "hskcache_group_bytes")
    names = [f.name for f in fields(Row) if f.name not in flat] + [f"hskcache_{g}_bytes" for g in groups]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        record = {k: v for k, v in asdict(r).items() if k not in flat}
        record |= {f"hskcache_{g}_bytes": n for g, n in r.hskcache_group_bytes.items()}
        writer.writerow(record)
    return out.getvalue()


def plot(rows: Sequence[Row], setting: Setting, path: str) -> None:
    """Bytes (log) against A^HSK (log) for both layouts: the storage side of the
    marginal-utility curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = [r.a_hsk for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(a, [r.paper_total_bytes for r in rows], marker="o", label="paper: fp32 values + byte mask")
    ax.scatter(a, [r.hskcache_values_bytes + r.hskcache_mask_bytes for r in rows], marker="s",
               label="hskcache: values + width code + positions, uncompressed")
    ax.scatter(a, [r.disk_values_bytes + r.disk_mask_bytes for r in rows], marker="^",
               label="hskcache: the same on disk (zstd)")
    ax.scatter(a, [r.hskcache_total_bytes for r in rows], marker="x", color="grey",
               label="hskcache store total (+ inputs, logits)")
    if len(rows) <= 12:
        for r in rows:
            ax.annotate(r.config, (r.a_hsk, r.paper_total_bytes), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("A^HSK (units of N^D × N^L × N^W)")
    ax.set_ylabel("bytes")
    ax.set_title(f"HSK storage, {setting.examples} examples, d_T={setting.hidden}, L'={setting.student_layers}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot write plot {path}: {exc}; pass a writable .png path") from None
    finally:
        plt.close(fig)
