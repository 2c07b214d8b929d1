"""`hskcache extract | inspect | verify | budget | augment`."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

from .errors import UserError


def quiet_libraries() -> None:
    """Our own progress bars say what is happening; the libraries' would interleave."""
    import datasets
    import huggingface_hub
    import transformers

    huggingface_hub.utils.logging.set_verbosity_error()  # the hub's retry warnings: the error says it once
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def run_guarded(fn: Callable[[], int], prog: str) -> int:
    """Bad input and interrupts become one line on stderr and a non-zero exit."""
    from .distributed import Ranks

    quiet_libraries()
    try:
        return fn()
    except UserError as exc:
        if Ranks.from_env().is_main:  # under torchrun every rank refuses alike; one says so
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... --json | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")
        return 0


def add_extract_parser(sub) -> None:
    from .config import ExtractConfig
    from .options import add_fields

    p = sub.add_parser("extract", help="run the teacher once and write an HSK store",
                       description="Flags left out fall back to --config, then to the defaults shown.")
    p.add_argument("--config", help="TOML file with the same settings (flags override it)")
    add_fields(p, ExtractConfig)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_extract(args: argparse.Namespace) -> int:
    from .config import build_config
    from .extract import extract

    from .distributed import process_group

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "quiet")}
    cfg = build_config(flags, args.config)
    with process_group(cfg.device) as (ranks, _):  # one process, or a rank of torchrun
        done = extract(cfg, progress=not args.quiet)
    if done is not None:
        print(f"wrote {done}")
    elif cfg.shard is not None:
        print(f"shard {cfg.shard[0]}/{cfg.shard[1]} of {cfg.store} written; the store is complete once every shard is")
    return 0


def add_inspect_parser(sub) -> None:
    from .options import add_store_argument

    p = sub.add_parser("inspect", help="print a store's config, rows, completeness and bytes per array")
    add_store_argument(p, "the store to describe: a directory or an fsspec URL")
    p.add_argument("--json", action="store_true")


def run_inspect(args: argparse.Namespace) -> int:
    from .options import store_argument
    from .store import describe

    store = store_argument(args)
    if store is None:
        raise UserError("hskcache inspect needs a store: --store STORE")
    info = describe(store)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"store       {info['path']}")
    print(f"complete    {info['complete']} ({info['rows_committed']}/{info['num_examples']} rows committed)")
    print(f"teacher     {info['teacher']}  layers {info['teacher_layers']}")
    print(f"schema      {info['schema_version']}")
    print(f"width code  {info['width_encoding'] or 'none'}")
    print("config      " + ", ".join(f"{k}={v}" for k, v in (info["config"] or {}).items()))
    print("bytes per array:")
    for name, nbytes in info["bytes"].items():
        print(f"  {name:<16}{nbytes:>16,}")
    print(f"  {'total':<16}{info['total_bytes']:>16,}")
    return 0


def add_verify_parser(sub) -> None:
    from .options import add_store_argument

    p = sub.add_parser("verify", help="read and check every chunk of a store (checksums, missing or truncated chunks)",
                       description="Exit 0 when every committed chunk reads as written, 1 when some do not. --repair "
                                   "clears the bad chunks' commit markers; rerunning the store's `hskcache extract` "
                                   "command then rewrites exactly those chunks.")
    add_store_argument(p, "the store to check: a directory or an fsspec URL")
    p.add_argument("--repair", action="store_true", help="clear the commit markers of the bad chunks")
    p.add_argument("--threads", type=int, default=None, help="chunks checked at once (default: every core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_verify(args: argparse.Namespace) -> int:
    from .options import store_argument
    from .reader import default_threads
    from .verify import repair, verify

    store = store_argument(args)
    if store is None:
        raise UserError("hskcache verify needs a store: --store STORE")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: give at least 1")
    report = verify(store, args.threads or default_threads(), progress=not args.quiet)
    state = "" if report.committed == report.chunks else f" ({report.committed}/{report.chunks} chunks of rows committed)"
    print(f"{store}: checked {report.checked:,} chunk files{state}: {len(report.damage)} bad")
    for damage in report.damage:
        print(f"  {damage}")
    if not report.damage:
        return 0
    if not args.repair:
        print(f"repair: hskcache verify --store {store} --repair, then rerun the store's `hskcache extract` command")
        return 1
    chunks = repair(report)
    print(f"cleared the commit markers of chunks {', '.join(map(str, chunks)) or '(none)'}; rerun the store's "
          "`hskcache extract` command (same flags, no --overwrite) to rewrite them")
    return 0


def add_augment_parser(sub) -> None:
    p = sub.add_parser("augment", help="write a transfer set augmented by word replacement (TinyBERT), once",
                       description="Original rows first, then --per-example augmented copies of each, marked in "
                                   "an 'augmented' column with empty labels (the store takes the teacher's logits).")
    p.add_argument("--teacher", required=True, help="the fine-tuned teacher (its embeddings or MLM head give candidates)")
    p.add_argument("--data", required=True, help="glue/<task> or a .csv/.tsv/.json/.jsonl/.parquet file")
    p.add_argument("--out", required=True, help="data file to write: .csv, .jsonl or .parquet")
    p.add_argument("--per-example", type=int, default=10, help="augmented rows per example (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the replacements (default 0)")
    p.add_argument("--replace-prob", type=float, default=0.4, help="chance a word is replaced (default 0.4, TinyBERT)")
    p.add_argument("--candidates", type=int, default=15, help="K most similar words to draw from (default 15, TinyBERT)")
    p.add_argument("--split", default="train", help="split of a glue/<task> --data (default train)")
    p.add_argument("--text-cols", help="text column")
    p.add_argument("--label-col", help="label column")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (never one in a store)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_augment(args: argparse.Namespace) -> int:
    from .augment import AugmentConfig, augment

    cols = tuple(c.strip() for c in args.text_cols.split(",")) if args.text_cols else None
    cfg = AugmentConfig(args.teacher, args.data, args.out, args.per_example, args.seed, args.replace_prob,
                        args.candidates, args.split, cols, args.label_col, args.overwrite)
    frame = augment(cfg, progress=not args.quiet)
    print(f"wrote {args.out}: {len(frame):,} rows, {int(frame['augmented'].sum()):,} augmented")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .budget_cli import add_budget_parser
    from .options import OneLineParser

    parser = OneLineParser(prog="hskcache", description="Run a teacher once; store its compressed hidden-state knowledge.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_extract_parser(sub)
    add_inspect_parser(sub)
    add_verify_parser(sub)
    add_budget_parser(sub)
    add_augment_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        if args.command == "extract":
            return run_extract(args)
        if args.command == "inspect":
            return run_inspect(args)
        if args.command == "verify":
            return run_verify(args)
        if args.command == "augment":
            return run_augment(args)
        from .budget_cli import run_budget
        return run_budget(args)

    return run_guarded(run, "hskcache")


if __name__ == "__main__":
    sys.exit(main())
