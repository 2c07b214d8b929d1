"""`hskcache extract | inspect | budget`."""
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
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def run_guarded(fn: Callable[[], int], prog: str) -> int:
    """Bad input and interrupts become one line on stderr and a non-zero exit."""
    quiet_libraries()
    try:
        return fn()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... --json | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")
        return 0


def add_selection_flags(p, seed_flag: str = "--seed") -> None:
    """Which layers, tokens and activations: shared by `extract` and the online baseline."""
    p.add_argument("--student-layers", type=int, help="student depth L'")
    p.add_argument("--ltop", type=int, help="top teacher layer of the layer map (default: teacher depth)")
    p.add_argument("--teacher-layers", help="explicit teacher layers for student layers 0..L', e.g. 0,3,5,8,10")
    p.add_argument("--depth", type=int, help="N^D: the top N^D pairs (default all L'+1)")
    p.add_argument("--tokens", type=int, help="N^L: most tokens per layer (default 50)")
    p.add_argument("--token-strategy", help="left | att | att-nosep | att-nosep-top (default)")
    p.add_argument("--width", type=float, help="N^W: fraction of activations kept, (0, 1] (default 1.0)")
    p.add_argument("--width-strategy", help="mag (default) | rand | uniform")
    p.add_argument(seed_flag, type=int, help="seed of the rand width mask (default 0)")


def add_extract_parser(sub) -> None:
    p = sub.add_parser("extract", help="run the teacher once and write an HSK store",
                       description="Flags left out fall back to --config, then to the defaults shown.")
    p.add_argument("--config", help="TOML file with the same settings (flags override it)")
    p.add_argument("--teacher", help="fine-tuned sequence classifier: local folder or hub id")
    p.add_argument("--data", help="glue/<task> or a .csv/.tsv/.json/.jsonl/.parquet file")
    p.add_argument("--out", help="store directory to write")
    p.add_argument("--split", help="dataset split (default train)")
    p.add_argument("--text-cols", help="text column(s), a or a,b")
    p.add_argument("--label-col", help="label column")
    add_selection_flags(p)
    p.add_argument("--max-length", type=int, help="tokenizer max length (default 128)")
    p.add_argument("--batch-size", type=int, help="teacher batch size (default 64)")
    p.add_argument("--limit", type=int, help="only the first N examples")
    p.add_argument("--device", help="auto (default) | cpu | cuda")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace a store written with other settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_extract(args: argparse.Namespace) -> int:
    from .config import build_config
    from .extract import extract

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "quiet")}
    cfg = build_config(flags, args.config)
    path = extract(cfg, progress=not args.quiet)
    print(f"wrote {path}")
    return 0


def add_inspect_parser(sub) -> None:
    p = sub.add_parser("inspect", help="print a store's config, rows, completeness and bytes per array")
    p.add_argument("store")
    p.add_argument("--json", action="store_true")


def run_inspect(args: argparse.Namespace) -> int:
    from .store import describe

    info = describe(args.store)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"store       {info['path']}")
    print(f"complete    {info['complete']} ({info['rows_committed']}/{info['num_examples']} rows committed)")
    print(f"teacher     {info['teacher']}  layers {info['teacher_layers']}")
    print(f"width code  {info['width_encoding'] or 'none'}")
    print("config      " + ", ".join(f"{k}={v}" for k, v in (info["config"] or {}).items()))
    print("bytes per array:")
    for name, nbytes in info["bytes"].items():
        print(f"  {name:<16}{nbytes:>16,}")
    print(f"  {'total':<16}{info['total_bytes']:>16,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .budget_cli import add_budget_parser

    parser = argparse.ArgumentParser(prog="hskcache", description="Run a teacher once; store its compressed hidden-state knowledge.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_extract_parser(sub)
    add_inspect_parser(sub)
    add_budget_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        if args.command == "extract":
            return run_extract(args)
        if args.command == "inspect":
            return run_inspect(args)
        from .budget_cli import run_budget
        return run_budget(args)

    return run_guarded(run, "hskcache")


if __name__ == "__main__":
    sys.exit(main())
