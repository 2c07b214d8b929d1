"""Loading a fine-tuned teacher and running it with hidden states and attentions."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from .device import autocast, pick_device, pick_dtype
from .errors import UserError


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

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_labels(self) -> int:
        return self.model.config.num_labels

    @property
    def regression(self) -> bool:
        return is_regression(self.model.config)

    def forward(self, batch: dict[str, torch.Tensor]):
        """Logits, hidden states and attention probabilities (eager attention)."""
        inputs = {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if getattr(self.model.config, "type_vocab_size", 0) < 2:  # RoBERTa: 1; MPNet: no segments at all
            inputs.pop("token_type_ids", None)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            return self.model(**inputs, output_hidden_states=True, output_attentions=True, return_dict=True)


def load_teacher(name: str, device: str | torch.device = "auto", dtype: str | None = None) -> Teacher:
    """A fine-tuned sequence classifier, checked to be one and to return attentions;
    it runs in `dtype` (`hskcache.device.pick_dtype`: bf16 on CUDA, fp32 on CPU by default)."""
    local = Path(name).expanduser()
    if (name.startswith((".", "/", "~")) or local.exists()) and not (local / "config.json").is_file():
        raise UserError(f"teacher {name} is not a model folder (no config.json); pass a fine-tuned Hugging Face model folder or hub id")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load teacher {name!r} ({first}); pass a local model folder or a reachable hub id") from None
    archs = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise UserError(
            f"teacher {name} is not a fine-tuned sequence classifier (architectures: {', '.join(archs) or 'none'}); "
            "fine-tune it first, e.g. with tools/finetune_teacher.py"
        )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model = AutoModelForSequenceClassification.from_pretrained(name, attn_implementation="eager")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model.to(dev).eval()
    tokenizer = AutoTokenizer.from_pretrained(name)
    teacher = Teacher(model, tokenizer, name, dev, weights_hash(model), pick_dtype(dtype, dev))
    probe = tokenizer(["a"], return_tensors="pt")
    out = teacher.forward(dict(probe))
    if not out.attentions or out.attentions[0] is None or not out.hidden_states:
        raise UserError(f"teacher {name} returns no attention probabilities or hidden states; it must support eager attention")
    return teacher
