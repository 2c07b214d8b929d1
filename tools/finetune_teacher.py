"""Fine-tune a local Hugging Face encoder into a teacher for ``hskcache extract``.

Any encoder folder works (a plain ``BertModel`` or a sentence-transformers
layout gets a fresh classification head); the data is anything
:func:`hskcache.data.load_texts` accepts. Runs on ``--device`` (auto: CUDA when
present, else the CPU) in fp32; batches are trimmed to their longest real
sequence, so short texts cost less than ``--max-length``.
The saved epoch is chosen without looking at dev (``--select-on``): the last
epoch, or the best on a held-out slice of the training data. Dev is only
reported, every epoch. Saved with ``save_pretrained``, the tokenizer, and
``hskcache_teacher.json`` (dev metrics of the saved epoch, label names, text
columns).

    python tools/finetune_teacher.py --model MODEL_DIR --train data/movies/train.csv \\
        --dev data/movies/dev.csv --out runs/teacher
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from hskcache.data import TextData, fingerprint, load_texts, tokenize_batch
from hskcache.device import DEVICES, pick_device
from hskcache.errors import UserError
from students.selection import holdout_split, parse_select_on
from hskcache.options import OneLineParser, columns
from hskcache.outputs import check_out_folder
from hskcache.teacher import check_max_length, load_config, load_model, load_tokenizer, usable_positions

META_FILE = "hskcache_teacher.json"
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Encoded:
    """A tokenized split as torch tensors."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: torch.Tensor, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Rows of a batch on `device`, trimmed to its longest sequence (padding is right-aligned)."""
        width = int(self.inputs["attention_mask"][rows].sum(1).max())
        return {k: v[rows, :width].to(device) for k, v in self.inputs.items()}, self.labels[rows].to(device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="local HF encoder folder")
    p.add_argument("--train", required=True, help="glue/<task> or a local data file")
    p.add_argument("--dev", required=True, help="glue/<task> or a local data file")
    p.add_argument("--out", required=True, type=Path, help="teacher folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing --out folder")
    p.add_argument("--train-split", default="train", help="split of a GLUE --train")
    p.add_argument("--dev-split", default="validation", help="split of a GLUE --dev")
    p.add_argument("--text-cols", nargs="+", default=None,
                   help="text column(s), a or a,b (the older space-separated form a b works too)")
    p.add_argument("--label-col", default=None)
    p.add_argument("--label-names", default=None,
                   help="class names for classes 0..C-1, e.g. rotten,fresh: written to the model's id2label, so "
                        "the teacher, its store and its students say them (default: the data's own, else LABEL_i)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-frac", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None,
                   help="tokenizer max length (default 64, or the model's positions if fewer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--select-on", default="last",
                   help="last (default: the final epoch) or train-holdout:FRACTION (best epoch on a held-out "
                        "slice of --train, which is then not trained on); dev is never used to select")
    p.add_argument("--max-steps", type=int, default=None, help="stop early (smoke runs)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto (default: CUDA when present) | cpu | cuda")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "max_length", "max_steps", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        args.holdout = parse_select_on(args.select_on, allowed=("last", "train-holdout"))[1]
    except UserError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train_teacher(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def train_teacher(args: argparse.Namespace) -> dict:
    """Train, keep the epoch `--select-on` picks (never by dev) in ``args.out``; returns the saved metadata."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    check_out_folder(args.out, "--out", args.overwrite)
    config = load_config(args.model, "--model")
    tokenizer = load_tokenizer(args.model, config, "--model")
    args.max_length = args.max_length or min(64, usable_positions(config))
    check_max_length(args.max_length, config, "model")

    text_cols, label_names = columns(args.text_cols), columns(args.label_names)
    train = _labeled(load_texts(args.train, args.train_split, text_cols, args.label_col, label_names), "--train")
    dev = _labeled(
        load_texts(args.dev, args.dev_split, text_cols, args.label_col, label_names or train.label_names),
        "--dev",
    )
    num_labels = _check_compatible(train, dev)
    train, holdout = holdout_split(train, args.holdout, args.seed)
    named = label_names or train.label_names
    names = named or tuple(f"LABEL_{i}" for i in range(num_labels))
    if len(names) != num_labels:
        raise UserError(f"--label-names gives {len(names)} names but the training data has {num_labels} classes; "
                        "name each class 0..C-1 once")
    model = load_model(
        args.model,
        "--model",
        num_labels=num_labels,
        problem_type="regression" if train.is_regression else "single_label_classification",
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    ).to(device)
    train_enc = _encode(tokenizer, train, args.max_length)
    dev_enc = _encode(tokenizer, dev, args.max_length)
    holdout_enc = _encode(tokenizer, holdout, args.max_length) if holdout is not None else None

    steps_per_epoch = math.ceil(len(train_enc) / args.batch_size)
    total = args.epochs * steps_per_epoch
    if args.max_steps:
        total = min(total, args.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, round(args.warmup_frac * total), total)
    generator = torch.Generator().manual_seed(args.seed)

    meta = {
        "base_model": str(Path(args.model).resolve()),
        "train": _describe(train),
        "dev": _describe(dev),
        "selected_on": "last epoch" if holdout is None else f"{len(holdout)} held-out training rows",
        "task": train.task,
        "text_cols": list(train.text_cols),
        "label_col": train.label_col,
        "label_names": list(named) if named else None,
        "num_labels": num_labels,
        "is_regression": train.is_regression,
        "max_length": args.max_length,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "history": [],
    }
    best: float | None = None
    step = 0
    bar = tqdm(total=total, unit="step", desc="fine-tune", dynamic_ncols=True)
    for epoch in range(1, args.epochs + 1):
        model.train()
        losses, started = [], time.perf_counter()
        for rows in torch.randperm(len(train_enc), generator=generator).split(args.batch_size):
            inputs, labels = train_enc.batch(rows, device)
            loss = model(**inputs, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            step += 1
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
            if step == total:
                break
        seconds = time.perf_counter() - started
        metrics = evaluate(model, dev_enc, train.is_regression, 2 * args.batch_size)
        record = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)),
                  "train_seconds_per_step": seconds / len(losses), **metrics}
        score = math.inf  # --select-on last: every epoch replaces the previous one
        if holdout_enc is not None:
            held = evaluate(model, holdout_enc, train.is_regression, 2 * args.batch_size)
            record["holdout"] = held
            score = held["pearson" if train.is_regression else "accuracy"]
            score = -math.inf if math.isnan(score) else score
        meta["history"].append(record)
        bar.write(f"epoch {epoch}: train loss {np.mean(losses):.4f}, dev " +
                  ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if best is None or score > best or score == math.inf:
            best = score
            meta.update(best_epoch=epoch, dev_metrics=metrics)
            model.save_pretrained(args.out)
            tokenizer.save_pretrained(args.out)
        _write_meta(args.out, meta)
        if step == total:
            break
    bar.close()
    print(f"epoch {meta['best_epoch']} (selected on the {meta['selected_on']}; dev {meta['dev_metrics']}) "
          f"saved to {args.out}")
    return meta


def _labeled(data: TextData, flag: str) -> TextData:
    if data.labels is None:
        raise UserError(f"{flag} {data.source} ({data.split}) has no labels; pass --label-col or labeled data")
    return data


def _check_compatible(train: TextData, dev: TextData) -> int:
    """Head width; dev must use the training label space."""
    if train.is_regression:
        return 1
    if dev.is_regression:
        raise UserError(f"--dev {dev.source} has real-valued labels but --train is classification")
    if dev.num_labels > train.num_labels:
        raise UserError(
            f"--dev {dev.source} has class {dev.num_labels - 1} which --train lacks; use matching labels"
        )
    return train.num_labels


def _encode(tokenizer, data: TextData, max_length: int, chunk: int = 4096) -> Encoded:
    parts = [
        tokenize_batch(
            tokenizer,
            data.texts_a[i:i + chunk],
            data.texts_b[i:i + chunk] if data.texts_b is not None else None,
            max_length,
        )
        for i in range(0, len(data), chunk)
    ]
    inputs = {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in _MODEL_INPUTS}
    labels = data.labels.astype(np.float32 if data.is_regression else np.int64)
    return Encoded(inputs, torch.from_numpy(labels))


@torch.no_grad()
def evaluate(model, data: Encoded, is_regression: bool, batch_size: int) -> dict[str, float]:
    """Dev accuracy (classification) or Pearson and MSE (regression)."""
    model.eval()
    outputs = [
        model(**data.batch(rows, model.device)[0]).logits
        for rows in torch.arange(len(data)).split(batch_size)
    ]
    logits = torch.cat(outputs).float().cpu().numpy()
    gold = data.labels.numpy()
    if is_regression:
        pred = logits[:, 0]
        pearson = float(np.corrcoef(pred, gold)[0, 1]) if pred.std() > 0 and gold.std() > 0 else math.nan
        return {"pearson": pearson, "mse": float(np.mean((pred - gold) ** 2))}
    return {"accuracy": float(np.mean(logits.argmax(1) == gold))}


def _describe(data: TextData) -> dict:
    return {"source": data.source, "split": data.split, "rows": len(data), "fingerprint": fingerprint(data)}


def _write_meta(out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
