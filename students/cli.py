"""`students build tinybert|rosita`, `students train`, `students eval`, `students export`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from typing import Any

from hskcache.cli import run_guarded
from hskcache.device import DEVICES, DTYPES
from hskcache.errors import UserError
from hskcache.options import OneLineParser, add_fields, add_store_flag, columns, field_names, flag_name, make, merged
from students.etd import EXTRACTING_INITS, LAYER_SELECTIONS
from students.models import PRESETS, StudentSpec
from students.trainer import TrainConfig, set_cpu_threads

PROG = "students"
IMPORTANCE_BATCH = 32


# --------------------------------------------------------------------------- build


def add_build_parser(sub) -> None:
    build = sub.add_parser("build", help="make a student folder from a fine-tuned teacher")
    kinds = build.add_subparsers(dest="kind", required=True)
    presets = ", ".join(PRESETS)
    tiny = kinds.add_parser(
        "tinybert", help="a small BERT on the teacher's vocabulary, extracted from the teacher (ETD) or random",
        description=f"Shape flags override --preset ({presets}). Extracting inits keep the teacher's number of "
                    "heads (head size shrinks with --hidden); teacher-layers also keeps its width.")
    tiny.add_argument("--teacher", required=True, help="fine-tuned teacher folder (vocabulary, labels, weights)")
    tiny.add_argument("--out", required=True, help="student folder to write")
    tiny.add_argument("--overwrite", action="store_true", help="replace the files of an existing --out folder")
    tiny.add_argument("--preset", help=f"named shape: {presets}")
    tiny.add_argument("--layers", type=int, help="encoder layers L'")
    tiny.add_argument("--hidden", type=int, help="hidden width d_S")
    tiny.add_argument("--ffn", type=int, help="FFN width")
    tiny.add_argument("--heads", type=int, help="attention heads (must divide --hidden; extraction: the teacher's)")
    tiny.add_argument("--init", default="etd-impt",
                      help="etd-impt (default: teacher weights, dimensions by Taylor importance on --store or "
                           "--data) | etd-rand (dimensions drawn at random) | teacher-layers (no width change) | "
                           "random | a general-distilled BERT checkpoint folder of the same shape")
    tiny.add_argument("--layer-selection", default="uniform", choices=LAYER_SELECTIONS,
                      help="teacher layers the student starts from: uniform (default, ETD) | bottom | top")
    add_store_flag(tiny, help="etd-impt: HSK store whose rows score the neurons (task loss on its gold labels, "
                              "the teacher's expected Fisher score on unlabeled rows)", aliases=("--cache",))
    tiny.add_argument("--data", help="etd-impt: labeled training data scoring the task loss (instead of --store)")
    tiny.add_argument("--select-on", default=TrainConfig.select_on,
                      help="etd-impt: the `students train --select-on` the student will be trained with; its "
                           "held-out rows are not scored (default %(default)s)")
    tiny.add_argument("--split", default="train", help="split of a glue/<task> --data (default train)")
    tiny.add_argument("--text-cols", help="--data text column(s), a or a,b")
    tiny.add_argument("--label-col", help="--data label column")
    tiny.add_argument("--max-length", type=int,
                      help="--data tokenizer max length (default 128, or the teacher's positions if fewer)")
    tiny.add_argument("--importance-examples", type=int, default=10_000,
                      help="examples that score the neurons (default 10000, as ETD)")
    tiny.add_argument("--seed", type=int, default=0, help="seed of a random init or of etd-rand's draw (default 0)")
    tiny.add_argument("--device", default="auto", choices=DEVICES, help="auto (default) | cpu | cuda")
    tiny.add_argument("--threads", type=int, help="torch CPU threads (default: all available cores)")
    rosita = kinds.add_parser("rosita", help="the teacher pruned by Taylor importance, embeddings factorised",
                              description=f"Shape flags override --preset ({presets}). Loads the teacher once.")
    rosita.add_argument("--teacher", required=True, help="the fine-tuned teacher that wrote the store")
    add_store_flag(rosita, help="HSK store whose inputs and logits score the importance", aliases=("--cache",))
    rosita.add_argument("--out", required=True, help="student folder to write")
    rosita.add_argument("--overwrite", action="store_true", help="replace the files of an existing --out folder")
    rosita.add_argument("--preset", help=f"named shape: {presets}")
    rosita.add_argument("--layers", type=int, help="bottom teacher layers kept (L')")
    rosita.add_argument("--heads", type=int, help="attention heads kept per layer")
    rosita.add_argument("--ffn", type=int, help="FFN neurons kept per layer")
    rosita.add_argument("--emb-rank", type=int, help="rank of the factorised word embeddings")
    rosita.add_argument("--importance-examples", type=int, default=2048,
                        help="store examples that score heads and neurons (default 2048)")
    rosita.add_argument("--device", default="auto", choices=DEVICES, help="auto (default) | cpu | cuda")
    rosita.add_argument("--threads", type=int, help="torch CPU threads (default: all available cores)")


def resolve_spec(args: argparse.Namespace, shape: Sequence[str], base: dict | None = None) -> StudentSpec:
    """--preset, then `base` (what the init fixes), then the explicit shape flags on top."""
    values: dict = {"kind": args.kind}
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise UserError(f"unknown --preset {args.preset!r}; use one of {', '.join(PRESETS)}")
        preset = PRESETS[args.preset]
        if preset.kind != args.kind:
            raise UserError(f"--preset {args.preset} is a {preset.kind} preset; "
                            f"use it with `students build {preset.kind}`")
        values = asdict(preset)
    values.update(base or {})
    values.update({name: getattr(args, name) for name in shape if getattr(args, name) is not None})
    missing = [name for name in shape if values.get(name) is None]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise UserError(f"students build {args.kind} needs {flags}; pass them or a --preset")
    return StudentSpec(**values)


def run_build(args: argparse.Namespace) -> int:
    from hskcache.outputs import check_out_folder
    from hskcache.teacher import load_config, load_tokenizer
    from students.models import build_tinybert, count_parameters

    check_out_folder(args.out, "--out", args.overwrite)
    load_tokenizer(args.teacher, load_config(args.teacher))  # a vocabulary that fits the teacher, before any work
    if args.kind == "tinybert":
        if args.init in EXTRACTING_INITS:
            spec = resolve_spec(args, ("layers", "hidden", "ffn", "heads"), _teacher_shape(args))
            model = _build_extracted(args, spec)
        else:
            spec = resolve_spec(args, ("layers", "hidden", "ffn", "heads"))
            model = build_tinybert(args.teacher, spec.layers, spec.hidden, spec.ffn, spec.heads, args.out,
                                   init_dir=None if args.init == "random" else args.init, seed=args.seed)
    else:
        spec = resolve_spec(args, ("layers", "heads", "ffn", "emb_rank"))
        model = _build_rosita(args, spec)
    print(f"wrote {args.out}: {spec.kind} student, {spec.layers} layers, {count_parameters(model):,} parameters")
    return 0


def _teacher_shape(args: argparse.Namespace) -> dict:
    """What an extracting init takes from the teacher: its heads (a rotary family: the heads of
    its head size that --hidden holds), and for teacher-layers its width."""
    from hskcache.families import family_of
    from hskcache.teacher import load_config
    from students.etd import student_heads

    config = load_config(args.teacher)
    family = family_of(config)
    shape = {"heads": config.num_attention_heads}
    if args.init == "teacher-layers":
        shape |= {"hidden": config.hidden_size, "ffn": getattr(config, family.ffn_size)}
    hidden = args.hidden or shape.get("hidden") or (PRESETS[args.preset].hidden if args.preset in PRESETS else None)
    if family.rotary and hidden and hidden % family.head_dim(config) == 0:
        shape["heads"] = student_heads(config, hidden)
    return shape


def _importance_store(args: argparse.Namespace):
    """The store whose inputs, logits and labels score importance, checked against the teacher."""
    from hskcache.data import check_labels
    from hskcache.reader import open_store
    from hskcache.teacher import load_config, load_tokenizer, tokenizer_hash

    if args.importance_examples < 1:
        raise UserError(f"--importance-examples must be at least 1, got {args.importance_examples}")
    if args.store is None:
        raise UserError(f"students build {args.kind} needs --store STORE: its inputs and logits score the importance")
    store = open_store(args.store)
    config = load_config(args.teacher)
    if tokenizer_hash(load_tokenizer(args.teacher, config)) != store.meta.tokenizer.vocab_hash:
        raise UserError(f"teacher {args.teacher}'s vocabulary differs from --store {args.store}'s tokenizer; "
                        "pass the teacher that wrote the store")
    check_labels(store.labels(), config.num_labels, store.regression, f"--store {args.store}", "teacher")
    return store


def _store_sample(store, examples: int, select_on: str | None = None):
    """Shuffled store batches (the smallest HSK read: only inputs, logits and labels are used), without
    the rows `students train --select-on select_on` holds out, up to `examples` rows."""
    import numpy as np
    import torch

    from students.selection import HOLDOUT_SEED, drop_rows, holdout_rows, parse_select_on

    fraction = None if select_on is None else parse_select_on(select_on)[1]  # checked before the teacher loads
    held = None if fraction is None else torch.from_numpy(holdout_rows(np.arange(store.num_examples), fraction,
                                                                        HOLDOUT_SEED))

    def sample():
        left = examples
        for batch in store.batches(IMPORTANCE_BATCH, shuffle=True, seed=0, depth=1, tokens=1):
            batch = {k: v[:left] for k, v in (batch if held is None else drop_rows(batch, held)).items()}
            if len(batch["input_ids"]):
                yield batch
            left -= len(batch["input_ids"])
            if left <= 0:
                return
    return sample()


def _data_sample(args: argparse.Namespace):
    """The first --importance-examples labeled rows of --data, tokenized by the teacher, in batches
    (built before the teacher is loaded, so bad data fails first)."""
    import numpy as np
    import torch

    from hskcache.data import check_labels, load_texts, tokenize_batch
    from hskcache.teacher import (check_max_length, check_min_length, is_regression, load_config, load_tokenizer,
                                  named_labels, usable_positions)
    from students.selection import HOLDOUT_SEED, holdout_rows, parse_select_on

    if args.importance_examples < 1:
        raise UserError(f"--importance-examples must be at least 1, got {args.importance_examples}")
    config = load_config(args.teacher)
    texts = load_texts(args.data, args.split, columns(args.text_cols), args.label_col, named_labels(config))
    if texts.labels is None:
        raise UserError(f"--data {args.data} has no labels for the task loss; pass --label-col, "
                        "or score on the teacher's logits with --store STORE")
    check_labels(texts.labels, config.num_labels, is_regression(config), f"--data {args.data}", "teacher",
                 named=texts.label_names is not None)
    check_min_length(args.max_length)
    max_length = args.max_length or min(128, usable_positions(config))
    check_max_length(max_length, config, "teacher")
    rows = np.arange(len(texts))
    fraction = parse_select_on(args.select_on)[1]
    if fraction is not None:  # the rows a store of this data would hold out for model selection
        rows = np.setdiff1d(rows, holdout_rows(rows, fraction, HOLDOUT_SEED))
    rows = rows[:args.importance_examples]
    enc = tokenize_batch(load_tokenizer(args.teacher, config), [texts.texts_a[i] for i in rows],
                         None if texts.texts_b is None else [texts.texts_b[i] for i in rows], max_length)
    labels = np.asarray(texts.labels)[rows]
    batches = []
    for lo in range(0, len(rows), IMPORTANCE_BATCH):
        width = int(enc["attention_mask"][lo:lo + IMPORTANCE_BATCH].sum(1).max())  # padding is masked: trim it
        batch = {k: torch.from_numpy(enc[k][lo:lo + IMPORTANCE_BATCH, :width])
                 for k in ("input_ids", "attention_mask", "token_type_ids")}
        batch["labels"] = torch.from_numpy(labels[lo:lo + IMPORTANCE_BATCH])
        batches.append(batch)
    return batches


def _build_extracted(args: argparse.Namespace, spec: StudentSpec):
    from hskcache.device import pick_device
    from students.etd import build_extracted

    batches = None
    if args.init == "etd-impt":
        if (args.store is None) == (args.data is None):
            raise UserError("--init etd-impt (the default) scores the teacher's neurons on one of --store STORE "
                            "or --data DATA; pass one, or --init etd-rand")
        if args.store is not None:
            batches = _store_sample(_importance_store(args), args.importance_examples, args.select_on)
        else:
            batches = _data_sample(args)
    elif args.store is not None or args.data is not None:
        raise UserError(f"--store/--data score importance for --init etd-impt; --init {args.init} does not use them")
    device = pick_device(args.device)
    set_cpu_threads(device, args.threads)
    return build_extracted(args.teacher, spec, args.init, args.out, batches, args.layer_selection, args.seed, device,
                           {"importance_select_on": args.select_on} if args.init == "etd-impt" else None)


def _build_rosita(args: argparse.Namespace, spec: StudentSpec):
    from hskcache.device import pick_device
    from students.models import STUDENT_FILE
    from students.pruning import build_rosita

    store = _importance_store(args)
    sample = _store_sample(store, args.importance_examples)
    device = pick_device(args.device)
    set_cpu_threads(device, args.threads)
    model = build_rosita(args.teacher, sample, spec.layers, spec.heads, spec.ffn, spec.emb_rank, args.out, device)
    built = json.loads((Path(args.out) / STUDENT_FILE).read_text())
    if built["teacher_hash"] != store.meta.teacher_hash:
        print(f"{PROG}: warning: {args.teacher} has other weights than the teacher that wrote {args.store}",
              file=sys.stderr)
    return model


# --------------------------------------------------------------------------- train


def add_train_parser(sub) -> None:
    from hskcache.config import ExtractConfig

    p = sub.add_parser("train", help="two-stage distillation from an HSK store (no teacher needed)",
                       description="Stage 1 (hsk) matches stored hidden states, stage 2 (pred) stored logits. "
                                   "Defaults are the paper's; see docs/training.md. Flags left out fall back "
                                   "to --config, then to the defaults shown.")
    p.add_argument("--config", help="TOML file with the same settings as the flags (flags override it)")
    src = p.add_argument_group("knowledge source (one of)")
    add_store_flag(src, aliases=("--cache",))
    src.add_argument("--teacher", help="online baseline: the teacher itself (with --data and extraction flags)")
    add_fields(p, TrainConfig)
    on = p.add_argument_group("online baseline (--teacher): the HSK computed live, with `hskcache extract`'s "
                              "settings; --text-cols/--label-col/--max-length then apply to --data too")
    add_fields(on, ExtractConfig, ONLINE_FLAGS, with_aliases=False)


ONLINE_FLAGS = ("data", "split", "student_layers", "ltop", "teacher_layers", "depth", "tokens", "token_strategy",
                "width", "width_strategy", "width_seed", "knowledge", "att_layers", "att_rows", "att_keys", "limit")
SOURCE_FLAGS = ("store", "teacher")


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Flags over the --config file, for TrainConfig, the source and the online baseline."""
    flags = {name: getattr(args, name) for name in (*field_names(TrainConfig), *SOURCE_FLAGS, *ONLINE_FLAGS)}
    return merged(TrainConfig, flags, args.config, extra=(*SOURCE_FLAGS, *ONLINE_FLAGS))


def train_config(settings: dict[str, Any]) -> TrainConfig:
    return make(TrainConfig, {k: v for k, v in settings.items() if k in field_names(TrainConfig)})


def open_source(settings: dict[str, Any], cfg: TrainConfig):
    """The store (--store), or the online teacher (--teacher) with extraction settings."""
    from hskcache.config import build_config
    from hskcache.reader import open_store

    store, teacher = settings.get("store"), settings.get("teacher")
    if (store is None) == (teacher is None):
        raise UserError("pass exactly one knowledge source: --store STORE, or --teacher MODEL with --data DATA")
    online = {name: settings.get(name) for name in ONLINE_FLAGS}
    if store is not None:
        given = [name for name, value in online.items() if value is not None]
        if given:
            raise UserError(f"{flag_name(given[0])} is an online-baseline setting (--teacher); "
                            "a store's settings were fixed at extraction")
        return open_store(store)
    from students.online import OnlineSource

    if online["data"] is None:
        raise UserError("--teacher needs --data: the training data to run the teacher on")
    flags = {**online, "teacher": teacher, "text_cols": cfg.text_cols, "label_col": cfg.label_col,
             "max_length": cfg.max_length, "device": cfg.device, "dtype": cfg.dtype,
             "store": cfg.out}  # nothing is written there: no store
    return OnlineSource(build_config(flags))


def run_train(args: argparse.Namespace) -> int:
    """One process, or one rank of `torchrun --nproc_per_node N students train ...` (DDP)."""
    from hskcache.distributed import process_group
    from students.trainer import train

    settings = train_settings(args)
    cfg = train_config(settings)
    with process_group(cfg.device) as (ranks, _):
        if ranks.world_size > 1 and settings.get("teacher") is not None:
            raise UserError("the online baseline (--teacher) runs in one process; launch it without torchrun")
        try:
            metrics = train(cfg, open_source(settings, cfg))
        except KeyboardInterrupt:
            if ranks.is_main:
                print(f"{PROG}: interrupted; rerun with --resume", file=sys.stderr)
            return 130
    if metrics is None:  # ranks other than 0 write and print nothing
        return 0
    scores = ", ".join(f"{k} {v:.4f}" for k, v in (metrics["eval"] or {}).items())
    print(f"wrote {Path(cfg.out) / 'student'}" + (f" ({scores})" if scores else ""))
    return 0


# --------------------------------------------------------------------------- eval


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="a student's metrics on labeled data")
    p.add_argument("--model", required=True, help="student folder (e.g. RUN/student)")
    p.add_argument("--data", required=True, help="glue/<task> or a .csv/.tsv/.json/.jsonl/.parquet file")
    p.add_argument("--split", default="validation", help="split of a glue/<task> dataset (default validation)")
    p.add_argument("--text-cols", help="text column(s), a or a,b")
    p.add_argument("--label-col", help="label column")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-length", type=int,
                   help="tokenizer max length (default 128, or the student's positions if fewer)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto (default) | cpu | cuda")
    p.add_argument("--dtype", choices=DTYPES, help="forward precision (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run_eval(args: argparse.Namespace) -> int:
    from hskcache.device import pick_device
    from hskcache.teacher import check_min_length
    from students.evaluate import evaluate, open_for_eval
    from students.serving import exported_location

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_min_length(args.max_length)
    device = pick_device(args.device)
    if exported_location(args.model) is not None:
        if args.device == "cuda" or args.dtype == "bf16":
            raise UserError(f"--model {args.model} is an exported model: onnxruntime runs it on the CPU at its "
                            "own precision; drop --device cuda and --dtype bf16")
        device = pick_device("cpu")
    model, eval_set = open_for_eval(args.model, args.data, args.max_length, device, args.split,
                                    columns(args.text_cols), args.label_col)
    metrics = evaluate(model, eval_set, args.batch_size, device, args.dtype)
    if args.json:
        print(json.dumps(metrics))
    else:
        for name, value in metrics.items():
            print(f"{name:<10}{value:.4f}")
    return 0


# --------------------------------------------------------------------------- export


def add_export_parser(sub) -> None:
    from students.export import FORMATS, QUANTIZERS

    p = sub.add_parser("export", help="a trained student as an ONNX Runtime folder (optionally int8)",
                       description="Writes model.onnx (dynamic batch and sequence axes), config.json with the "
                                   "labels and the tokenizer; --quantize int8 adds onnxruntime's dynamic-int8 "
                                   "model_quantized.onnx. Needs pip install 'hskcache[deploy]'.")
    p.add_argument("--model", required=True, help="student folder (e.g. RUN/student)")
    p.add_argument("--out", required=True, help="folder to write (new or empty, else --overwrite)")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="onnx (default)")
    p.add_argument("--quantize", choices=tuple(QUANTIZERS), help="also write a quantised copy: int8")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing --out folder")


def run_export(args: argparse.Namespace) -> int:
    from students.export import export_student

    info = export_student(args.model, args.out, args.format, args.quantize, args.overwrite)
    files = ", ".join(f"{name} ({precision})" for precision, name in info.files.items())
    print(f"wrote {args.out}: {files}; fp32 logits within {info.fp32_max_abs_error:.1e} of PyTorch")
    return 0


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Build, distill and evaluate students from an HSK store.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_build_parser(sub)
    add_train_parser(sub)
    add_eval_parser(sub)
    add_export_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runners = {"build": run_build, "train": run_train, "eval": run_eval, "export": run_export}
    return run_guarded(lambda: runners[args.command](args), PROG)


if __name__ == "__main__":
    sys.exit(main())
