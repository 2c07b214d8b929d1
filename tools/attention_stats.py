"""Where a teacher's [CLS] attention goes, per layer (the HSK paper's Fig. 6).

For every layer: the share of the [CLS] row's attention (mean over heads and
examples) that lands on [SEP] tokens and on [CLS] itself, and how often a
[SEP] is among the top N^L tokens that `--token-strategy att` would store.
Tokens are ranked by exactly this [CLS] attention, so a layer whose [CLS]
attention sinks into [SEP] spends one of its N^L slots on a [SEP] whose
hidden state carries little about the input; `att-nosep` gives that slot to
a content token, which is why it beats `att`.

    python tools/attention_stats.py --teacher runs/teacher --data data/movies3k/dev.csv \
        --limit 512 --tokens 9 --plot docs/sep_attention.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hskcache.selection.attention import sep_share
from hskcache.data import load_texts, tokenize_batch
from hskcache.device import DEVICES, DTYPES
from hskcache.errors import UserError
from hskcache.selection.hsk import rank_positions
from hskcache.teacher.loading import load_teacher


def attention_stats(teacher_dir: str, data: str, limit: int, tokens: int, max_length: int, batch_size: int,
                    progress: bool = True, device: str = "auto", dtype: str | None = None) -> dict:
    """Per-layer means over the first `limit` examples of `data`, the teacher on `device` in `dtype`
    (`hskcache.device`'s rules: auto is CUDA when present; bf16 on CUDA, fp32 on CPU unless given)."""
    teacher = load_teacher(teacher_dir, device, dtype)
    texts = load_texts(data, "train", None, None)
    n = min(limit, len(texts))
    layers = teacher.num_layers
    to_sep, to_cls, sep_ranked = torch.zeros(layers), torch.zeros(layers), torch.zeros(layers)
    for start in tqdm(range(0, n, batch_size), desc="attention", unit="batch", disable=not progress):
        end = min(start + batch_size, n)
        enc = tokenize_batch(teacher.tokenizer, texts.texts_a[start:end],
                             texts.texts_b[start:end] if texts.texts_b else None, max_length)
        batch = {k: torch.from_numpy(v).to(teacher.device) for k, v in enc.items()}
        out = teacher.forward(batch)
        sep, cls = sep_share(out.attentions, batch["sep_mask"], batch["attention_mask"])
        to_sep, to_cls = to_sep + sep.cpu(), to_cls + cls.cpu()
        ranked = rank_positions("att", range(1, layers + 1), tokens, out.attentions, batch["attention_mask"],
                                batch["sep_mask"])  # (B, L, tokens)
        is_sep = torch.gather(batch["sep_mask"].bool()[:, None, :].expand(-1, layers, -1), 2, ranked.clamp(min=0))
        sep_ranked += (is_sep & (ranked >= 0)).any(-1).float().sum(0).cpu()
    return {"teacher": teacher_dir, "data": data, "examples": n, "tokens": tokens,
            "layers": list(range(1, layers + 1)), "cls_to_sep": (to_sep / n).tolist(),
            "cls_to_cls": (to_cls / n).tolist(), "sep_in_top_tokens": (sep_ranked / n).tolist()}


def plot(stats: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    layers = stats["layers"]
    ax.plot(layers, stats["cls_to_sep"], "o-", label="[CLS] attention to [SEP]")
    ax.plot(layers, stats["cls_to_cls"], "s-", label="[CLS] attention to [CLS]")
    ax.plot(layers, stats["sep_in_top_tokens"], "^--", label=f"[SEP] in top {stats['tokens']} (att)")
    ax.set_xlabel("teacher layer")
    ax.set_ylabel("share / fraction of examples")
    ax.set_ylim(0, 1)
    ax.set_xticks(layers)
    ax.legend(fontsize=8)
    ax.set_title(f"{Path(stats['teacher']).name}, {stats['examples']} examples", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--data", required=True, help="glue/<task> or a local data file (its first column(s) of text)")
    p.add_argument("--limit", type=int, default=512)
    p.add_argument("--tokens", type=int, default=9, help="N^L of the ranking whose [SEP] share is reported")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto (default: CUDA when present) | cpu | cuda")
    p.add_argument("--dtype", choices=DTYPES, help="fp32 | bf16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--plot", type=Path, help="write the figure here")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.limit < 1 or args.tokens < 1:
            raise UserError("--limit and --tokens must be at least 1")
        torch.set_num_threads(args.threads)
        stats = attention_stats(args.teacher, args.data, args.limit, args.tokens, args.max_length, args.batch_size,
                                not args.quiet, args.device, args.dtype)
    except UserError as exc:
        print(f"attention_stats: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(stats, indent=1))
    else:
        print(f"layer  [CLS]->[SEP]  [CLS]->[CLS]  [SEP] in top {args.tokens} (att)")
        for i, l in enumerate(stats["layers"]):
            print(f"{l:>5}  {stats['cls_to_sep'][i]:>12.3f}  {stats['cls_to_cls'][i]:>12.3f}  "
                  f"{stats['sep_in_top_tokens'][i]:>10.3f}")
    if args.plot:
        plot(stats, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
