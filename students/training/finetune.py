"""Fine-tuning a local encoder into the teacher that `hskcache extract` reads (`hskcache finetune`).

Any encoder folder works (a plain `BertModel` or a sentence-transformers layout gets
a fresh classification head); the data is anything `hskcache.data.load_texts` reads.
Batches are trimmed to their longest real sequence, so short texts cost less than
`--max-length`. The saved epoch is chosen without looking at `--eval-data`
(`--select-on`): the last epoch, or the best on a held-out slice of the training
data by the task's primary metric (`students.evaluation.metrics.primary_metric`, as `students
train` selects). The eval data is only reported, every epoch, with the metrics
`students eval` reports (`students.evaluation.evaluate`). Saved with `save_pretrained`, the
tokenizer, and `hskcache_teacher.json` (eval metrics of the saved epoch, label
names, text columns, settings, per-epoch history), into a sibling of `--out` that
takes its place when the run ends (`hskcache.outputs.replaced_dir`): a cut run leaves
no `--out`, or the old one untouched.

It lives in `students` (it is a training loop and evaluates with `students.evaluation.evaluate`);
the `hskcache` CLI, which sits above both packages, registers the command.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from hskcache.data import TextData, fingerprint, load_texts
from hskcache.device import autocast, pick_device, pick_dtype
from hskcache.errors import UserError
from hskcache.options import Settings, columns, nested, setting
from hskcache.outputs import check_out_folder, replaced_dir
from hskcache.teacher.loading import (check_max_length, check_min_length, load_config, load_model, load_tokenizer,
                              usable_positions)
from students.evaluation.evaluate import EvalSet, encode_eval_set, evaluate, trimmed
from students.evaluation.metrics import improves, primary_metric
from students.training.runtime import Runtime, set_cpu_threads, settings_json
from students.training.selection import holdout_split, parse_select_on

META_FILE = "hskcache_teacher.json"
DEFAULT_MAX_LENGTH = 64  # when --max-length is not given (capped at the model's positions)
SELECT_ON = ("last", "train-holdout")  # no `eval`: the eval data is never used to select


@dataclass(frozen=True)
class FinetuneConfig(Settings):
    """Every setting of one fine-tuning run: each field is a `hskcache finetune` flag and a TOML key."""

    teacher: str = field(metadata={"help": "local Hugging Face encoder folder to fine-tune into the teacher (an "
                                           "encoder without a classification head gets a fresh one)"})
    data: str = field(metadata={"help": "labeled training data: glue/<task> or a .csv/.tsv/.json/.jsonl/.parquet "
                                        "file"})
    eval_data: str = field(metadata={"help": "labeled dev data, reported every epoch and never used to select: "
                                             "glue/<task> or a file"})
    out: str = field(metadata={"help": "teacher folder to write (new or empty, else --overwrite)"})
    split: str = setting("train", "split of a glue/<task> --data")
    eval_split: str = setting("validation", "split of a glue/<task> --eval-data")
    text_cols: tuple[str, ...] | None = setting(None, "text column(s), a or a,b", parse=columns)
    label_col: str | None = setting(None, "label column")
    label_names: tuple[str, ...] | None = setting(
        None, "class names for classes 0..C-1, e.g. rotten,fresh: written to the model's id2label, so the teacher, "
        "its store and its students say them (default: the data's own, else LABEL_i)", parse=columns)
    epochs: int = setting(3, "training epochs", at_least=1)
    lr: float = setting(5e-5, "peak learning rate (linear warmup, then linear decay to 0)", above=0)
    warmup_frac: float = setting(0.1, "fraction of the steps that warm the learning rate up, in [0, 1)",
                                 at_least=0, below=1)
    weight_decay: float = setting(0.01, "AdamW weight decay", at_least=0)
    max_grad_norm: float = setting(1.0, "gradient clipping", above=0)
    batch_size: int = setting(32, "training batch size", at_least=1)
    eval_batch_size: int = setting(128, "eval batch size", at_least=1)
    max_length: int | None = setting(None, "tokenizer max length",
                                     show_default=f"{DEFAULT_MAX_LENGTH}, or the model's positions if fewer")
    seed: int = setting(0, "seeds the new head, dropout, the data order and the held-out slice")
    select_on: str = setting("last", "which epoch is saved: last, or train-holdout:FRACTION (the best on that "
                             "seeded slice of --data, which is then not trained on); --eval-data never selects")
    max_steps: int | None = setting(None, "stop after N optimizer steps (smoke runs)", at_least=1)
    overwrite: bool = setting(False, "replace the files of an existing --out folder")
    runtime: Runtime = nested(default_factory=Runtime)  # --device, --dtype, --threads, --quiet

    def __post_init__(self) -> None:
        check_min_length(self.max_length)
        parse_select_on(self.select_on, SELECT_ON)

    @property
    def holdout_fraction(self) -> float | None:
        return parse_select_on(self.select_on, SELECT_ON)[1]


@dataclass(frozen=True, eq=False)
class Splits:
    """The labeled data of one run, tokenized: what is trained on, the held-out slice, the eval data."""

    train: EvalSet
    holdout: EvalSet | None
    eval: EvalSet
    described: dict[str, Any]  # rows, sources and fingerprints, for the metadata


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Train, keep the epoch `cfg.select_on` picks (never by the eval data) in `cfg.out`;
    returns the saved metadata. Every input is checked before anything is written."""
    device = pick_device(cfg.runtime.device)
    dtype = pick_dtype(cfg.runtime.dtype, device)
    set_cpu_threads(device, cfg.runtime.threads)
    torch.manual_seed(cfg.seed)
    check_out_folder(cfg.out, "--out", cfg.overwrite)
    config = load_config(cfg.teacher, "--teacher")
    tokenizer = load_tokenizer(cfg.teacher, config, "--teacher")
    max_length = cfg.max_length or min(DEFAULT_MAX_LENGTH, usable_positions(config))
    check_max_length(max_length, config, "teacher")

    train = _labeled(load_texts(cfg.data, cfg.split, cfg.text_cols, cfg.label_col, cfg.label_names), "--data")
    names = cfg.label_names or train.label_names
    num_labels = train.num_labels
    if names is not None and len(names) != num_labels:
        raise UserError(f"--label-names gives {len(names)} names but the training data has {num_labels} classes; "
                        "name each class 0..C-1 once")
    label_names = names or tuple(f"LABEL_{i}" for i in range(num_labels))
    config.update({"num_labels": num_labels,  # the head the data asks for, so eval data is checked against it
                   "problem_type": "regression" if train.is_regression else "single_label_classification",
                   "id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}})
    splits = _encode(cfg, train, names, config, tokenizer, max_length)
    model = load_model(cfg.teacher, "--teacher", config=config).to(device)

    steps_per_epoch = math.ceil(len(splits.train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.epochs * steps_per_epoch, cfg.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_frac * total), total)
    generator = torch.Generator().manual_seed(cfg.seed)
    selector = primary_metric(train.task, train.is_regression)
    meta: dict[str, Any] = {
        "base_model": str(Path(cfg.teacher).resolve()),
        **splits.described,
        "selected_on": "last epoch" if splits.holdout is None else
                       f"{len(splits.holdout)} held-out training rows ({selector})",
        "task": train.task,
        "text_cols": list(train.text_cols),
        "label_col": train.label_col,
        "label_names": list(names) if names else None,
        "num_labels": num_labels,
        "is_regression": train.is_regression,
        "max_length": max_length,
        "settings": settings_json(cfg),
        "history": [],
    }
    precision = autocast(device, dtype)
    train_inputs, train_labels = splits.train.inputs, torch.from_numpy(splits.train.labels)
    best: float | None = None
    step = 0
    bar = tqdm(total=total, unit="step", desc="fine-tune", dynamic_ncols=True, disable=cfg.runtime.quiet)
    # The kept epoch waits in a sibling folder; --out appears (or replaces the old one) whole, at the end,
    # so a cut run leaves no folder that a rerun or a script's [ -f OUT/config.json ] takes for a teacher.
    with replaced_dir(Path(cfg.out)) as staging:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            losses, started = [], time.perf_counter()
            for rows in torch.randperm(len(splits.train), generator=generator).split(cfg.batch_size):
                with precision:
                    loss = model(**trimmed(train_inputs, rows, device), labels=train_labels[rows].to(device)).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                losses.append(loss.item())
                step += 1
                bar.update()
                bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
                if step == total:
                    break
            record: dict[str, Any] = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)),
                                      "train_seconds_per_step": (time.perf_counter() - started) / len(losses)}
            record["dev"] = evaluate(model, splits.eval, cfg.eval_batch_size, device, dtype)
            keep = True  # --select-on last: every epoch replaces the previous one
            if splits.holdout is not None:
                record["holdout"] = evaluate(model, splits.holdout, cfg.eval_batch_size, device, dtype)
                keep = improves(selector, record["holdout"][selector], best)
                best = record["holdout"][selector] if keep else best
            meta["history"].append(record)
            tqdm.write(f"epoch {epoch}: train loss {record['train_loss']:.4f}, dev " +
                       ", ".join(f"{k} {v:.4f}" for k, v in record["dev"].items()))
            if keep:
                meta.update(best_epoch=epoch, dev_metrics=record["dev"])
                model.save_pretrained(staging)
                tokenizer.save_pretrained(staging)
            if step == total:
                break
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    bar.close()
    return meta


def _labeled(data: TextData, flag: str) -> TextData:
    if data.labels is None:
        raise UserError(f"{flag} {data.source} ({data.split}) has no labels; pass --label-col or labeled data")
    return data


def _encode(cfg: FinetuneConfig, train: TextData, names: tuple[str, ...] | None, config, tokenizer,
            max_length: int) -> Splits:
    """The training rows, the held-out slice (`--select-on train-holdout:F`) and the eval data,
    each checked against the head `config` describes, tokenized once."""
    dev = _labeled(load_texts(cfg.eval_data, cfg.eval_split, cfg.text_cols, cfg.label_col, names), "--eval-data")
    train, holdout = holdout_split(train, cfg.holdout_fraction, cfg.seed)
    return Splits(
        train=encode_eval_set(train, config, tokenizer, max_length, f"--data {cfg.data}", train.task),
        holdout=None if holdout is None else
        encode_eval_set(holdout, config, tokenizer, max_length, f"--data {cfg.data}", train.task),
        eval=encode_eval_set(dev, config, tokenizer, max_length, f"--eval-data {cfg.eval_data}", train.task),
        described={"train": _describe(train), "dev": _describe(dev)},
    )


def _describe(data: TextData) -> dict[str, Any]:
    return {"source": data.source, "split": data.split, "rows": len(data), "fingerprint": fingerprint(data)}
