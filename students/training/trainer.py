"""Two-stage task-specific distillation (SPEC "Losses and schedule"), resumable.

The stages are `students.stages.STAGES` (stage 1 matches the stored knowledge
its objectives name, stage 2 the teacher's logits), each asked for what it
trains, reads and schedules. The trainer sees the teacher only
through a `BatchSource` (the store's streaming iterator, or the online
teacher), so where the knowledge comes from is the source's business and the
loop, losses and checkpoints are shared.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from hskcache.data import check_labels
from hskcache.distributed import Ranks, rank_device
from hskcache.errors import UserError
from hskcache.device import autocast, pick_dtype
from hskcache.teacher import hooks
from hskcache.kinds import KINDS, Read, read_settings, refuse_unused
from hskcache.store.meta import StoreMeta, to_json
from hskcache.options import Settings, columns, complete_per_name, nested, per_name, setting
from hskcache.outputs import write_text_whole
from hskcache.storage.packed import PackedBatch, expand
from hskcache.teacher.loading import check_min_length, is_task_teacher, load_config, load_model, tokenizer_hash
from students.training.checkpoint import STATE_FILE, read_state, replaced_dir, rng_state, set_rng_state, write_state
from students.evaluation.evaluate import MODEL_INPUTS, EvalSet, evaluate, load_eval_set, trim_padding
from students.training.selection import drop_rows, holdout_eval_set, holdout_rows_only, parse_select_on
from students.training.data_parallel import Parallel, placeholder, rank_seed
from students.training.runtime import Runtime, set_cpu_threads, settings_json
from students.kinds import STUDENT_KINDS, StudentForward
from students.training.objectives import Weighted, choices, format_objective, parse_objective
from students.training.objectives import kinds as objective_kinds
from students.training.objectives import table as objective_table
from students.losses import HSK_MODES, HSK_PROJECTIONS, HSKProjection, LossSettings, batch_count
from students.training.calibration import REGRESSION_HEADS, recentre
from students.training.defaults import learning_rates, prediction_objective
from students.evaluation.metrics import HOLDOUT_LOSS, improves, primary_metric
from students.models.student import (STUDENT_FILE, count_parameters, head_labels, load_student, save_student,
                                     with_fresh_head)
from students.stages import GENERAL, HSK, PRED, Stage, StageSpec

LOG_FILE = "log.jsonl"
METRICS_FILE = "metrics.json"
RECENTRE_ROWS = 4096  # training rows whose mean output difference recentres a regression head


class BatchSource(Protocol):
    """What the trainer needs from where the teacher's knowledge comes from.

    `batches` yields the reader's batch dictionary (docs/design.md) or, with `packed=True`,
    `PackedBatch`es the trainer expands on its device; `meta` is what the store
    records (or would record): the extraction settings, the tokenizer, the task.
    """

    hidden: int
    regression: bool
    num_labels: int
    meta: StoreMeta

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int: ...

    def labels(self) -> np.ndarray: ...

    def resolve(self, depth: int | None = None, tokens: int | None = None, width: float | None = None,
                kinds: Mapping[str, Any] | None = None, student_layers: int | None = None) -> Read: ...

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                depth: int | None = None, tokens: int | None = None, width: float | None = None,
                start_batch: int = 0, rank: int = 0, world_size: int = 1, packed: bool = False,
                pin_memory: bool = False, kinds: Mapping[str, Any] | None = None,
                student_layers: int | None = None) -> Iterator[dict[str, Tensor] | PackedBatch]: ...


def resolved_run(out: str) -> str:
    return str(Path(out).resolve())


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Every setting of one run: each field is a `students train` flag and a TOML key;
    validated once here. Defaults are the paper's (SPEC Table 4)."""

    student: str = field(metadata={"help": "student folder from `students build`"})
    out: str = field(metadata={"help": "run folder: log.jsonl, checkpoint/, best/, student/, metrics.json"})
    objective: Weighted = setting((("hsk", 1.0),), "stage-1 objectives, name[:weight] comma list of "
                                  + " | ".join(choices(HSK)) + " (att, val: MiniLM's Att-KL, Val-KL; qq, kk: MiniLMv2's Q-Q, K-K)",
                                  parse=parse_objective, show_default="hsk")
    pred_objective: Weighted | None = setting(None, "stage-2 objectives, name[:weight] comma list of "
                                              + " | ".join(choices(PRED)) + " (pred: soft CE to the teacher's logits; "
                                              "label: the task loss to the gold labels, rows without one left out)",
                                              parse=lambda text: parse_objective(text, PRED),
                                              show_default="pred,label:0.5 when the source has gold labels, "
                                                           "else pred (students/training/defaults.py)")
    reads: Mapping[str, Any] = per_name(read_settings, "knowledge kinds' reads")  # each kind's `Kind.read_settings`:
    # --hsk (`hskcache.kinds.hsk.HSKRead`; none: stage 1 skipped), --att-read
    width_loss: str = setting("zero-fill", " | ".join(HSK_MODES) + "; zero-fill is the paper's", choices=HSK_MODES)
    hsk_projection: str = setting("random", " | ".join(HSK_PROJECTIONS) + ": W's init; random is the paper's, kept "
                                  "maps an extracted (ETD) student's dimensions to the teacher dimensions they came from",
                                  choices=HSK_PROJECTIONS)
    regression_head: str = setting("recentre", " | ".join(REGRESSION_HEADS) + ": a regression student's output "
                                   "bias, shifted before the prediction stage so its mean output on the training "
                                   "rows is the teacher's (students/training/calibration.py), or left as it is",
                                   choices=REGRESSION_HEADS)
    temperature: float = setting(1.0, "soft CE temperature", above=0)
    hsk_epochs: int = setting(10, "stage 1 epochs", at_least=1)
    hsk_lr: float | None = setting(None, "stage 1 learning rate (default: by the student's init, "
                                   "students/training/defaults.py)", above=0)
    hsk_batch_size: int = setting(32, "stage 1 batch size", at_least=1)
    pred_epochs: int = setting(5, "stage 2 epochs", at_least=1)
    pred_lr: float | None = setting(None, "stage 2 learning rate (default: by the student's init)", above=0)
    pred_batch_size: int = setting(32, "stage 2 batch size", at_least=1)
    weight_decay: float = setting(0.01, "AdamW weight decay", at_least=0)
    max_grad_norm: float = setting(1.0, "gradient clipping", above=0)
    seed: int = setting(0, "seeds dropout, the projection and the data order")
    max_steps: int | None = setting(None, "stop each stage after N optimizer steps (smoke runs)", at_least=1)
    log_every: int = setting(50, "log a step record every N steps", at_least=1)
    save_every: int | None = setting(None, "also checkpoint every N steps (default: each epoch end and on Ctrl-C)",
                                     at_least=1)
    select_on: str = setting("train-holdout:0.1", "which epoch becomes RUN/student (the prediction stage's; with "
                             "--general, stage 1's): train-holdout:FRACTION (best on that seeded slice of the "
                             "store's rows, not trained on; --general: the lowest distillation loss), eval (best on "
                             "--eval-data itself: optimistic; not with --general) or last; --eval-data is reported "
                             "either way")
    eval_data: str | None = setting(None, "labeled dev data: glue/<task> or a .csv/.tsv/.json/.jsonl/.parquet file")
    eval_split: str = setting("validation", "split of a glue/<task> --eval-data")
    text_cols: tuple[str, ...] | None = setting(None, "text column(s), a or a,b (default: the store's)",
                                                 parse=columns)
    label_col: str | None = setting(None, "label column (default: the store's)")
    max_length: int | None = setting(None, "eval max length (default: the store's)")
    eval_batch_size: int = setting(128, "eval batch size", at_least=1)
    general: bool = setting(False, "the general stage: stage 1 alone on a task-agnostic store (or on a task "
                            "store's rows, its logits and labels unused; no prediction-stage or eval flags), its "
                            "epochs selected by the distillation loss on the held-out rows; writes a bare student, "
                            "the --init of `students build tinybert` or the --student of a task-stage run")
    runtime: Runtime = nested(default_factory=Runtime)  # --device, --dtype, --threads, --quiet
    resume: bool = setting(False, "continue the run in --out from its checkpoint")

    # Settings a resumed run may change: they do not change what is trained.
    RUNTIME = ("log_every", "save_every", "eval_batch_size", "runtime", "resume")
    # Settings of the prediction stage and the eval split alone (with the pred_* fields): --general refuses them.
    TASK_ONLY = ("eval_data", "eval_split", "temperature", "regression_head")
    # How --eval-data is read, and the online baseline's extraction (`sources.FROM_TRAINING`): --general on a
    # store refuses them (`students.cli.TrainRun`).
    EVAL_READING = ("text_cols", "label_col", "max_length")

    def __post_init__(self) -> None:
        check_min_length(self.max_length)
        if Path(self.out).is_file():
            raise UserError(f"--out {self.out} is a file; pass a directory for the run")
        if self.general:
            self._check_general()
        if parse_select_on(self.select_on)[0] == "eval" and self.eval_data is None:
            raise UserError("--select-on eval selects on the eval split; pass --eval-data or another --select-on")
        complete_per_name(self)  # every kind's read settings: one run has one identity, however configured
        if self.general and not self.running():
            raise UserError("--general trains stage 1 alone, which --hsk none skips; drop --hsk none")
        used = [k for objective in self.running().values() for k in objective_kinds(objective)] + [
            k for k in self.reads if not self.is_read(k)]  # --att-read without a relation objective (or with
        # stage 1 skipped): refused, not ignored; a setting that switches its kind off (--hsk none) is used
        refuse_unused(self.reads, used, lambda owners: f"compare it with an --objective of {' or '.join(owners)}")

    def _check_general(self) -> None:
        """--general has no prediction stage and no eval split: their flags (given, not at their defaults) are
        refused, not ignored."""
        self.refuse_for_general([f.name for f in fields(self) if f.name.startswith("pred_")] + list(self.TASK_ONLY))
        if parse_select_on(self.select_on)[0] == "eval":
            raise UserError("--general has no eval split; use --select-on train-holdout:FRACTION or last")

    def refuse_for_general(self, names: list[str]) -> None:
        """The first of these settings given (not at its default) is refused in one line: --general ignores it."""
        defaults = {f.name: f.default for f in fields(self)}
        given = [name for name in names if getattr(self, name) != defaults[name]]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} belongs to the task stage; --general trains stage 1 "
                            "alone and selects on the held-out rows' distillation loss: drop it")

    def with_learning_rates(self, info: dict[str, Any]) -> TrainConfig:
        """Unset rates filled in from the student's init (students.training.defaults), before anything uses them."""
        hsk_lr, pred_lr = learning_rates(info)
        return replace(self, hsk_lr=self.hsk_lr or hsk_lr, pred_lr=self.pred_lr or (None if self.general else pred_lr))

    def with_pred_objective(self, source: BatchSource) -> TrainConfig:
        """An unset --pred-objective filled in from whether the source has gold labels (students.training.defaults)."""
        if self.pred_objective is not None or self.general:
            return self
        return replace(self, pred_objective=prediction_objective(source.labels(), source.regression))

    def is_read(self, kind: str) -> bool:
        """Whether the run reads a kind at all (`Kind.reads` of its read settings: not the HSK at --hsk none)."""
        return KINDS[kind].reads(self.reads.get(kind))

    def running(self) -> dict[StageSpec, Weighted]:
        """The stages that run, in training order, with their objectives: a stage runs when every kind it
        needs is read, its own (`StageSpec.kind`) and its objectives' (--hsk none skips stage 1)."""
        chosen = {GENERAL: self.objective} if self.general else {HSK: self.objective, PRED: self.pred_objective or ()}
        return {spec: objective for spec, objective in chosen.items()
                if all(self.is_read(k) for k in (spec.kind, *objective_kinds(objective)))}

    def stages(self) -> list[Stage]:
        """The run's stages in training order (a checkpoint's position indexes them): those `running` gives,
        each with its epochs, rate, batch size, objectives and read."""
        if self.hsk_lr is None or not self.general and (self.pred_lr is None or self.pred_objective is None):
            raise ValueError("rates or --pred-objective unresolved: call with_learning_rates and "
                             "with_pred_objective first")
        settings = {HSK: (self.hsk_epochs, self.hsk_lr, self.hsk_batch_size),
                    GENERAL: (self.hsk_epochs, self.hsk_lr, self.hsk_batch_size),
                    PRED: (self.pred_epochs, self.pred_lr, self.pred_batch_size)}
        return [Stage(spec, *settings[spec], objective, self.read(objective))
                for spec, objective in self.running().items()]

    def read(self, objective: Weighted) -> dict[str, Any]:
        """What a stage with these objectives reads (`BatchSource.batches`' read arguments): the HSK at
        --hsk when an objective compares it, else none (its arrays not decoded); each opt-in kind an
        objective compares at its read settings (e.g. the relations at --att-read)."""
        compared, out = objective_kinds(objective), {}
        for kind in STUDENT_KINDS.values():  # each kind's part (`StudentKind.read`)
            part = kind.read(self, kind.name in compared)
            out |= {k: v for k, v in part.items() if k != "kinds"} | (
                {"kinds": out.get("kinds", {}) | part["kinds"]} if "kinds" in part else {})
        return out

    def identity(self) -> dict[str, Any]:
        """The settings a checkpoint must have been written with to be resumed; the run folder
        resolved, so that every spelling of it (relative, absolute, trailing slash) is the same run."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RUNTIME} | {
            "out": resolved_run(self.out)}

    def changed_since(self, saved: dict[str, Any]) -> list[str]:
        """The settings that differ from a checkpoint's identity (its run folder resolved too, as
        checkpoints written before the folder was stored resolved hold it as spelled; a setting added
        since they were written counts at its default, which they ran with)."""
        saved = {f.name: f.default for f in fields(self) if f.default is not MISSING} | saved
        saved = saved | {"out": resolved_run(saved["out"])}
        return sorted(k for k, v in self.identity().items() if saved.get(k) != v)

    def to_json(self) -> dict[str, Any]:
        return settings_json(self) | {"objective": format_objective(self.objective),
                               "pred_objective": format_objective(self.pred_objective or ()),
                               "reads": to_json(self.reads)}


@dataclass
class Position:
    """Where the run is; with the weights and RNG states it is all a resume needs."""

    stage: int = 0  # index into TrainConfig.stages()
    epoch: int = 0  # within the stage, 0-based
    batch: int = 0  # batches consumed in this epoch
    step: int = 0  # optimizer steps in this stage
    loss_sum: float = 0.0  # since the last logged step
    loss_count: int = 0
    best: float | None = None  # primary metric of RUN/best
    best_eval: dict[str, float] | None = None
    best_at: dict[str, Any] | None = None
    stats: dict[str, dict[str, float]] = field(default_factory=dict)  # per stage: steps, seconds, examples
    log_bytes: int = 0  # length of log.jsonl at this position


class InterruptFlag:
    """SIGINT only sets a flag that the loop checks between optimizer steps, so a
    checkpoint is never taken mid-update; a second SIGINT interrupts at once."""

    def __enter__(self) -> InterruptFlag:
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise HardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class HardInterrupt(KeyboardInterrupt):
    """A second Ctrl-C: the state may be mid-update, so nothing is saved."""


class Distiller(nn.Module):
    """The trainable parts of a step as one module (the student and the projection W),
    so that DistributedDataParallel sees every parameter a loss uses in its forward."""

    def __init__(self, student: nn.Module, projection: nn.Module, precision, meta: StoreMeta) -> None:
        super().__init__()
        self.student, self.projection, self.precision, self.meta = student, projection, precision, meta

    def forward(self, inputs: dict[str, Tensor], batch: dict[str, Tensor], kinds: tuple[str, ...]) -> dict[str, Any]:
        """One student forward, and what each knowledge kind's losses compare with the batch
        (`StudentKind.student`: e.g. the projected student vectors at the stored positions, or the
        student's attention rows at the stored query rows), recording what the kinds ask for."""
        student_kinds = [STUDENT_KINDS[k] for k in kinds]
        captures = tuple(sorted({c for k in student_kinds for c in k.captures}))
        depth = self.student.config.num_hidden_layers
        layers = tuple(sorted({l for k in student_kinds if k.captures for l in k.capture_layers(self.meta, depth)}))
        hidden = any(k.hidden_states for k in student_kinds)
        with self.precision, hooks.capture(self.student, layers, captures) as captured:
            out = self.student(**inputs, output_hidden_states=hidden)
        forward = StudentForward(out, captured, self.student.config.num_attention_heads, inputs["attention_mask"],
                                 self.projection, self.meta, depth)
        return {k.name: k.student(forward, batch) for k in student_kinds}


class Trainer:
    """One run: `Trainer(cfg, source).run()` trains, evaluates and writes RUN/."""

    def __init__(self, cfg: TrainConfig, source: BatchSource) -> None:
        if not (Path(cfg.student) / STUDENT_FILE).is_file():
            raise UserError(f"--student {cfg.student} is not a student folder (no {STUDENT_FILE}); "
                            "make one with `students build`")
        if source.meta.general and not cfg.general:
            raise UserError("the knowledge source is task-agnostic (a bare encoder's store or teacher: no logits, no "
                            "labels); pass --general to distil a general student from it, then distil that student "
                            "from a task store")
        self.info = json.loads((Path(cfg.student) / STUDENT_FILE).read_text())
        self.cfg, self.source = cfg.with_learning_rates(self.info).with_pred_objective(source), source
        cfg = self.cfg
        self.run_dir = Path(cfg.out)
        self._bound: dict[Weighted, tuple] = {}  # each objective's kinds and bound losses (`_loss`)
        self._holdout_counts: dict[str, list[Tensor]] = {}  # per stage: each loss call's held-out count (`_holdout_loss`)
        self.ranks = Ranks.current()
        self.device = rank_device(cfg.runtime.device, self.ranks.local_rank)
        self.parallel = Parallel(self.ranks, self.device)
        set_cpu_threads(self.device, cfg.runtime.threads)
        self.model = self._load_model()
        # each stage reads the stored layers of the student's own layer map (`hskcache.selection.layers`)
        self.stages = [replace(s, read={**s.read, "student_layers": self.model.config.num_hidden_layers})
                       for s in cfg.stages()]
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.student)
        self._check_compatible()
        self.eval_set = self._load_eval_set()
        self.select_on, fraction = parse_select_on(cfg.select_on)
        self.holdout = None if fraction is None else (
            holdout_rows_only(source, fraction) if cfg.general else holdout_eval_set(source, fraction, self.model.config))
        self.primary = HOLDOUT_LOSS if cfg.general else primary_metric(
            self.eval_set.task if self.eval_set else source.meta.task, source.regression)
        torch.manual_seed(cfg.seed)
        self.projection = HSKProjection(self.model.config.hidden_size, source.hidden)
        if cfg.hsk_projection == "kept":
            self.projection.select(kept_dimensions(self.info))
        self.model.to(self.device)
        self.projection.to(self.device)
        self.dtype = pick_dtype(cfg.runtime.dtype, self.device)
        self.distiller = Distiller(self.model, self.projection, autocast(self.device, self.dtype), source.meta)
        self.engine: nn.Module = self.distiller  # DDP-wrapped per stage when distributed
        self.pos = Position()
        self.saved = self._open_run()
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.params: list[nn.Parameter] = []
        self._lr = 0.0  # learning rate of the last step, for the log

    # ------------------------------------------------------------------ setup

    def _load_model(self) -> nn.Module:
        """The student: its encoder alone for --general (a bare model); a bare (general) student on a task
        store gets a fresh head for the store's labels, seeded by --seed (said in one line)."""
        cfg, meta = self.cfg, self.source.meta
        if cfg.general:
            if self.info.get("kind") == "rosita":
                raise UserError(f"--student {cfg.student} is a ROSITA student (the teacher pruned under its task "
                                "head): it has no bare encoder for --general; build a TinyBERT student "
                                "(students build tinybert --teacher ENCODER)")
            return load_model(cfg.student, "model", cls=AutoModel)  # a classifier's head is dropped
        if is_task_teacher(load_config(cfg.student, "student")):
            return load_student(cfg.student)
        labels = head_labels(meta.num_labels, meta.regression, meta.label_names)
        if self.ranks.is_main:
            print(f"students: --student {cfg.student} is a bare encoder (a general student): its head for the "
                  f"store's {meta.num_labels} outputs is fresh, seeded by --seed {cfg.seed}", file=sys.stderr)
        return with_fresh_head(cfg.student, labels, cfg.seed, "--student")

    def _check_compatible(self) -> None:
        source, student = self.source, self.cfg.student  # its depth: checked by each stage's read (below)
        if tokenizer_hash(self.tokenizer) != source.meta.tokenizer.vocab_hash:
            raise UserError(f"student {student}'s vocabulary differs from the store's tokenizer; "
                            "build the student from the teacher that wrote the store")
        if not self.cfg.general:  # the general stage has no head and reads no labels
            if self.model.config.num_labels != source.num_labels:
                raise UserError(f"student {student} has {self.model.config.num_labels} outputs but the teacher has "
                                f"{source.num_labels}; build the student from the teacher that wrote the store")
            # the label loss and held-out selection read them: a class the head lacks fails mid-run or scores wrong
            check_labels(source.labels(), source.num_labels, source.regression,
                         f"the source's data {source.meta.data.source}", "teacher")
        for stage in self.stages:
            kinds = [STUDENT_KINDS[k] for k in objective_kinds(stage.objective)]
            missing = [k.name for k in kinds if not k.held(source.meta)]
            if missing:
                raise UserError(f"{stage.spec.flag} {format_objective(stage.objective)} needs {', '.join(missing)} "
                                "knowledge, which this source does not hold; extract a store (or run the online "
                                f"baseline) whose --knowledge includes {','.join(missing)}")
            for kind in kinds:
                kind.check(source.meta, self.model.config, student)
        for stage in self.stages:  # what each stage reads, checked by the source's own check of every read
            source.resolve(**stage.read)

    def _load_eval_set(self) -> EvalSet | None:
        cfg, meta = self.cfg, self.source.meta
        if cfg.eval_data is None:
            return None
        return load_eval_set(
            cfg.eval_data, self.model.config, self.tokenizer, cfg.max_length or meta.config.max_length,
            split=cfg.eval_split, text_cols=cfg.text_cols or meta.config.text_cols,
            label_col=cfg.label_col or meta.config.label_col, label_names=meta.label_names, task=meta.task)

    def _open_run(self) -> dict[str, Any] | None:
        """Start RUN/ or, with --resume, reload its checkpoint (weights, RNG, position)."""
        run, log = self.run_dir, self.run_dir / LOG_FILE
        state = read_state(run / "checkpoint") if self.cfg.resume else None
        if state is None and run.exists() and any(run.iterdir()) and not self.cfg.resume:
            raise UserError(f"--out {run} already holds a run; pass --resume to continue it or choose a new --out")
        if state is None:
            self.parallel.barrier()  # every rank has checked the folder before rank 0 writes to it
            if self.ranks.is_main:
                run.mkdir(parents=True, exist_ok=True)
                log.write_text("")
            return None
        changed = self.cfg.changed_since(state["identity"])
        if changed:
            raise UserError(f"--resume: {run} was started with other settings ({', '.join(changed)}); "
                            "rerun with the original flags or choose a new --out")
        if state["source"] != self.source.meta.identity:
            raise UserError(f"--resume: {run} was trained from another store or teacher/data/settings; "
                            "rerun with the original source or choose a new --out")
        bad = [name for part in ("model", "projection") for name, t in state[part].items()
               if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise UserError(f"--resume: {run / 'checkpoint'} holds non-finite weights ({bad[0]}); remove it to start "
                            "the run over, or choose a new --out without --resume")
        self.model.load_state_dict(state["model"])
        self.projection.load_state_dict(state["projection"])
        self.pos = Position(**state["position"])
        self.parallel.barrier()  # every rank has read the checkpoint before rank 0 touches the log
        if self.ranks.is_main:
            with open(log, "r+b") as f:  # drop records written after the checkpoint
                f.truncate(self.pos.log_bytes)
        saved = state.get("rng_ranks", [state["rng"]])
        if self.ranks.rank < len(saved):  # the same rank of a run with as many or more ranks
            set_rng_state(saved[self.ranks.rank])
        else:
            torch.manual_seed(rank_seed(self.cfg.seed, self.pos.stage, self.pos.step, self.ranks.rank))
        return state

    def _begin_stage(self, stage: Stage, total: int) -> None:
        """Fresh optimizer and schedule (and dropout seed), or the checkpoint's when resuming mid-stage."""
        params = self.params = stage.spec.parameters(self.model, self.projection)
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": self.cfg.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]  # biases, LayerNorm
        self.optimizer = torch.optim.AdamW(groups, lr=stage.lr)
        self.scheduler = stage.spec.schedule(self.optimizer, total)
        if self.saved is not None and self.saved["optimizer"] is not None:
            self.optimizer.load_state_dict(self.saved["optimizer"])
            self.scheduler.load_state_dict(self.saved["scheduler"])
        else:  # each rank its own dropout stream; rank 0's is the one-process stream
            if stage.spec.recentres and self.source.regression and self.cfg.regression_head == "recentre":
                self._recentre(stage)
            torch.manual_seed(self.cfg.seed + stage.spec.seed_base + self.ranks.rank)
        self.saved = None
        self.engine = self.parallel.wrap(self.distiller)

    def _recentre(self, stage: Stage) -> None:
        """The regression head's bias shifted by the mean teacher-minus-student output on up to
        RECENTRE_ROWS training rows (unshuffled, held-out rows left out), before DDP copies rank 0's weights."""
        batches = self.source.batches(stage.batch_size, shuffle=False, packed=True, **stage.read)

        def rows():
            seen = 0
            try:
                for packed in batches:
                    batch = expand(packed if self.holdout is None else drop_rows(packed, self.holdout.rows),
                                   self.device)
                    if len(batch["input_ids"]):
                        seen += len(batch["input_ids"])
                        yield batch
                    if seen >= RECENTRE_ROWS:
                        return
            finally:
                batches.close()

        def outputs(batch: dict[str, Tensor]) -> Tensor:
            with self.distiller.precision:
                return self.model(**trim_padding({k: batch[k] for k in MODEL_INPUTS})).logits

        self._stats(stage)["recentred_output_bias"] = recentre(self.model, rows(), outputs)

    def _stats(self, stage: Stage) -> dict[str, float]:
        """The stage's record in metrics.json's `stages` (checkpointed with the position)."""
        return self.pos.stats.setdefault(stage.name, {"steps": 0, "seconds": 0.0, "examples": 0})

    # ------------------------------------------------------------------ loop

    def run(self) -> dict[str, Any]:
        """Train every remaining stage, then write RUN/student and RUN/metrics.json."""
        log = self.run_dir / LOG_FILE if self.ranks.is_main else os.devnull  # rank 0 alone writes
        with InterruptFlag() as interrupt, open(log, "a") as self.log_file:
            try:
                while self.pos.stage < len(self.stages):
                    self._run_stage(self.stages[self.pos.stage], interrupt)
            except HardInterrupt:
                raise
            except KeyboardInterrupt:
                self._save_checkpoint()
                raise
        return self._finish()

    def _run_stage(self, stage: Stage, interrupt: InterruptFlag) -> None:
        per_epoch = self.source.num_batches(stage.batch_size)
        total = stage.epochs * per_epoch if self.cfg.max_steps is None else min(stage.epochs * per_epoch,
                                                                                 self.cfg.max_steps)
        self._begin_stage(stage, total)
        bar = tqdm(total=total, initial=self.pos.step, desc=stage.name, unit="step", dynamic_ncols=True,
                   disable=self.cfg.runtime.quiet or not self.ranks.is_main)
        with bar:
            done = False
            while not done:
                self._run_epoch(stage, total, bar, interrupt)
                self._evaluate(stage, bar)
                self.pos.epoch, self.pos.batch = self.pos.epoch + 1, 0
                done = self.pos.epoch >= stage.epochs or self.pos.step >= total
                if done:
                    self.pos = Position(stage=self.pos.stage + 1, best=self.pos.best, best_eval=self.pos.best_eval,
                                        best_at=self.pos.best_at, stats=self.pos.stats)
                    self.optimizer = self.scheduler = None
                self._save_checkpoint()
                if self.parallel.any(interrupt.requested):
                    raise KeyboardInterrupt

    def _run_epoch(self, stage: Stage, total: int, bar: tqdm, interrupt: InterruptFlag) -> None:
        cfg, pos = self.cfg, self.pos
        if pos.step >= total:  # resumed right after the stage's last step
            return
        batches = self.source.batches(stage.batch_size, shuffle=True, seed=cfg.seed,
                                      epoch=stage.spec.seed_base + pos.epoch, start_batch=pos.batch,
                                      rank=self.ranks.rank, world_size=self.ranks.world_size, packed=True,
                                      pin_memory=self.device.type == "cuda", **stage.read)
        stats = self._stats(stage)
        self.model.train()
        started = time.perf_counter()
        for batch in batches:
            if self.holdout is not None:
                batch = drop_rows(batch, self.holdout.rows)
            rows = len(batch) if isinstance(batch, PackedBatch) else len(batch["input_ids"])
            share, norm = self._step(stage, batch)
            loss, rows, stop = self.parallel.step_totals(share, rows, interrupt.requested)
            # Both the same on every rank (DDP averaged the gradients), read after step_totals' sync so
            # the step costs no second one; the diverged update is in memory only, never saved.
            if not math.isfinite(loss):
                raise self._diverged(stage, "loss", loss)
            if not torch.isfinite(norm):
                raise self._diverged(stage, "gradient norm", norm.item())
            pos.batch, pos.step = pos.batch + 1, pos.step + 1
            pos.loss_sum, pos.loss_count = pos.loss_sum + loss, pos.loss_count + 1
            stats["steps"] += 1
            stats["examples"] += rows
            bar.update()
            if pos.step % cfg.log_every == 0 or pos.step == total:
                self._log_step(stage, bar)
            if cfg.save_every and pos.step % cfg.save_every == 0:
                self._save_checkpoint()
            if stop:
                raise KeyboardInterrupt
            if pos.step >= total:
                break
        stats["seconds"] += time.perf_counter() - started

    def _step(self, stage: Stage, batch: dict[str, Tensor] | PackedBatch) -> tuple[Tensor, Tensor]:
        """One optimizer step; returns this rank's share of the global batch loss and the gradient
        norm before clipping (tensors: read by the caller, not here, to sync once per step). A packed
        batch is expanded on the trainer's device (from pinned memory without blocking on CUDA)."""
        batch = expand(batch, self.device, non_blocking=True)
        counted = len(batch["input_ids"]) > 0  # a rank's share of a global batch may be empty
        if not counted:
            batch = placeholder(batch)
        inputs = {k: v.to(self.device) for k, v in trim_padding({k: batch[k] for k in MODEL_INPUTS}).items()}
        loss = self._loss(stage.objective, batch, inputs, self.parallel.denominator(counted))
        if not counted:
            loss = loss * 0.0
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self._lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), norm

    def _diverged(self, stage: Stage, what: str, value: float) -> UserError:
        """Training stops at the first non-finite loss or gradient norm: nothing after it is
        saved, so the last checkpoint holds finite weights and no NaN student is written."""
        return UserError(f"stage {stage.name}, step {self.pos.step + 1}: the {what} is {value} (not finite); "
                         f"--{stage.name}-lr {stage.lr:g} is likely too high: rerun with a lower rate in a new --out "
                         f"({kept_checkpoint(self.run_dir)}; no student was written)")

    def _loss(self, objective: Weighted, batch: dict[str, Tensor], inputs: dict[str, Tensor],
              denominator, engine: nn.Module | None = None) -> Tensor:
        """Σ weight × objective (students.training.objectives): each objective's bound loss compares its knowledge
        kind's batch entries with what the student's forward gave for that kind."""
        if objective not in self._bound:  # once per objective, not per step: the table is built from the registry
            entries = objective_table()
            self._bound[objective] = (objective_kinds(objective), [(weight, entries[name]) for name, weight in objective])
        kinds, terms = self._bound[objective]
        student = (engine or self.engine)(inputs, batch, kinds)  # the DDP-wrapped distiller unless told
        settings = LossSettings(self.cfg.width_loss, self.cfg.temperature, self.source.regression, denominator)
        total = torch.zeros((), device=self.device)
        for weight, entry in terms:
            total = total + weight * entry.loss(student[entry.kind], batch, settings)
        return total

    # ------------------------------------------------------------------ records

    def _write_log(self, record: dict[str, Any]) -> None:
        self.log_file.write(json.dumps(record, allow_nan=False) + "\n")  # JSON has no NaN
        self.log_file.flush()

    def _log_step(self, stage: Stage, bar: tqdm) -> None:
        pos = self.pos
        loss = pos.loss_sum / pos.loss_count
        self._write_log({"stage": stage.name, "step": pos.step, "epoch": pos.epoch + 1, "loss": loss, "lr": self._lr})
        bar.set_postfix(epoch=pos.epoch + 1, loss=f"{loss:.4g}", refresh=False)
        pos.loss_sum, pos.loss_count = 0.0, 0

    def _evaluate(self, stage: Stage, bar: tqdm) -> None:
        """After every epoch: the eval split (reported) and the held-out training rows
        (selection). The pred-stage epoch `--select-on` prefers becomes RUN/best
        (after stage 1 alone the classifier head is untrained)."""
        if not self.ranks.is_main:
            return
        pos = self.pos
        metrics = None if self.eval_set is None else evaluate(self.model, self.eval_set, self.cfg.eval_batch_size,
                                                              self.device, self.dtype)
        held = None if self.holdout is None else {HOLDOUT_LOSS: self._holdout_loss(stage)} if self.cfg.general \
            else evaluate(self.model, self.holdout.eval_set, self.cfg.eval_batch_size, self.device, self.dtype)
        record = {"eval": metrics} | ({"holdout": held} if held is not None else {})
        if metrics is not None or held is not None:
            self._write_log({"stage": stage.name, "epoch": pos.epoch + 1, "step": pos.step, **record})
            if not self.cfg.runtime.quiet:
                bar.write(f"{stage.name} epoch {pos.epoch + 1}: " + "; ".join(
                    f"{name} " + ", ".join(f"{k} {v:.4f}" for k, v in values.items())
                    for name, values in record.items() if values is not None))
        if not stage.spec.selects:
            return
        score = {"train-holdout": held, "eval": metrics, "last": None}[self.select_on]
        score = None if score is None else score[self.primary]
        if self.select_on == "last" or improves(self.primary, score, pos.best):
            pos.best, pos.best_eval = score, metrics
            pos.best_at = {"stage": stage.name, "epoch": pos.epoch + 1, "step": pos.step,
                           "selected_on": self.select_on} | ({"holdout": held} if held is not None else {})
            with replaced_dir(self.run_dir / "best") as tmp:
                save_student(self.model, tmp, self.cfg.student, self._trained_for())

    def _trained_for(self) -> dict[str, Any]:
        """What student.json records of the run: the task (and the stage: a general student has none)."""
        return {"task": None if self.cfg.general else self.source.meta.task,
                "stage": "general" if self.cfg.general else "task"}

    def _holdout_loss(self, stage: Stage) -> float:
        """The general stage's selection score: the stage's distillation loss on the held-out rows as one
        batch, each loss term's sum over them divided by its count over them, read in --eval-batch-size
        batches (which a resumed run may change without moving the score). Every loss divides by a
        `Denominator` of its batch's count: a first pass records each call's counts (they depend on the
        rows alone, so once per stage), the scoring pass divides by their totals, as DDP divides by the
        global batch's. On rank 0 alone, through the unwrapped distiller (no collective)."""
        totals = self._holdout_counts.get(stage.name)
        if totals is None:
            totals = []

            def counting(count: Tensor, calls: list[int]) -> Tensor:
                k = calls[0] = calls[0] + 1
                if k > len(totals):
                    totals.append(torch.zeros_like(count))
                totals[k - 1] = totals[k - 1] + count
                return batch_count(count)
            self._holdout_pass(stage, counting)
            self._holdout_counts[stage.name] = totals

        def whole(count: Tensor, calls: list[int]) -> Tensor:
            k = calls[0] = calls[0] + 1
            if k > len(totals) or totals[k - 1].shape != count.shape:
                raise RuntimeError("a held-out batch's losses counted other terms than the first pass's")
            return totals[k - 1].clamp(min=1)
        return self._holdout_pass(stage, whole)

    def _holdout_pass(self, stage: Stage, denominator) -> float:
        """Σ over the held-out batches of the stage's loss, each loss's count passed to
        `denominator(count, calls)` (`calls[0]`: the calls made so far in this batch)."""
        rows, size, total = self.holdout.rows.numpy(), self.cfg.eval_batch_size, 0.0
        self.model.eval()
        with torch.no_grad():
            for lo in range(0, len(rows), size):
                batch = {k: v.to(self.device) for k, v in self.source.get(rows[lo:lo + size], **stage.read).items()}
                inputs = trim_padding({k: batch[k] for k in MODEL_INPUTS})
                calls = [0]
                total += float(self._loss(stage.objective, batch, inputs,
                                          lambda count, calls=calls: denominator(count, calls), self.distiller))
        return total

    def _save_checkpoint(self) -> None:
        """Rank 0 writes the (identical) weights and optimizer, with every rank's random state."""
        rng_ranks = self.parallel.gather(rng_state())
        if not self.ranks.is_main:
            return
        self.pos.log_bytes = self.log_file.tell()
        write_state(self.run_dir / "checkpoint", {
            "identity": self.cfg.identity(),
            "source": self.source.meta.identity,
            "position": asdict(self.pos),
            "model": self.model.state_dict(),
            "projection": self.projection.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
        })

    def _finish(self) -> dict[str, Any] | None:
        """RUN/student (the best pred-stage checkpoint, else the last model) and RUN/metrics.json, by rank 0."""
        if not self.ranks.is_main:
            return None
        best = self.run_dir / "best"
        with replaced_dir(self.run_dir / "student") as tmp:
            if self.pos.best_at is not None:
                shutil.copytree(best, tmp, dirs_exist_ok=True)
            else:
                save_student(self.model, tmp, self.cfg.student, self._trained_for())
        stages = {name: {**s, "examples_per_second": s["examples"] / s["seconds"] if s["seconds"] else None}
                  for name, s in self.pos.stats.items()}
        metrics = {
            "eval": self.pos.best_eval,
            "best": self.pos.best_at and {**self.pos.best_at, "metric": self.primary, "value": self.pos.best},
            "config": self.cfg.to_json(),
            "stages": stages,
            "student": {"kind": self.info["kind"], "parameters": count_parameters(self.model),
                        "layers": self.model.config.num_hidden_layers, "hidden": self.model.config.hidden_size},
            "source": {"teacher_hash": self.source.meta.teacher_hash, "task": self.source.meta.task,
                       "extraction": to_json(self.source.meta.config)},
        }
        write_text_whole(self.run_dir / METRICS_FILE, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
        return metrics


def kept_dimensions(info: dict[str, Any]) -> list[int]:
    """The teacher's residual dimensions an extracted student kept (student.json's `extraction`)."""
    hidden = (info.get("extraction") or {}).get("hidden")
    if hidden is None:
        raise UserError(f"--hsk-projection kept needs a student extracted from the teacher (students build --init "
                        f"etd-impt or etd-rand); this one is --init {info.get('init')}; use --hsk-projection random")
    return list(hidden)


def kept_checkpoint(run: Path) -> str:
    """What a failed run leaves to resume from (checkpoints are replaced atomically, students.training.checkpoint)."""
    return (f"the last checkpoint, {run / 'checkpoint'}, is intact" if (run / "checkpoint").is_dir()
            else "no checkpoint was saved yet")


def train(cfg: TrainConfig, source: BatchSource) -> dict[str, Any] | None:
    """Run (or resume) training; returns what RUN/metrics.json holds (None on ranks other than 0).
    A full disk is one line: whatever was being written, the last checkpoint is intact."""
    try:
        return Trainer(cfg, source).run()
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where, state = exc.filename or cfg.out, Path(cfg.out) / "checkpoint" / STATE_FILE
        need = (f" (a checkpoint takes {state.stat().st_size / 2**20:.1f} MiB, written beside the last one)"
                if state.is_file() else "")
        raise UserError(f"no space left on the device writing {where}; {kept_checkpoint(Path(cfg.out))}: "
                        f"free space{need} and rerun with --resume") from None
