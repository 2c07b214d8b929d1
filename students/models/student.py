"""Students: TinyBERT-style (a small HF BERT) and ROSITA-style (the pruned teacher).

Every student folder is a Hugging Face model folder (`config.json`, the weights,
the teacher's tokenizer) plus `student.json` (kind, spec, provenance);
`AutoModelForSequenceClassification` opens either kind once `students` is
imported (students/models/rosita.py registers ROSITA). Both forwards take `input_ids, attention_mask, token_type_ids, output_hidden_states`
and return `.logits` and `.hidden_states` (L'+1 tensors, embeddings first).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    PretrainedConfig,
    PreTrainedModel,
)

from hskcache.errors import UserError
from hskcache.outputs import replaced_dir
from hskcache.teacher.families import family_of
from hskcache.teacher.loading import (check_model_source, is_regression, is_task_teacher, load_config, load_model,
                                      named_labels, tokenizer_hash)

STUDENT_FILE = "student.json"


@dataclass(frozen=True)
class StudentSpec:
    """A student's shape. `hidden` is TinyBERT-only (ROSITA keeps the teacher's
    width); `emb_rank` is ROSITA-only (TinyBERT's embeddings are full-rank)."""

    kind: str  # "tinybert" | "rosita"
    layers: int
    heads: int
    ffn: int
    hidden: int | None = None
    emb_rank: int | None = None


PRESETS: dict[str, StudentSpec] = {
    # For a 12-layer, 768-wide teacher (BERT-base), as in the paper.
    "tinybert-4": StudentSpec("tinybert", layers=4, heads=12, ffn=1200, hidden=312),
    "rosita-6": StudentSpec("rosita", layers=6, heads=2, ffn=768, emb_rank=128),
    # For a 6-layer, 384-wide teacher (MiniLM-L6: 12 heads, FFN 1536). Both have
    # 3 layers, so one store extracted with --student-layers 3 serves both.
    "tinybert-3s": StudentSpec("tinybert", layers=3, heads=4, ffn=768, hidden=192),
    "rosita-3s": StudentSpec("rosita", layers=3, heads=4, ffn=384, emb_rank=64),
}


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- TinyBERT


def build_tinybert(
    teacher_dir: str | Path,
    layers: int,
    hidden: int,
    ffn: int,
    heads: int,
    out_dir: str | Path,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised (seeded) BERT of the given shape on the teacher's vocabulary: a classifier
    for its labels, or a bare encoder (no head) when the teacher is one (the general stage)."""
    if min(layers, hidden, ffn, heads) < 1 or hidden % heads:
        raise UserError(f"bad TinyBERT shape layers={layers} hidden={hidden} ffn={ffn} heads={heads}; "
                        "use positive sizes with hidden divisible by heads")
    teacher = teacher_config(teacher_dir)
    family_of(teacher)  # its vocabulary and store come from a supported encoder only
    config = BertConfig(
        vocab_size=teacher.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=teacher.max_position_embeddings,
        type_vocab_size=max(1, getattr(teacher, "type_vocab_size", 1)),  # MPNet has no segment embeddings
        pad_token_id=teacher.pad_token_id,
        **(_labels(teacher) if is_task_teacher(teacher) else {}),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (BertForSequenceClassification(config) if is_task_teacher(teacher)
                 else BertModel(config, **family_of(config).bare_kwargs))  # a bare encoder: no pooler
    spec = StudentSpec("tinybert", layers=layers, heads=heads, ffn=ffn, hidden=hidden)
    save_new(model, teacher_dir, out_dir, spec, {"init": None, "seed": seed})
    return model


def _labels(config: PretrainedConfig) -> dict:
    """What a classifier head takes from a task teacher's config: its labels and problem type."""
    return {"id2label": config.id2label, "label2id": config.label2id, "problem_type": config.problem_type}


def head_labels(num_labels: int, regression: bool, names: Sequence[str] | None) -> dict:
    """The config of a fresh head for a task (`with_fresh_head`'s `labels`): its outputs, its problem type
    (always set, so the loss never guesses it from the output count) and its class names when it has real ones.
    The one rule for both routes from a general student (`--init FOLDER` and a bare `--student`)."""
    return {"num_labels": num_labels,
            "problem_type": "regression" if regression else "single_label_classification"} | (
        {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}} if names else {})


def encoder_shape(init_dir: str | Path) -> dict[str, int]:
    """The shape (`StudentSpec` fields) of a general student folder, which --init FOLDER keeps."""
    config = load_config(str(init_dir), "--init")
    return {"layers": config.num_hidden_layers, "hidden": config.hidden_size, "heads": config.num_attention_heads,
            "ffn": getattr(config, family_of(config).ffn_size)}


def with_fresh_head(encoder_dir: str | Path, labels: dict, seed: int, role: str) -> PreTrainedModel:
    """A sequence classifier of `encoder_dir`'s family and shape holding its encoder (a bare general
    student's, or a classifier's), with a fresh head seeded by `seed` for `labels` (`num_labels`,
    `id2label`, `label2id`, `problem_type` of the task): the task stage after the general stage."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    encoder, info = load_model(str(encoder_dir), role, cls=AutoModel, output_loading_info=True)
    missing = info["missing_keys"]  # a bare encoder is loaded without a pooler (`Family.bare_kwargs`)
    if missing:
        raise UserError(f"{role} {encoder_dir} lacks encoder weights (e.g. {missing[0]}); "
                        "pass a student folder written by `students build` or `students train --general`")
    config = copy.deepcopy(encoder.config)
    config.architectures = None
    for name, value in labels.items():
        setattr(config, name, value)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(config)
    model.base_model.load_state_dict(encoder.state_dict(), strict=False)
    loaded = set(encoder.state_dict())
    left = [k for k in model.base_model.state_dict() if k not in loaded and "pooler" not in k]
    if left:
        raise UserError(f"{role} {encoder_dir} is not an encoder of this layout ({left[0]} missing)")
    return model


def build_from_general(teacher_dir: str | Path, init_dir: str | Path, out_dir: str | Path,
                       seed: int = 0) -> tuple[StudentSpec, PreTrainedModel]:
    """A task student started from a general student folder (`--init FOLDER`): its encoder and family (the
    teacher's for an extracted student, BERT for a random one), the task teacher's vocabulary (checked) and
    labels, and a fresh head seeded by `seed`."""
    from hskcache.teacher.loading import load_tokenizer

    check_model_source(str(init_dir), "--init")
    teacher, init = teacher_config(teacher_dir), load_config(str(init_dir), "--init")
    if not is_task_teacher(teacher):
        raise UserError(f"--init {init_dir} gives a task student a fresh head for the teacher's labels, but "
                        f"--teacher {teacher_dir} is a bare encoder; pass the fine-tuned task teacher")
    family_of(init)  # a registered encoder: an extracted student of the teacher's family, or a random BERT on
    # its vocabulary (as `--init random` builds for any teacher); the vocabulary is what must match
    vocab = tokenizer_hash(load_tokenizer(str(teacher_dir), teacher))
    if tokenizer_hash(load_tokenizer(str(init_dir), init, "--init")) != vocab or init.vocab_size != teacher.vocab_size:
        raise UserError(f"--init {init_dir} has another vocabulary than teacher {teacher_dir}; pass a general "
                        "student distilled from the encoder the teacher was fine-tuned from")
    labels = head_labels(teacher.num_labels, is_regression(teacher), named_labels(teacher))
    model = with_fresh_head(init_dir, labels, seed, "--init")
    spec = StudentSpec("tinybert", **encoder_shape(init_dir))
    save_new(model, teacher_dir, out_dir, spec, {"init": str(init_dir), "family": family_of(init).name,
                                                 "seed": seed})
    return spec, model


# --------------------------------------------------------------------------- folders


def load_student(student_dir: str | Path) -> nn.Module:
    """Either kind of student (or a trainer checkpoint of one, or a teacher) through the Auto classes."""
    path = Path(student_dir)
    config = load_config(str(path), "student")
    if config.model_type != "rosita" and "RositaForSequenceClassification" in (config.architectures or []):
        raise UserError(f"{path} is a ROSITA student written by an older version of this tool; "
                        "rebuild it with `students build rosita` and train it again")
    if not is_task_teacher(config):  # a classifier class would give it a random head, silently
        raise UserError(f"{path} is a bare encoder (a general student): it has no head to predict with; distil it "
                        f"from a task store first (students train --store TASK_STORE --student {path})")
    return load_model(path, "model")


def save_student(model: nn.Module, out_dir: str | Path, student_dir: str | Path, extra: dict | None = None) -> None:
    """Save `model` (e.g. a checkpoint) as a complete student folder, taking the
    tokenizer and student.json from the folder it was loaded from; `extra` is
    added to student.json (e.g. the task it was distilled for)."""
    out = Path(out_dir)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(student_dir).save_pretrained(out)
    info = json.loads((Path(student_dir) / STUDENT_FILE).read_text()) | (extra or {})
    (out / STUDENT_FILE).write_text(json.dumps(info, indent=1) + "\n")


def student_task(student_dir: str | Path) -> str | None:
    """The task (e.g. a GLUE name) a trained student was distilled for, so that
    `students eval` picks that task's metrics on a local file."""
    info = Path(student_dir) / STUDENT_FILE
    return json.loads(info.read_text()).get("task") if info.is_file() else None


def teacher_config(teacher_dir: str | Path) -> PretrainedConfig:
    return load_config(str(teacher_dir), "teacher")


def save_new(model: nn.Module, teacher_dir: str | Path, out_dir: str | Path, spec: StudentSpec, extra: dict) -> None:
    """Write a built student folder whole (`replaced_dir`): a cut build leaves no folder that looks built."""
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    info = {"kind": spec.kind, "spec": asdict(spec), "teacher": str(teacher_dir),
            "teacher_vocab_size": model.config.vocab_size, "tokenizer_hash": tokenizer_hash(tokenizer), **extra}
    with replaced_dir(Path(out_dir)) as out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / STUDENT_FILE).write_text(json.dumps(info, indent=1) + "\n")
