"""ROSITA-style pruning: the fine-tuned teacher cut down to a `RositaForSequenceClassification`.

Keeps the bottom layers; per layer, the heads and FFN neurons of largest
first-order Taylor importance; factorises the word embeddings by truncated SVD.
The architecture itself lives in students/rosita.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import BertForSequenceClassification, PretrainedConfig

from hskcache.errors import UserError
from hskcache.teacher import is_regression, load_model, weights_hash
from students.losses import prediction_loss
from students.models import StudentSpec, save_new, teacher_config
from students.rosita import RositaConfig, RositaForSequenceClassification

# Teacher config keys that describe the teacher's own class and file, not the student.
_NOT_INHERITED = ("model_type", "architectures", "transformers_version", "_name_or_path", "auto_map")


def rosita_config(teacher: PretrainedConfig, layers: int, heads: int, ffn: int, emb_rank: int) -> RositaConfig:
    """The teacher's config (labels, positions, dropout...) with the kept counts;
    head_dim stays the teacher's."""
    settings = {k: v for k, v in teacher.to_dict().items() if k not in _NOT_INHERITED}
    settings.update(num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
                    head_dim=teacher.hidden_size // teacher.num_attention_heads, embedding_rank=emb_rank)
    return RositaConfig(**settings)



def build_rosita(
    teacher_dir: str | Path,
    batches: Iterable[dict[str, Tensor]],
    layers: int,
    heads: int,
    ffn: int,
    emb_rank: int,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
) -> RositaForSequenceClassification:
    """Prune the fine-tuned teacher into a ROSITA-style student and save it.

    Keeps the bottom `layers` layers; in each, the `heads` heads and `ffn` FFN
    neurons of largest first-order Taylor importance on `batches` (store batches:
    `input_ids`, `attention_mask`, `token_type_ids`, teacher `logits`); factorises
    the word embeddings by truncated SVD to rank `emb_rank`. Cap `batches` yourself
    (the paper scores on ~10k training sentences).
    """
    tc = teacher_config(teacher_dir)
    if tc.model_type != "bert":
        raise UserError(f"ROSITA students need a BERT teacher, {teacher_dir} is {tc.model_type!r}; "
                        "use a TinyBERT-style student instead")
    limits = {"layers": (layers, tc.num_hidden_layers), "heads": (heads, tc.num_attention_heads),
              "ffn": (ffn, tc.intermediate_size), "emb_rank": (emb_rank, min(tc.vocab_size, tc.hidden_size))}
    for name, (value, most) in limits.items():
        if not 1 <= value <= most:
            raise UserError(f"ROSITA {name}={value} is outside 1..{most} for this teacher; pick a value in range")
    teacher = load_model(str(teacher_dir), attn_implementation="eager")
    teacher_hash = weights_hash(teacher)  # as loaded, so it equals the store's teacher_hash
    teacher.float()
    teacher.bert.encoder.layer = teacher.bert.encoder.layer[:layers]
    teacher.config.num_hidden_layers = layers
    head_scores, neuron_scores = taylor_importance(teacher.to(device), batches)
    kept_heads = head_scores.topk(heads, dim=1).indices.sort(dim=1).values.cpu()
    kept_neurons = neuron_scores.topk(ffn, dim=1).indices.sort(dim=1).values.cpu()

    config = rosita_config(tc, layers, heads, ffn, emb_rank)
    model = RositaForSequenceClassification(config)
    model.load_state_dict(_pruned_state(teacher.cpu().state_dict(), config, kept_heads, kept_neurons))
    spec = StudentSpec("rosita", layers=layers, heads=heads, ffn=ffn, emb_rank=emb_rank)
    kept = {"kept_heads": kept_heads.tolist(), "kept_neurons": kept_neurons.tolist()}
    save_new(model, teacher_dir, out_dir, spec, {"teacher_hash": teacher_hash, **kept})
    return model


def taylor_importance(
    model: BertForSequenceClassification, batches: Iterable[dict[str, Tensor]]
) -> tuple[Tensor, Tensor]:
    """Per layer, Σ over batches of Σ |∂L/∂w · w| per head (layers, heads) and per
    FFN neuron (layers, ffn). L is the KD loss to the stored teacher logits, so no
    gold labels are needed (the truncated teacher no longer reproduces them).

    A head owns its rows of Q, K, V (weights and biases) and its input columns of
    the attention output dense; a neuron owns its intermediate row and bias and
    its output-dense column.
    """
    model.eval()
    device = next(model.parameters()).device
    config = model.config
    regression = is_regression(config)
    layers = model.bert.encoder.layer
    heads = torch.zeros(len(layers), config.num_attention_heads, device=device)
    neurons = torch.zeros(len(layers), config.intermediate_size, device=device)
    seen = 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        logits = model(**{k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
        prediction_loss(logits, batch["logits"].to(device), 1.0, regression).backward()
        with torch.no_grad():
            for i, layer in enumerate(layers):
                attention = layer.attention
                rows = sum(_taylor(lin.weight).sum(1) + _taylor(lin.bias)
                           for lin in (attention.self.query, attention.self.key, attention.self.value))
                per_row = rows + _taylor(attention.output.dense.weight).sum(0)
                heads[i] += per_row.view(config.num_attention_heads, -1).sum(1)
                inner, outer = layer.intermediate.dense, layer.output.dense
                neurons[i] += _taylor(inner.weight).sum(1) + _taylor(inner.bias) + _taylor(outer.weight).sum(0)
        seen += 1
    model.zero_grad(set_to_none=True)
    if not seen:
        raise UserError("no batches to score heads and FFN neurons on; give the build a non-empty training set")
    return heads, neurons


def _taylor(parameter: nn.Parameter) -> Tensor:
    return (parameter.grad * parameter).abs()


def _pruned_state(teacher_state: dict[str, Tensor], config: RositaConfig, kept_heads: Tensor,
                  kept_neurons: Tensor) -> dict[str, Tensor]:
    """The student's state dict: kept slices of the teacher's, plus the SVD factors."""
    state = {key: value for key, value in teacher_state.items() if not key.startswith("bert.encoder.layer.")}
    words, projection = "bert.embeddings.word_embeddings.weight", "bert.embeddings.word_projection.weight"
    state[words], state[projection] = factorize_embedding(state[words], config.embedding_rank)
    offsets = torch.arange(config.head_dim)
    for i in range(config.num_hidden_layers):
        head_index = (kept_heads[i, :, None] * config.head_dim + offsets).flatten()
        prefix = f"bert.encoder.layer.{i}."
        for key, value in teacher_state.items():
            if key.startswith(prefix):
                name = key[len(prefix):]
                state[key] = _slice(name, value, head_index, kept_neurons[i]).contiguous()
    return state


def _slice(name: str, value: Tensor, head_index: Tensor, neuron_index: Tensor) -> Tensor:
    """Keep the given heads' / neurons' rows (producers) or columns (consumers)."""
    if name.startswith("attention.self."):
        return value[head_index]
    if name == "attention.output.dense.weight":
        return value[:, head_index]
    if name.startswith("intermediate.dense."):
        return value[neuron_index]
    if name == "output.dense.weight":
        return value[:, neuron_index]
    return value


def factorize_embedding(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Truncated SVD W ≈ A B: A (V, r) for nn.Embedding and B^T (d, r) for
    nn.Linear(r, d). √S goes to both factors so neither starts at a much larger
    scale than the other under one learning rate. Computed in float64 so full
    rank reproduces W to float32 precision."""
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(weight.dtype), (vh[:rank].T * root).to(weight.dtype)
