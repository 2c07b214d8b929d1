"""`students build tinybert|rosita`, `students train`, `students eval`, `students export`.

One `Command` per subcommand (`hskcache.options`): each parser is generated from
its settings dataclass; this module holds the run functions and the table only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path

from hskcache import options
from hskcache.device import DEVICES, DTYPES
from hskcache.errors import UserError
from hskcache.options import Command, Group, Settings, columns, nested, setting
from students.build.builder import RositaConfig, TinyBertConfig
from students.deploy.export import FORMATS, QUANTIZERS
from students.models.student import PRESETS
from students.training.runtime import set_cpu_threads, threads_setting
from students.training.sources import SourceSettings
from students.training.trainer import TrainConfig

PROG = "students"


def run_build(cfg: TinyBertConfig | RositaConfig) -> int:
    from students.build.builder import build_student
    from students.models.student import count_parameters

    spec, model = build_student(cfg)
    print(f"wrote {cfg.out}: {spec.kind} student, {spec.layers} layers, {count_parameters(model):,} parameters")
    return 0


@dataclass(frozen=True)
class TrainRun:
    """`students train`: the run's settings (`TrainConfig`) and its knowledge source."""

    train: TrainConfig = nested()
    source: SourceSettings = nested("knowledge source (one of)")

    def __post_init__(self) -> None:
        if self.train.general and self.source.store is not None:  # online, they are the extraction's
            self.train.refuse_for_general(list(TrainConfig.EVAL_READING))


def run_train(run: TrainRun) -> int:
    """One process, or one rank of `torchrun --nproc_per_node N students train ...` (DDP)."""
    from hskcache.distributed import process_group
    from students.training.trainer import train

    cfg = run.train
    with process_group(cfg.runtime.device) as (ranks, _):
        if ranks.world_size > 1 and run.source.teacher is not None:
            raise UserError("the online baseline (--teacher) runs in one process; launch it without torchrun")
        metrics = train(cfg, run.source.open(cfg))
    if metrics is None:  # ranks other than 0 write and print nothing
        return 0
    scores = ", ".join(f"{k} {v:.4f}" for k, v in (metrics["eval"] or {}).items())
    print(f"wrote {Path(cfg.out) / 'student'}" + (f" ({scores})" if scores else ""))
    return 0


@dataclass(frozen=True)
class EvalConfig(Settings):
    """`students eval`: a student's metrics on labeled data."""

    model: str = setting(MISSING, "student folder (e.g. RUN/student), or an exported one")
    data: str = setting(MISSING, "glue/<task> or a .csv/.tsv/.json/.jsonl/.parquet file")
    split: str = setting("validation", "split of a glue/<task> dataset")
    text_cols: tuple[str, ...] | None = setting(None, "text column(s), a or a,b", parse=columns)
    label_col: str | None = setting(None, "label column")
    batch_size: int = setting(128, "eval batch size", at_least=1)
    max_length: int | None = setting(None, "tokenizer max length", show_default="128, or the student's positions if fewer")
    device: str = setting("auto", "where the student runs", choices=DEVICES)
    dtype: str | None = setting(None, "forward precision", choices=DTYPES, show_default="bf16 on CUDA, fp32 on CPU")
    threads: int | None = threads_setting()  # also onnxruntime's for an exported model (`deploy.serving`)
    json: bool = setting(False, "print the metrics as JSON")

    def __post_init__(self) -> None:
        from hskcache.teacher.loading import check_min_length

        check_min_length(self.max_length)


def run_eval(cfg: EvalConfig) -> int:
    from hskcache.device import pick_device
    from students.evaluation.evaluate import evaluate, open_for_eval
    from students.deploy.serving import exported_location

    device = pick_device(cfg.device)
    if exported_location(cfg.model) is not None:
        if cfg.device == "cuda" or cfg.dtype == "bf16":
            raise UserError(f"--model {cfg.model} is an exported model: onnxruntime runs it on the CPU at its "
                            "own precision; drop --device cuda and --dtype bf16")
        device = pick_device("cpu")
    set_cpu_threads(device, cfg.threads)
    model, eval_set = open_for_eval(cfg.model, cfg.data, cfg.max_length, device, cfg.split, cfg.text_cols,
                                    cfg.label_col)
    metrics = evaluate(model, eval_set, cfg.batch_size, device, cfg.dtype)
    if cfg.json:
        print(json.dumps(metrics))
    else:
        for name, value in metrics.items():
            print(f"{name:<10}{value:.4f}")
    return 0


@dataclass(frozen=True)
class ExportConfig(Settings):
    """`students export`: a trained student as an ONNX Runtime folder."""

    model: str = setting(MISSING, "student folder (e.g. RUN/student)")
    out: str = setting(MISSING, "folder to write (new or empty, else --overwrite)")
    format: str = setting("onnx", "export format", choices=FORMATS)
    quantize: str | None = setting(None, "also write a quantised copy: int8", choices=tuple(QUANTIZERS))
    overwrite: bool = setting(False, "replace the files of an existing --out folder")


def run_export(cfg: ExportConfig) -> int:
    from students.deploy.export import export_student

    info = export_student(cfg.model, cfg.out, cfg.format, cfg.quantize, cfg.overwrite)
    files = ", ".join(f"{name} ({precision})" for precision, name in info.files.items())
    print(f"wrote {cfg.out}: {files}; fp32 logits within {info.fp32_max_abs_error:.1e} of PyTorch")
    return 0


_PRESETS = ", ".join(PRESETS)
COMMANDS = (
    Group("build", "make a student folder from a fine-tuned teacher (or a bare encoder: a general student)", (
        Command("tinybert", "a small BERT on the teacher's vocabulary, extracted from the teacher (ETD) or random",
                TinyBertConfig, run_build,
                f"Shape flags override --preset ({_PRESETS}). Extracting inits keep the teacher's number of heads "
                "(head size shrinks with --hidden); teacher-layers also keeps its width. A bare encoder as "
                "--teacher gives a bare student; --init FOLDER (a general student) keeps its shape, adds a fresh head."),
        Command("rosita", "the teacher pruned by Taylor importance, embeddings factorised", RositaConfig, run_build,
                f"Shape flags override --preset ({_PRESETS}). Loads the teacher once."),
    )),
    Command("train", "two-stage distillation from an HSK store (no teacher needed)", TrainRun, run_train,
            "Stage 1 (hsk) matches stored hidden states, stage 2 (pred) stored logits; --general (a task-agnostic "
            "store, or a task store's rows) runs stage 1 alone, selected by its held-out loss. Defaults are the paper's; "
            "see docs/training.md. Flags left out fall back to --config, then to the defaults shown.",
            rerun="rerun with --resume"),
    Command("eval", "a student's metrics on labeled data", EvalConfig, run_eval),
    Command("export", "a trained student as an ONNX Runtime folder (optionally int8)", ExportConfig, run_export,
            "Writes model.onnx (dynamic batch and sequence axes), config.json with the labels and the tokenizer; "
            "--quantize int8 adds onnxruntime's dynamic-int8 model_quantized.onnx. Needs pip install "
            "'hskcache[deploy]'."),
)


def build_parser() -> options.OneLineParser:
    return options.program(PROG, "Build, distill and evaluate students from an HSK store.", COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    return options.main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
