"""`hskcache budget`: storage-budget reports, before (--plan) and after extraction (--store).

The reports themselves are in ``hskcache.budget.plan`` and what is measured (a teacher's
numbers, data's token lengths, a store's setting) in ``hskcache.budget.inputs``; this
module holds the command's settings, turns them into a setting and prints.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping

from hskcache.budget import plan as budget

from hskcache.storage import widthcode
from hskcache.budget.inputs import length_counts, store_setting, teacher_files, teacher_numbers
from hskcache.errors import UserError
from hskcache.kinds import TeacherInfo, chosen, opt_in_settings, parse_knowledge
from hskcache.options import STORE_ARGUMENT, Settings, complete_per_name, field_names, per_name, setting
from hskcache.storage.layout import COMPRESSIONS, VALUE_FORMATS
from hskcache.selection.hsk import TOKEN_STRATEGIES, WIDTH_STRATEGIES
from hskcache.store.group import describe

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# Flags that describe a planned extraction; a store already records all of them.
PLAN_FLAGS = ("examples", "seq_len", "student_layers", "teacher_width", "vocab_size", "num_labels",
              "teacher", "data", "split", "text_cols", "token_strategy", "width_strategy", "width_code", "values",
              "compress", "knowledge", "att_heads")  # and each kind's settings that differ from their default
DATA_FLAGS = ("split", "text_cols", "token_strategy")
STORE_FLAGS = ("width_strategy", "width_code", "values", "compress")  # the planned store's, default budget.Setting's


@dataclass(frozen=True)
class BudgetConfig(Settings):
    """Every setting of `hskcache budget`: each field is a flag and a TOML key."""

    store: str | None = setting(None, "an hskcache store to measure (omit with --plan)", **STORE_ARGUMENT)
    plan: bool = setting(False, "plan before extraction, from numbers or a teacher and data")
    configs: tuple[str, ...] | None = setting(
        None, "configurations: " + budget.CONFIG_HELP, nargs="+", metavar="CONFIG",
        show_default="full with --plan, only the store's own with --store")
    examples: int | None = setting(None, "number of training examples", at_least=1)
    seq_len: int | None = setting(None, "|x|: tokenizer max length", at_least=1)
    student_layers: int | None = setting(None, "L': student depth (N^D goes up to L'+1)", at_least=1)
    teacher_width: int | None = setting(None, "d_T: teacher hidden size", at_least=1)
    vocab_size: int | None = setting(None, "tokenizer vocabulary size", show_default=budget.Setting.vocab_size,
                                     at_least=1)
    num_labels: int | None = setting(None, "teacher outputs; 1 means regression, 0 a bare encoder's task-agnostic "
                                           "store (no logits or labels)",
                                    show_default=budget.Setting.num_logits, at_least=0)
    teacher: str | None = setting(None, "model folder or hub id: widths and labels from its config instead of numbers")
    data: str | None = setting(None, "glue/<task> or a local file: example count and real token lengths (needs --teacher)")
    split: str | None = setting(None, "dataset split with --data", show_default="train")
    text_cols: str | None = setting(None, "text column(s) with --data, a or a,b")
    token_strategy: str | None = setting(None, "with --data: att-nosep* never keep [SEP], so fewer tokens are "
                                               "eligible", choices=TOKEN_STRATEGIES, show_default="left")
    width_strategy: str | None = setting(None, "width strategy of the store", choices=WIDTH_STRATEGIES,
                                         show_default=budget.Setting.width_strategy)
    width_code: str | None = setting(None, "width code of the store", choices=widthcode.WIDTH_CODES,
                                     show_default=budget.Setting.width_code)
    values: str | None = setting(None, "value format of the store", choices=VALUE_FORMATS,
                                 show_default=budget.Setting.values)
    compress: str | None = setting(None, "compression of the store", choices=COMPRESSIONS,
                                   show_default=budget.Setting.compress)
    knowledge: str | None = setting(None, "hsk,att,val: also count the opt-in kinds, e.g. attention / value "
                                    "relations (hskcache.kinds), with their settings below (rows default to --seq-len)")
    kinds: Mapping[str, Any] = per_name(opt_in_settings, "knowledge kinds' settings (with --knowledge)")
    att_heads: int | None = setting(None, "with --knowledge: teacher attention heads", show_default="from --teacher",
                                    at_least=1)
    json: bool = setting(False, "print a JSON list, one object per configuration")
    csv: bool = setting(False, "print CSV, one line per configuration")
    plot: str | None = setting(None, "draw bytes (log) against A^HSK for both layouts", metavar="FILE.png")

    def __post_init__(self) -> None:
        complete_per_name(self)
        if self.json and self.csv:
            raise UserError("--json and --csv are two output formats; pass one")
        if self.plan == bool(self.store):
            raise UserError("give either --store STORE to measure or --plan with the numbers of a planned extraction")
        given = self.given()
        if self.store and given:
            raise UserError(f"{_flags(given)} describe a planned extraction; a store records them, so drop them or use --plan")
        missing = [n for n in ("seq_len", "student_layers") if self.plan and n not in given]
        if missing:
            raise UserError(f"--plan needs {_flags(missing)}")

    def given(self) -> list[str]:
        """The planned-extraction flags that were given."""
        return [name for name in PLAN_FLAGS if getattr(self, name) is not None] + self.kind_flags()

    def kind_flags(self) -> list[str]:
        """The kinds' settings given (different from their default)."""
        return list(dict.fromkeys(f.name for s in dict.fromkeys(self.kinds.values()) for f in fields(s)
                                  if getattr(s, f.name) != f.default))  # a field two classes share: once


def run_budget(args: BudgetConfig) -> int:
    if args.store:
        setting, own, disk = store_setting(args.store)
        extra = budget.parse_configs(list(args.configs or []), setting.student_layers, setting.seq_len)
        configs = [own] + [c for c in extra if (c.n_d, c.n_l, c.n_w) != (own.n_d, own.n_l, own.n_w)]
    else:
        setting = plan_setting(args, args.given())
        configs = budget.parse_configs(list(args.configs or ["full"]), setting.student_layers, setting.seq_len)
    rows = [budget.report(c, setting, disk if args.store and i == 0 else None) for i, c in enumerate(configs)]
    if args.plot:
        budget.plot(rows, setting, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.json:
        print(budget.to_json(rows))
    elif args.csv:
        print(budget.to_csv(rows), end="")
    else:
        if args.store:
            planned = setting.store_shape(own).bytes_by_array(setting.examples)
            print(f"store {args.store}: {describe(args.store)['students']}; N^D counts pairs of a student's "
                  "layer map (`hskcache/selection/layers.py`)")
            print(f"store {args.store}: bytes on disk per array (planned = the writer's arithmetic, uncompressed)")
            print(budget.format_disk(disk, planned))
            print(f"\nfirst row: the store itself ({own.name}); the others as if each had been extracted alone")
        print(budget.format_table(rows, setting))
    return 0


def _flags(names: list[str]) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in names)


def plan_setting(args: BudgetConfig, given: list[str]) -> budget.Setting:
    """The setting of a planned extraction: from numbers, or from a teacher (and its data)."""
    config = tokenizer = None  # the --teacher's, loaded once and passed to all that reads them
    if args.teacher:
        clash = [n for n in ("teacher_width", "vocab_size", "num_labels") if n in given]
        if clash:
            raise UserError(f"{_flags(clash)} come from --teacher {args.teacher}; drop them")
        config, tokenizer = teacher_files(args.teacher)
        hidden, vocab, num_labels, regression = teacher_numbers(config, tokenizer)
    elif args.teacher_width is None:
        raise UserError("--plan needs the teacher: --teacher-width D (or --teacher PATH)")
    else:
        hidden = args.teacher_width
        vocab = args.vocab_size or budget.Setting.vocab_size
        num_labels = budget.Setting.num_logits if args.num_labels is None else args.num_labels
        regression = num_labels == 1
    if hidden > widthcode.MAX_WIDTH:
        raise UserError(f"--teacher-width {hidden} is above {widthcode.MAX_WIDTH}, the widest the width codes support")
    if args.data:
        if not args.teacher:
            raise UserError("--data needs --teacher PATH: its tokenizer gives the real token lengths")
        if args.examples is not None:
            raise UserError("--examples comes from --data; drop one of them")
        counts = length_counts(config, tokenizer, args.data, args.split or "train", args.text_cols,
                               args.seq_len, args.token_strategy or "left")
        examples, counts = int(sum(counts)), tuple(counts)
    else:
        stray = [n for n in DATA_FLAGS if n in given]
        if stray:
            raise UserError(f"{_flags(stray)} only apply with --data")
        if args.examples is None:
            raise UserError("--plan needs --examples N (or --teacher PATH --data DATA)")
        examples, counts = args.examples, None
    return budget.Setting(
        examples=examples, seq_len=args.seq_len, student_layers=args.student_layers, hidden=hidden,
        vocab_size=vocab, num_logits=num_labels, regression=regression,
        length_counts=counts, kinds=plan_kinds(args, hidden, config),
        **{name: getattr(args, name) for name in STORE_FLAGS if getattr(args, name) is not None},  # else Setting's
    )


def plan_kinds(args: BudgetConfig, hidden: int, config: PretrainedConfig | None = None) -> dict[str, Any]:
    """What a planned extraction records of each opt-in kind it stores (`Kind.resolve` against the
    plan's numbers: the student's layer pairs stand in for the teacher's layers, --seq-len for N^L;
    `config`: the --teacher's, whose heads and layers it reads); only counts matter for bytes."""
    opted = chosen(parse_knowledge(args.knowledge or "hsk"))
    own = {name for kind in opted if kind.settings for name in field_names(kind.settings)}
    stray = [n for n in args.kind_flags() if n not in own] + (["att_heads"] if args.att_heads and not opted else [])
    if stray:
        raise UserError(f"{_flags(stray)} only apply with --knowledge naming their kind (hskcache.kinds)")
    if not opted:
        return {}
    heads, layers = args.att_heads, args.student_layers
    if config is not None:  # the --teacher's
        heads, layers = heads or config.num_attention_heads, config.num_hidden_layers
    if heads is None:
        raise UserError(f"--knowledge {','.join(k.name for k in opted)} needs the teacher's attention heads: "
                        "--att-heads H (or --teacher PATH)")
    info = TeacherInfo(tuple(range(args.student_layers + 1)), layers, heads, hidden, args.seq_len, args.seq_len,
                       "att-nosep-top")
    return {kind.name: kind.resolve(args.kinds.get(kind.name), info) for kind in opted}
