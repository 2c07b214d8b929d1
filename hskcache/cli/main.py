"""`hskcache extract | inspect | verify | budget | augment | finetune`: one `Command` per subcommand.

Each command's parser is generated from its settings dataclass (`hskcache.options`);
this module holds only those dataclasses, the run functions and the table.
"""
from __future__ import annotations

import json
import sys
from dataclasses import MISSING, dataclass
from typing import Sequence

from hskcache import options
from hskcache.teacher.augment import AugmentConfig
from hskcache.cli.budget import BudgetConfig, run_budget
from hskcache.teacher.config import ExtractConfig
from hskcache.options import STORE_ARGUMENT, Command, Settings, nested, setting
from students.training.finetune import FinetuneConfig  # the CLI floor sits above both packages (docs/design.md)


@dataclass(frozen=True)
class ExtractRun:
    """`hskcache extract`: what is extracted (`ExtractConfig`) and how the run reports."""

    extraction: ExtractConfig = nested()
    quiet: bool = setting(False, "no progress bar")


def run_extract(run: ExtractRun) -> int:
    from hskcache.distributed import process_group
    from hskcache.teacher.extract import extract

    cfg = run.extraction
    with process_group(cfg.device):  # one process, or a rank of torchrun
        done = extract(cfg, progress=not run.quiet)
    if done is not None:
        print(f"wrote {done}")
    elif cfg.shard is not None:
        print(f"shard {cfg.shard[0]}/{cfg.shard[1]} of {cfg.store} written; the store is complete once every shard is")
    return 0


@dataclass(frozen=True)
class InspectConfig:
    store: str = setting(MISSING, "the store to describe: a directory or an fsspec URL", **STORE_ARGUMENT)
    json: bool = setting(False, "print the description as JSON")


def run_inspect(cfg: InspectConfig) -> int:
    from hskcache.store.group import describe, description_lines

    info = describe(cfg.store)
    print(json.dumps(info, indent=2) if cfg.json else "\n".join(description_lines(info)))
    return 0


@dataclass(frozen=True)
class VerifyConfig(Settings):
    store: str = setting(MISSING, "the store to check: a directory or an fsspec URL", **STORE_ARGUMENT)
    repair: bool = setting(False, "clear the commit markers of the bad chunks")
    threads: int | None = setting(None, "chunks checked at once", show_default="every core", at_least=1)
    quiet: bool = setting(False, "no progress bar")


def run_verify(cfg: VerifyConfig) -> int:
    from hskcache.store.reader import default_threads
    from hskcache.store.verify import repair, verify

    report = verify(cfg.store, cfg.threads or default_threads(), progress=not cfg.quiet)
    state = "" if report.committed == report.chunks else f" ({report.committed}/{report.chunks} chunks of rows committed)"
    print(f"{cfg.store}: checked {report.checked:,} chunk files{state}: {len(report.damage)} bad")
    for damage in report.damage:
        print(f"  {damage}")
    if not report.damage:
        return 0
    if not cfg.repair:
        print(f"repair: hskcache verify --store {cfg.store} --repair, then rerun the store's `hskcache extract` command")
        return 1
    chunks = repair(report)
    print(f"cleared the commit markers of chunks {', '.join(map(str, chunks)) or '(none)'}; rerun the store's "
          "`hskcache extract` command (same flags, no --overwrite) to rewrite them")
    return 0


@dataclass(frozen=True)
class AugmentRun:
    """`hskcache augment`: the transfer set to write (`AugmentConfig`) and how the run reports."""

    augment: AugmentConfig = nested()
    quiet: bool = setting(False, "no progress bar")


def run_augment(run: AugmentRun) -> int:
    from hskcache.teacher.augment import augment

    frame = augment(run.augment, progress=not run.quiet)
    print(f"wrote {run.augment.out}: {len(frame):,} rows, {int(frame['augmented'].sum()):,} augmented")
    return 0


def run_finetune(cfg: FinetuneConfig) -> int:
    from students.training.finetune import finetune

    meta = finetune(cfg)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in meta["dev_metrics"].items())
    print(f"epoch {meta['best_epoch']} (selected on the {meta['selected_on']}; dev {scores}) saved to {cfg.out}")
    return 0


COMMANDS = (
    Command("extract", "run the teacher once and write an HSK store", ExtractRun, run_extract,
            rerun="rerun the same command to resume (committed chunks are kept)"),
    Command("inspect", "print a store's config, rows, completeness and bytes per array", InspectConfig, run_inspect),
    Command("verify", "read and check every chunk of a store (checksums, missing or truncated chunks)",
            VerifyConfig, run_verify,
            "Exit 0 when every committed chunk reads as written, 1 when some do not. --repair clears the bad "
            "chunks' commit markers; rerunning the store's `hskcache extract` command then rewrites exactly "
            "those chunks."),
    Command("budget", "bytes each (N^D, N^L, N^W) costs, in the paper's layout and in this store's",
            BudgetConfig, run_budget, "Plan (--plan) or measure (--store STORE) what HSK configurations cost on disk."),
    Command("augment", "write a transfer set augmented by word replacement (TinyBERT), once", AugmentRun,
            run_augment, "Original rows first, then --per-example augmented copies of each, marked in an "
                         "'augmented' column with empty labels (the store takes the teacher's logits)."),
    Command("finetune", "fine-tune an encoder into the teacher that extract reads (a job's first step)",
            FinetuneConfig, run_finetune, "The saved epoch is the last, or the best on held-out training rows "
            "(--select-on); --eval-data is reported every epoch, never selected on. Flags left out fall back to "
            "--config, then to the defaults shown."),
)


def build_parser() -> options.OneLineParser:
    return options.program("hskcache", "Run a teacher once; store its compressed hidden-state knowledge.", COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    return options.main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
