"""Loading a teacher and running it with hidden states and attentions.

A teacher is a fine-tuned sequence classifier (a task teacher: its store holds logits and labels),
or, where the caller allows it (`hskcache extract`), a bare encoder of a registered family, loaded
with `AutoModel` without a pooler (a head or pooler it may have is not used, `Family.bare_kwargs`): its store
is task-agnostic (`StoreMeta.general`)."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from hskcache.device import autocast, pick_device, pick_dtype
from hskcache.errors import UserError
from hskcache.teacher.families import family_of, takes_token_types


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over the state dict, so a store knows exactly which teacher wrote it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# Families whose position ids start after the padding index (RoBERTa's scheme),
# so pad_token_id + 1 rows of the position table are never a token's position.
PADDING_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "data2vec-text",
                            "longformer")


def usable_positions(config) -> int:
    """The longest input a model's position table covers."""
    offset = config.pad_token_id + 1 if config.model_type in PADDING_OFFSET_POSITIONS else 0
    return config.max_position_embeddings - offset


MIN_LENGTH = 2  # [CLS] and [SEP]: the shortest input a sequence classifier is given


def check_min_length(max_length: int | None) -> None:
    """Refuse a --max-length with no room for [CLS] and [SEP] (None: not given). Every
    command that tokenizes checks it here, before anything runs."""
    if max_length is not None and max_length < MIN_LENGTH:
        raise UserError(f"--max-length must be at least {MIN_LENGTH} ([CLS] and [SEP]), got {max_length}")


def check_max_length(max_length: int, config, role: str) -> None:
    """Refuse, before anything runs, a --max-length the model has no positions for
    (it would fail mid-run on a tensor-size mismatch)."""
    limit = usable_positions(config)
    if max_length > limit:
        raise UserError(f"--max-length {max_length} is above the {role}'s {limit} positions; "
                        f"pass --max-length {limit} or less")


def id_bound(tokenizer) -> int:
    """One more than the largest token id the tokenizer can emit: what sizes the stored
    `input_ids` (added tokens may sit above len(tokenizer))."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the vocabulary: a student must tokenize exactly like the store."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()


def is_regression(config) -> bool:
    """Whether a sequence-classification head regresses: its `problem_type` when set,
    else one output (Hugging Face's own rule)."""
    if config.problem_type is not None:
        return config.problem_type == "regression"
    return config.num_labels == 1


def is_task_teacher(config) -> bool:
    """Whether a model folder is a fine-tuned sequence classifier (its head gives a task's logits);
    any other encoder of a registered family is a bare encoder."""
    return any(a.endswith("ForSequenceClassification") for a in config.architectures or [])


def require_task_teacher(config, name: str) -> None:
    """Refuse, in one line, a model that is not a fine-tuned sequence classifier where a task head is needed."""
    if not is_task_teacher(config):
        archs = config.architectures or []
        raise UserError(
            f"teacher {name} is not a fine-tuned sequence classifier (architectures: {', '.join(archs) or 'none'}); "
            "fine-tune it first: hskcache finetune --teacher ENCODER --data DATA --eval-data DEV --out TEACHER"
        )


def head_outputs(config) -> tuple[int, bool]:
    """(logits, regression) of a teacher's head; a bare encoder has none: (0, False), a task-agnostic store."""
    return (config.num_labels, is_regression(config)) if is_task_teacher(config) else (0, False)


def named_labels(config) -> list[str] | None:
    """The head's class names when they are real names (not LABEL_i), so string
    labels in eval data are numbered like the training data's."""
    names = [config.id2label[i] for i in range(config.num_labels)]
    return None if names == [f"LABEL_{i}" for i in range(config.num_labels)] else names


@dataclass
class Teacher:
    model: torch.nn.Module
    tokenizer: object
    name: str
    device: torch.device
    weights_hash: str
    dtype: str = "fp32"  # of the forward: fp32 | bf16 (autocast)
    attentions: bool = True  # whether its forward gives post-softmax attention (an eager path)

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden(self) -> int:
        return self.model.config.hidden_size

    @property
    def task(self) -> bool:
        """A sequence classifier (logits); else a bare encoder, whose store is task-agnostic."""
        return is_task_teacher(self.model.config)

    @property
    def num_labels(self) -> int:
        return head_outputs(self.model.config)[0]

    @property
    def regression(self) -> bool:
        return head_outputs(self.model.config)[1]

    def forward(self, batch: dict[str, torch.Tensor]):
        """Hidden states and attention probabilities (eager attention), and a task teacher's logits."""
        inputs = {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if not takes_token_types(self.model.config):  # RoBERTa: 1 type; MPNet, ModernBERT: none
            inputs.pop("token_type_ids", None)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            return self.model(**inputs, output_hidden_states=True, output_attentions=self.attentions, return_dict=True)


# What a model folder that cannot be loaded raises: no or truncated weights, a bad config,
# a hub id that cannot be fetched.
LOAD_ERRORS = (OSError, ValueError, KeyError, SafetensorError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


MODEL_CONFIG = "config.json"  # what makes a folder a Hugging Face model folder


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a saved model folder (it has its config)."""
    return (Path(path).expanduser() / MODEL_CONFIG).is_file()


def check_model_source(name: str, role: str = "teacher") -> None:
    """Refuse at once a local path that does not exist or is not a model folder, instead of
    asking the hub for it (offline: five retries, then a message about the network).
    A name is a path when it cannot be a hub id (./x, /x, ~/x, a/b/c, x/), or when it is not
    in the hub cache and its first component is a folder here (runs/teacher with runs/)."""
    local = Path(name).expanduser()
    if local.exists():
        if not is_model_folder(local):
            raise UserError(f"{role} {name} is not a model folder (no {MODEL_CONFIG}); "
                            "pass a saved Hugging Face model folder")
        return
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise UserError(f"{role} {name} does not exist; check the path (it cannot be a hub id)") from None
    cached = isinstance(try_to_load_from_cache(name, MODEL_CONFIG), str)
    if not cached and "/" in name and Path(name.split("/")[0]).expanduser().is_dir():
        raise UserError(f"{role} {name} does not exist (but {name.split('/')[0]}/ does, so it is a path); "
                        "check the path")
    if not cached and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise UserError(f"{role} {name} is neither a local folder nor in the hub cache, and HF_HUB_OFFLINE "
                        "is set; pass a local model folder, or fetch it once with network access")


def load_config(name: str, role: str = "teacher") -> PretrainedConfig:
    """A model's config, its source checked first; any failure is one line."""
    check_model_source(name, role)
    try:
        return AutoConfig.from_pretrained(name)
    except LOAD_ERRORS as exc:
        raise UserError(f"cannot load {role} {name!r} ({_first_line(exc)}); "
                        "pass a local model folder or a reachable hub id") from None


def load_model(name: str, role: str = "teacher", cls=AutoModelForSequenceClassification, **kwargs) -> torch.nn.Module:
    """`cls.from_pretrained(name, **kwargs)`; missing or truncated weights are one line. A bare encoder
    (`AutoModel`) is loaded without a pooler (`Family.bare_kwargs`), so every load of it holds the same weights."""
    if cls is AutoModel:
        kwargs = {**family_of(load_config(name, role), role).bare_kwargs, **kwargs}
    try:
        return cls.from_pretrained(name, **kwargs)
    except LOAD_ERRORS as exc:
        raise UserError(f"cannot load the weights of {role} {name} ({_first_line(exc)}); "
                        "save the model again (save_pretrained) or pass another folder") from None


def load_tokenizer(name: str, config: PretrainedConfig, role: str = "teacher"):
    """The model's tokenizer, checked to be a real vocabulary that fits its embeddings.

    Without tokenizer files Transformers quietly builds one of only special tokens
    (every word [UNK]); a larger vocabulary than the embedding table fails mid-run."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except LOAD_ERRORS as exc:
        raise UserError(f"cannot load the tokenizer of {role} {name} ({_first_line(exc)}); "
                        "save it into the folder (tokenizer.save_pretrained)") from None
    vocab = tokenizer.get_vocab()
    if len(set(vocab) - set(tokenizer.all_special_tokens)) == 0:
        raise UserError(f"{role} {name} has no tokenizer files (only {len(vocab)} special tokens: every word would "
                        "be [UNK]); save the tokenizer into the folder (tokenizer.save_pretrained)")
    rows = getattr(config, "vocab_size", None)
    bound = id_bound(tokenizer)
    if rows is not None and bound > rows:
        raise UserError(f"{role} {name}'s tokenizer has ids up to {bound - 1} but the model embeds "
                        f"only {rows} tokens; pass the tokenizer the model was trained with")
    return tokenizer


def load_teacher(name: str, device: str | torch.device = "auto", dtype: str | None = None,
                 bare: bool = False) -> Teacher:
    """A fine-tuned sequence classifier, or with `bare` also a bare encoder of a registered family
    (`AutoModel`), checked to return hidden states and attentions; it runs in `dtype`
    (`hskcache.device.pick_dtype`: bf16 on CUDA, fp32 on CPU by default)."""
    config = load_config(name)
    if not bare:
        require_task_teacher(config, name)
    family_of(config)  # a causal or unregistered model type is refused before its weights load
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model = load_model(name, cls=AutoModelForSequenceClassification if is_task_teacher(config) else AutoModel,
                       attn_implementation="eager")
    tokenizer = load_tokenizer(name, config)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model.to(dev).eval()
    teacher = Teacher(model, tokenizer, name, dev, weights_hash(model), pick_dtype(dtype, dev))
    probe = tokenizer(["a"], return_tensors="pt")
    out = teacher.forward(dict(probe))
    if not out.hidden_states:
        raise UserError(f"teacher {name} returns no hidden states; pass a Hugging Face encoder that does")
    teacher.attentions = bool(out.attentions) and out.attentions[0] is not None  # else only `left` ranks tokens
    return teacher
