"""`students build tinybert|rosita`: a student folder from a fine-tuned teacher.

One settings dataclass per init (`TinyBertConfig`, `RositaConfig`), each field a
flag and a TOML key, validated once; `build_student` resolves the shape
(--preset, what the init fixes, the explicit shape flags on top) and writes
the folder.
"""

from __future__ import annotations

import json
import sys
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path

from hskcache.device import DEVICES
from hskcache.errors import UserError
from hskcache.options import STORE_HELP, Settings, columns, setting
from hskcache.teacher.loading import check_model_source
from students.models.etd import EXTRACTING_INITS, LAYER_SELECTIONS
from students.models.student import PRESETS, StudentSpec
from students.training.runtime import set_cpu_threads, threads_setting
from students.training.trainer import TrainConfig

PRESET_HELP = f"named shape: {', '.join(PRESETS)}"


@dataclass(frozen=True)
class TinyBertConfig(Settings):
    """`students build tinybert`: a small BERT on the teacher's vocabulary, extracted (ETD) or random."""

    KIND = "tinybert"
    SHAPE = ("layers", "hidden", "ffn", "heads")

    teacher: str = setting(MISSING, "fine-tuned teacher folder (vocabulary, labels, weights)")
    out: str = setting(MISSING, "student folder to write")
    overwrite: bool = setting(False, "replace the files of an existing --out folder")
    preset: str | None = setting(None, PRESET_HELP, choices=tuple(PRESETS))
    layers: int | None = setting(None, "encoder layers L'")
    hidden: int | None = setting(None, "hidden width d_S")
    ffn: int | None = setting(None, "FFN width")
    heads: int | None = setting(None, "attention heads (must divide --hidden; extraction: the teacher's)")
    init: str = setting("etd-impt", "etd-impt (teacher weights, dimensions by Taylor importance on --store or "
                                    "--data) | etd-rand (dimensions drawn at random) | teacher-layers (no width "
                                    "change) | random | a general student folder of the teacher's family "
                                    "(`students train --general`; its shape, a fresh seeded head)")
    layer_selection: str = setting("uniform", "teacher layers the student starts from: uniform (ETD) | bottom | top",
                                   choices=LAYER_SELECTIONS)
    store: str | None = setting(None, "etd-impt: HSK store whose rows score the neurons (task loss on its gold "
                                      "labels, the teacher's expected Fisher score on unlabeled rows; a bare "
                                      "encoder's: the Gaussian expected score on its last states)",
                                metavar="STORE", aliases=("--cache",))
    data: str | None = setting(None, "etd-impt: labeled training data scoring the task loss (instead of --store; "
                                     "a bare encoder: any text, labels unused, cut into the sequences of the "
                                     "general store extracted from it at the same --max-length)")
    select_on: str = setting(TrainConfig.select_on, "etd-impt: the `students train --select-on` the student will "
                                                    "be trained with; its held-out rows are not scored")
    split: str = setting("train", "split of a glue/<task> --data")
    text_cols: tuple[str, ...] | None = setting(None, "--data text column(s), a or a,b", parse=columns)
    label_col: str | None = setting(None, "--data label column")
    max_length: int | None = setting(None, "--data tokenizer max length (a bare encoder: the general store's)",
                                     show_default="128, or the teacher's positions if fewer")
    importance_examples: int = setting(10_000, "examples that score the neurons (ETD's)", at_least=1)
    seed: int = setting(0, "seed of a random init, of etd-rand's draw, of a bare encoder's importance draws "
                           "or of the fresh head on a general student")
    device: str = setting("auto", "where the teacher runs", choices=DEVICES)
    threads: int | None = threads_setting()

    def __post_init__(self) -> None:
        from hskcache.teacher.loading import check_min_length

        check_min_length(self.max_length)
        if self.init == "etd-impt" and (self.store is None) == (self.data is None):
            raise UserError("--init etd-impt (the default) scores the teacher's neurons on one of --store STORE "
                            "or --data DATA; pass one, or --init etd-rand")
        if self.init != "etd-impt" and (self.store is not None or self.data is not None):
            raise UserError(f"--store/--data score importance for --init etd-impt; --init {self.init} does not use them")


@dataclass(frozen=True)
class RositaConfig(Settings):
    """`students build rosita`: the teacher pruned by Taylor importance, embeddings factorised."""

    KIND = "rosita"
    SHAPE = ("layers", "heads", "ffn", "emb_rank")

    teacher: str = setting(MISSING, "the fine-tuned teacher that wrote the store")
    store: str = setting(MISSING, "HSK store whose inputs and logits score the importance (" + STORE_HELP + ")",
                         metavar="STORE", aliases=("--cache",))
    out: str = setting(MISSING, "student folder to write")
    overwrite: bool = setting(False, "replace the files of an existing --out folder")
    preset: str | None = setting(None, PRESET_HELP, choices=tuple(PRESETS))
    layers: int | None = setting(None, "bottom teacher layers kept (L')")
    heads: int | None = setting(None, "attention heads kept per layer")
    ffn: int | None = setting(None, "FFN neurons kept per layer")
    emb_rank: int | None = setting(None, "rank of the factorised word embeddings")
    importance_examples: int = setting(2048, "store examples that score heads and neurons", at_least=1)
    device: str = setting("auto", "where the teacher runs", choices=DEVICES)
    threads: int | None = threads_setting()


def resolve_spec(cfg: TinyBertConfig | RositaConfig, base: dict | None = None) -> StudentSpec:
    """--preset, then `base` (what the init fixes), then the explicit shape flags on top."""
    values: dict = {"kind": cfg.KIND}
    if cfg.preset is not None:
        preset = PRESETS[cfg.preset]
        if preset.kind != cfg.KIND:
            raise UserError(f"--preset {cfg.preset} is a {preset.kind} preset; "
                            f"use it with `students build {preset.kind}`")
        values = asdict(preset)
    values.update(base or {})
    values.update({name: getattr(cfg, name) for name in cfg.SHAPE if getattr(cfg, name) is not None})
    missing = [name for name in cfg.SHAPE if values.get(name) is None]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise UserError(f"students build {cfg.KIND} needs {flags}; pass them or a --preset")
    return StudentSpec(**values)


def build_student(cfg: TinyBertConfig | RositaConfig):
    """Write the student folder at cfg.out; returns (spec, model)."""
    from hskcache.outputs import check_out_folder
    from hskcache.teacher.loading import load_config, load_tokenizer
    from students.models.student import build_tinybert

    check_out_folder(cfg.out, "--out", cfg.overwrite)
    load_tokenizer(cfg.teacher, load_config(cfg.teacher))  # a vocabulary that fits the teacher, before any work
    if isinstance(cfg, RositaConfig):
        spec = resolve_spec(cfg)
        return spec, _build_rosita(cfg, spec)
    if cfg.init in EXTRACTING_INITS:
        spec = resolve_spec(cfg, _teacher_shape(cfg))
        return spec, _build_extracted(cfg, spec)
    if cfg.init == "random":
        spec = resolve_spec(cfg)
        return spec, build_tinybert(cfg.teacher, spec.layers, spec.hidden, spec.ffn, spec.heads, cfg.out, cfg.seed)
    return _build_from_general(cfg)


def _build_from_general(cfg: TinyBertConfig):
    """--init FOLDER: the general student's own shape; shape flags may only repeat it."""
    from students.models.student import build_from_general, encoder_shape

    check_model_source(cfg.init, "--init")
    shape = encoder_shape(cfg.init)
    wrong = [f"--{name} {getattr(cfg, name)}" for name in cfg.SHAPE
             if getattr(cfg, name) is not None and getattr(cfg, name) != shape[name]]
    if wrong or cfg.preset is not None:
        given = ", ".join(wrong) or f"--preset {cfg.preset}"
        raise UserError(f"--init {cfg.init} fixes the student's shape ({', '.join(f'{k} {v}' for k, v in shape.items())}); "
                        f"drop {given}")
    return build_from_general(cfg.teacher, cfg.init, cfg.out, cfg.seed)


def _teacher_shape(cfg: TinyBertConfig) -> dict:
    """What an extracting init takes from the teacher: its heads (a rotary family: the heads of
    its head size that --hidden holds), and for teacher-layers its width."""
    from hskcache.teacher.families import family_of
    from hskcache.teacher.loading import load_config
    from students.models.etd import student_heads

    config = load_config(cfg.teacher)
    family = family_of(config)
    shape = {"heads": config.num_attention_heads}
    if cfg.init == "teacher-layers":
        shape |= {"hidden": config.hidden_size, "ffn": getattr(config, family.ffn_size)}
    hidden = cfg.hidden or shape.get("hidden") or (PRESETS[cfg.preset].hidden if cfg.preset in PRESETS else None)
    if family.rotary and hidden and hidden % family.head_dim(config) == 0:
        shape["heads"] = student_heads(config, hidden)
    return shape


def _build_extracted(cfg: TinyBertConfig, spec: StudentSpec):
    from hskcache.device import pick_device
    from students.models.etd import build_extracted
    from students.build.importance import data_sample, importance_store, store_sample

    batches = None
    if cfg.init == "etd-impt" and cfg.store is not None:
        batches = store_sample(importance_store(cfg.store, cfg.teacher), cfg.importance_examples, cfg.select_on)
    elif cfg.init == "etd-impt":
        batches = data_sample(cfg.teacher, cfg.data, cfg.split, cfg.text_cols, cfg.label_col, cfg.max_length,
                              cfg.importance_examples, cfg.select_on)
    device = pick_device(cfg.device)
    set_cpu_threads(device, cfg.threads)
    return build_extracted(cfg.teacher, spec, cfg.init, cfg.out, batches, cfg.layer_selection, cfg.seed, device,
                           {"importance_select_on": cfg.select_on} if cfg.init == "etd-impt" else None)


def _build_rosita(cfg: RositaConfig, spec: StudentSpec):
    from hskcache.device import pick_device
    from students.build.importance import importance_store, store_sample
    from students.models.student import STUDENT_FILE
    from students.models.pruning import build_rosita
    from hskcache.teacher.loading import load_config, require_task_teacher

    require_task_teacher(load_config(cfg.teacher), cfg.teacher)  # the KD loss needs the teacher's head
    store = importance_store(cfg.store, cfg.teacher)
    if store.meta.general:  # ROSITA's importance is the KD loss to the stored logits
        raise UserError(f"--store {cfg.store} is task-agnostic (no logits) and ROSITA prunes by the KD loss to the "
                        "stored logits; pass a task store, or use `students build tinybert` for a general student")
    sample = store_sample(store, cfg.importance_examples)
    device = pick_device(cfg.device)
    set_cpu_threads(device, cfg.threads)
    model = build_rosita(cfg.teacher, sample, spec.layers, spec.heads, spec.ffn, spec.emb_rank, cfg.out, device)
    built = json.loads((Path(cfg.out) / STUDENT_FILE).read_text())
    if built["teacher_hash"] != store.meta.teacher_hash:
        print(f"students: warning: {cfg.teacher} has other weights than the teacher that wrote {cfg.store}",
              file=sys.stderr)
    return model
