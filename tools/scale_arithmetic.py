"""Paper arithmetic for scaled-out extraction and training (docs/scale.md).

Bytes and object counts come from the store layout (`hskcache.store.shape.StoreShape`
and `hskcache.budget.plan.Setting.store_shape`: the writer's own arithmetic, the exact
uncompressed bytes). Times come from per-GPU rates given on the command line:
they are inputs, not measurements, and the tables print them.

    python tools/scale_arithmetic.py mnli --extract-rate 2000 --train-rate 4000
    python tools/scale_arithmetic.py general --tflops V100=40 A100=120 H100=350

`mnli`: MNLI-sized task transfer sets. Requests, for a store on S3 or GCS:
- extraction writes one object per chunk per array, one commit marker per
  chunk and a few metadata objects (PUT);
- an epoch of training reads every chunk of every array once, whatever the
  number of ranks, since each rank reads a disjoint share of the chunks (GET).

`general`: a Wikipedia-and-books-sized general corpus (about 3.3B tokens, 6.4M
sequences of 512) cached once from a BERT-base teacher: store bytes per
configuration (`store_choices`), extraction FLOPs (one teacher forward per
sequence, `Encoder.forward_flops` per token) and GPU-hours at the given
sustained rates, against TinyBERT's reported online general distillation (ONLINE).
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from hskcache.budget.plan import CONFIG_HELP, Setting, parse_configs
from hskcache.errors import UserError
from hskcache.kinds import KINDS, TeacherInfo
from hskcache.kinds.hsk import HSKRecord, HSKSettings
from hskcache.options import OneLineParser, run_guarded
from hskcache.selection.hsk import layer_map
from hskcache.store.shape import StoreShape, estimated_disk
from hskcache.storage.layout import human

MNLI = 392_702


def check_sizes(sizes: dict[str, float | Sequence[float]], at_least: float = 1) -> None:
    """One line naming every size below `at_least` (or not finite), so nothing divides by zero or
    builds a model of negative width further on."""
    def values(v: float | Sequence[float]) -> Sequence[float]:
        return v if isinstance(v, (list, tuple)) else [v]

    bad = [f"{flag} {v:g}" for flag, given in sizes.items() for v in values(given)
           if not (math.isfinite(v) and v >= at_least)]
    if bad:
        raise UserError(f"{', '.join(bad)}: give {'sizes' if len(bad) > 1 else 'a size'} of at least {at_least:g}")


def run_mnli(args: argparse.Namespace) -> int:
    check_sizes({"--examples": args.examples, "--ranks": args.ranks, "--student-layers": args.student_layers,
                 "--teacher-width": args.teacher_width})
    check_sizes({"--seq-len": args.seq_len}, at_least=2)
    if not (args.extract_rate > 0 and args.train_rate > 0 and math.isfinite(args.extract_rate + args.train_rate)):
        raise UserError(f"--extract-rate {args.extract_rate:g} and --train-rate {args.train_rate:g}: give rates above 0")
    configs = parse_configs(args.configs, args.student_layers, args.seq_len)
    print(f"teacher width {args.teacher_width}, student layers {args.student_layers}, length {args.seq_len}; "
          f"assumed rates per GPU: extraction {args.extract_rate:,.0f} rows/s, training {args.train_rate:,.0f} rows/s")
    print(f"{'examples':>10} {'config':>9} {'store':>10} {'rows/chunk':>10} {'objects':>8} {'PUT':>8} "
          f"{'GET/epoch':>9} " + " ".join(f"{f'N={n} extract':>14} {'epoch':>8} {'GB/rank':>8}"
                                          for n in args.ranks))
    print(" " * 71 + " ".join(f"{'min':>14} {'min':>8} {'':>8}" for _ in args.ranks))
    for examples in args.examples:
        setting = Setting(examples=examples, seq_len=args.seq_len, student_layers=args.student_layers,
                          hidden=args.teacher_width)
        for config in configs:
            shape = setting.store_shape(config)
            rows = shape.rows_per_chunk(examples)
            chunks = math.ceil(examples / rows)
            arrays = len(shape.arrays())
            total = sum(shape.bytes_by_array(examples).values())
            objects = chunks * arrays
            puts = objects + chunks + arrays + 1  # chunk objects, commit markers, array and group metadata
            cells = []
            for n in args.ranks:
                extract_min = examples / (n * args.extract_rate) / 60
                epoch_min = examples / (n * args.train_rate) / 60
                cells.append(f"{extract_min:>14.2f} {epoch_min:>8.2f} {total / n / 1e9:>8.2f}")
            print(f"{examples:>10,} {config.name:>9} {human(total):>10} {rows:>10,} {objects:>8,} {puts:>8,} "
                  f"{objects:>9,} " + " ".join(cells))
    return 0


# --- general: a Wikipedia-and-books-sized corpus ----------------------------


@dataclass(frozen=True)
class Encoder:
    """A BERT-style encoder's sizes."""

    layers: int
    width: int
    heads: int
    ffn: int
    vocab: int = 30522
    positions: int = 512
    token_types: int = 2

    def parameters(self) -> int:
        """What transformers' `BertModel` of this shape holds (pooler included), built on the meta device:
        no memory, no weights."""
        import torch
        from transformers import BertConfig, BertModel

        config = BertConfig(vocab_size=self.vocab, hidden_size=self.width, num_hidden_layers=self.layers,
                            num_attention_heads=self.heads, intermediate_size=self.ffn,
                            max_position_embeddings=self.positions, type_vocab_size=self.token_types)
        with torch.device("meta"):
            return sum(p.numel() for p in BertModel(config).parameters())

    def layer_weights(self) -> int:
        """The layers' matrix weights (Q, K, V, output, the FFN's two): Kaplan et al.'s non-embedding
        parameters, without the biases and LayerNorms that multiply nothing."""
        return self.layers * (4 * self.width ** 2 + 2 * self.width * self.ffn)

    def forward_flops(self, seq_len: int) -> int:
        """FLOPs of one forward per token at `seq_len`: 2 per layer weight, plus the attention scores and
        the weighted values, 2 × seq_len × width each per layer (every token attends to all seq_len; a
        causal model averages half, hence Kaplan's 2·n_layer·n_ctx·d_attn). Embedding lookups, softmax,
        GELU and LayerNorm multiply no matrices and are left out; a backward costs twice the forward."""
        return 2 * self.layer_weights() + 4 * self.layers * seq_len * self.width

    def describe(self) -> str:
        return f"{self.layers}×{self.width}, {self.heads} heads, FFN {self.ffn}"


@dataclass(frozen=True)
class StoreChoice:
    """One store configuration of the general corpus: what it holds, and whose choice it is."""

    name: str
    student_layers: int  # L': the HSK's layer pairs are g(l, L_top), l = 0..L'
    hsk: tuple[int, int, float]  # (N^D, N^L, N^W): every store holds an HSK (it carries the inputs)
    relations: tuple[str, ...] = ()
    att_layers: str = "last"
    rows: int = 0  # relation query rows (0: every token)
    keys: int = 0  # keys kept per row (0: every key)
    relation_heads: int | None = None  # qq/kk (None: the teacher's heads)


def store_choices(student_layers: int, teacher_layers: int, seq_len: int) -> tuple[StoreChoice, ...]:
    """The configurations the table compares, for a student of L' = `student_layers` (N^D at most L'+1;
    N^L, rows and keys at most `seq_len`), plus every teacher layer at (L_t+1, 50, 0.2), which serves a
    student of any depth up to L_t. The relation choices carry the smallest HSK, since every store holds one."""
    lp, lt = student_layers, teacher_layers
    small = (1, min(9, seq_len), 0.1)
    mid = (min(4, lp + 1), min(50, seq_len), 0.2)
    rows, keys = min(64, seq_len), min(32, seq_len)
    def hsk(h: tuple[int, int, float]) -> str:
        return f"({h[0]},{h[1]},{h[2]:g})"
    return (
        StoreChoice(f"HSK {hsk(small)}, L'={lp}", lp, small),
        StoreChoice(f"HSK {hsk(mid)}, L'={lp}", lp, mid),
        StoreChoice(f"HSK {hsk((lt + 1, mid[1], 0.2))}: every teacher layer, any student depth", lt,
                    (lt + 1, mid[1], 0.2)),
        StoreChoice(f"TinyBERT: full HSK ({lp + 1},all,1.0) + att at every pair, L'={lp}", lp, (lp + 1, seq_len, 1.0),
                    ("att",), "pairs"),
        StoreChoice(f"MiniLM: att+val, last layer, all rows × all keys", lp, small, ("att", "val")),
        StoreChoice(f"MiniLM cut: att+val, last layer, {rows} rows × {keys} keys", lp, small, ("att", "val"),
                    rows=rows, keys=keys),
        StoreChoice(f"MiniLMv2: qq+kk+val, last layer, all rows × all keys", lp, small, ("qq", "kk", "val")),
        StoreChoice(f"MiniLMv2 cut: qq+kk+val, last layer, {rows} rows × {keys} keys", lp, small,
                    ("qq", "kk", "val"), rows=rows, keys=keys),
    )


def store_shape(choice: StoreChoice, teacher: Encoder, seq_len: int) -> StoreShape:
    """The shape `hskcache extract` writes for `choice` from a bare encoder (no logits, no labels)."""
    n_d, tokens, n_w = choice.hsk
    kinds = {"hsk": HSKRecord.of(HSKSettings(n_d, tokens, n_w), n_d, tokens, teacher.width)}
    info = TeacherInfo(tuple(layer_map(choice.student_layers, teacher.layers)), teacher.layers, teacher.heads,
                       teacher.width, seq_len, tokens, "att-nosep-top")
    for name in choice.relations:
        kind = KINDS[name]
        extra = {"relation_heads": choice.relation_heads} if name in ("qq", "kk") else {}
        settings = kind.settings(att_layers=choice.att_layers, att_rows=choice.rows or seq_len,
                                 att_keys=choice.keys or seq_len, **extra)
        kinds[name] = kind.resolve(settings, info)
    return StoreShape(seq_len=seq_len, vocab_size=teacher.vocab, num_logits=0, regression=False,
                      hidden=teacher.width, kinds=kinds)


@dataclass(frozen=True)
class Online:
    """A reported cost of online general distillation, with where it comes from."""

    gpu_hours: tuple[float, float]
    gpu: str
    source: str


ONLINE: tuple[Online, ...] = (
    Online((2200, 2900), "V100", "TinyBERT-4 general distillation, as issue 20 states it (no source given there; "
           "not found in the four seed papers)"),
    Online((576, 576), "V100", "TinyBERT-4 general distillation, 128-token sequences: How to Distill your BERT, "
           "Table 7 (16 GB V100)"),
    Online((640, 640), "V100", "ETD's 6×384 student, 5 epochs: Extract-Then-Distill, footnote 3 (80 h × 8 V100)"),
)


# Student shapes of the papers (the general stage trains each from the same store).
STUDENTS: dict[str, Encoder] = {
    "TinyBERT-4 (4×312)": Encoder(4, 312, 12, 1200),
    "MiniLM-6 (6×384)": Encoder(6, 384, 12, 1536),
}


def parse_rates(items: Sequence[str]) -> dict[str, float]:
    rates = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not name or rate <= 0:
            raise UserError(f"--tflops {item!r}: write GPU=TFLOPS with a rate above 0, e.g. V100=40")
        rates[name] = rate
    return rates


def tb(nbytes: float) -> str:
    return f"{nbytes / 1e12:,.2f} TB" if nbytes >= 1e11 else f"{nbytes / 1e9:,.1f} GB"


def run_general(args: argparse.Namespace) -> int:
    rates = parse_rates(args.tflops)
    check_sizes({"--tokens": args.tokens, "--teacher-layers": args.teacher_layers,
                 "--teacher-width": args.teacher_width, "--teacher-heads": args.teacher_heads,
                 "--teacher-ffn": args.teacher_ffn, "--student-layers": args.student_layers,
                 "--students-per-store": args.students_per_store})
    check_sizes({"--seq-len": args.seq_len}, at_least=2)
    if not (args.epochs > 0 and math.isfinite(args.epochs)):
        raise UserError(f"--epochs {args.epochs:g}: give a number of epochs above 0")
    teacher = Encoder(args.teacher_layers, args.teacher_width, args.teacher_heads, args.teacher_ffn,
                      positions=max(512, args.seq_len))
    if teacher.width % teacher.heads:
        raise UserError(f"--teacher-heads {teacher.heads} must divide --teacher-width {teacher.width}")
    if args.student_layers > teacher.layers:
        raise UserError(f"--student-layers {args.student_layers} is deeper than the teacher's "
                        f"--teacher-layers {teacher.layers}; give at most {teacher.layers}")
    sequences = math.ceil(args.tokens / args.seq_len)
    tokens = sequences * args.seq_len
    per_token = teacher.forward_flops(args.seq_len)
    flops = per_token * tokens
    print(f"corpus (input): {args.tokens:,.0f} tokens = {sequences:,} sequences of {args.seq_len}")
    print(f"teacher: BERT-style {teacher.describe()}, vocabulary {teacher.vocab:,}: {teacher.parameters():,} "
          f"parameters (counted on transformers' BertModel), {teacher.layer_weights():,} of them layer weights")
    print(f"extraction: one teacher forward per sequence, (2 × layer weights + 4 × layers × {args.seq_len} × width) "
          f"= {per_token / 1e6:,.1f}M FLOPs per token, {flops:.3g} FLOPs")
    print("\nstore per configuration (bare encoder: no logits, no labels; exact uncompressed bytes from the "
          "store layout, on disk estimated from the codecs' measured ratios)")
    choices = store_choices(args.student_layers, teacher.layers, args.seq_len)
    width = max(len(c.name) for c in choices)
    print(f"{'configuration':<{width}}  {'per sequence':>12}  {'store':>12}  {'on disk (est.)':>14}")
    for choice in choices:
        shape = store_shape(choice, teacher, args.seq_len)
        raw = shape.bytes_by_array(sequences)
        per_row = sum(a.row_bytes for a in shape.arrays())
        print(f"{choice.name:<{width}}  {human(per_row):>12}  {tb(sum(raw.values())):>12}  "
              f"{tb(sum(estimated_disk(shape, raw).values())):>14}")
    print("\nGPU-hours of extraction at assumed sustained rates (inputs, not measurements)")
    print(f"{'GPU':<6} {'TFLOP/s':>8} {'GPU-hours':>10}")
    hours = {}
    for gpu, rate in rates.items():
        hours[gpu] = flops / (rate * 1e12) / 3600
        print(f"{gpu:<6} {rate:>8g} {hours[gpu]:>10,.1f}")
    print("\nagainst reported online general distillation (teacher and student on every step)")
    for online in ONLINE:
        low, high = online.gpu_hours
        reported = f"{low:,.0f}" if low == high else f"{low:,.0f}–{high:,.0f}"
        ratio = ("" if online.gpu not in hours else
                 f"  = {low / hours[online.gpu]:,.0f}" + ("" if low == high else f"–{high / hours[online.gpu]:,.0f}")
                 + f"× the {online.gpu} extraction")
        print(f"{reported} {online.gpu}-hours{ratio}: {online.source}")
    compare_flops(args, per_token, tokens, rates)
    return 0


def compare_flops(args: argparse.Namespace, teacher_per_token: int, tokens: int, rates: dict[str, float]) -> None:
    """Online against cached at equal hardware efficiency: online runs the teacher forward (F_t per token)
    with every student step (forward + backward, 3·F_s per token), every epoch; cached runs it once."""
    e, t = args.epochs, teacher_per_token * tokens
    print(f"\nthe whole general stage in FLOPs, {e:g} epochs per student (an input), F = forward FLOPs per token as for the teacher: "
          "online = k × E × (F_t + 3·F_s) × T, cached = F_t × T + k × E × 3·F_s × T (store reads and the loss's "
          "projections not counted); k→∞: (F_t + 3·F_s) / 3·F_s")
    print(f"{'student':<20} {'parameters':>11} {'F_s (M)':>8} " +
          " ".join(f"{f'k={k} online':>13} {'cached':>9} {'ratio':>6}" for k in args.students_per_store) +
          f" {'k→∞':>6}")
    for name, student in STUDENTS.items():
        f_s = student.forward_flops(args.seq_len)
        s = 3 * f_s * tokens
        cells = [f"{k * e * (t + s):>13.3g} {t + k * e * s:>9.3g} {k * e * (t + s) / (t + k * e * s):>5.2f}×"
                 for k in args.students_per_store]
        print(f"{name:<20} {student.parameters():>11,} {f_s / 1e6:>8.1f} " + " ".join(cells) +
              f" {(t + s) / s:>5.2f}×")
    for name, student in STUDENTS.items():
        online = e * (t + 3 * student.forward_flops(args.seq_len) * tokens)
        print(f"{name}, online (k=1) at the assumed rates: " +
              ", ".join(f"{gpu} {online / (rate * 1e12) / 3600:,.0f} h" for gpu, rate in rates.items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="scale_arithmetic.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="table", required=True)
    mnli = commands.add_parser("mnli", help="MNLI-sized task transfer sets")
    mnli.add_argument("--examples", type=int, nargs="+", default=[MNLI, 10 * MNLI],
                      help="transfer-set sizes (default MNLI and MNLI augmented 10x)")
    mnli.add_argument("--configs", nargs="+", default=["1,9,0.1", "4,50,0.2"], help=CONFIG_HELP)
    mnli.add_argument("--ranks", type=int, nargs="+", default=[1, 8, 64])
    mnli.add_argument("--seq-len", type=int, default=128)
    mnli.add_argument("--student-layers", type=int, default=4)
    mnli.add_argument("--teacher-width", type=int, default=768)
    mnli.add_argument("--extract-rate", type=float, required=True, help="rows/s one GPU extracts (an input)")
    mnli.add_argument("--train-rate", type=float, required=True, help="rows/s one GPU trains a student on (an input)")
    general = commands.add_parser("general", help="a Wikipedia-and-books-sized general corpus")
    general.add_argument("--tokens", type=float, default=3.3e9, help="corpus tokens (default 3.3e9)")
    general.add_argument("--seq-len", type=int, default=512)
    general.add_argument("--teacher-layers", type=int, default=12)
    general.add_argument("--teacher-width", type=int, default=768)
    general.add_argument("--teacher-heads", type=int, default=12)
    general.add_argument("--teacher-ffn", type=int, default=3072)
    general.add_argument("--student-layers", type=int, default=4,
                         help="L' of the stores' layer maps (default 4, TinyBERT-4's; at most --teacher-layers)")
    general.add_argument("--tflops", nargs="+", required=True, metavar="GPU=TFLOPS",
                         help="sustained teacher-forward TFLOP/s per GPU (inputs, e.g. V100=40 A100=120)")
    general.add_argument("--epochs", type=float, default=3, help="general-stage epochs per student (default 3)")
    general.add_argument("--students-per-store", type=int, nargs="+", default=[1, 4], metavar="K",
                         help="students distilled from one store (default 1 4)")
    args = parser.parse_args(argv)
    return run_guarded(lambda: (run_mnli if args.table == "mnli" else run_general)(args), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
