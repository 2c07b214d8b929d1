"""ROSITA-style pruning: the fine-tuned teacher cut down to a `RositaForSequenceClassification`.

Keeps the bottom layers; per layer, the heads and FFN neurons of largest
first-order Taylor importance; factorises the word embeddings by truncated SVD.
The architecture itself lives in students/models/rosita.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig

from hskcache.errors import UserError
from hskcache.teacher.families import FFN, HEADS, Axes, family_of, parameter_axes, select_axes
from hskcache.teacher.loading import is_regression, load_model, weights_hash
from students.losses import prediction_loss
from students.models.student import StudentSpec, save_new, teacher_config
from students.models.rosita import WORD_PROJECTION, RositaConfig, RositaForSequenceClassification

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
    (the paper scores on ~10k training sentences). Which weight is whose is the
    teacher family's axis map (`hskcache.teacher.families`).
    """
    tc = teacher_config(teacher_dir)
    family = family_of(tc)
    if not family.rosita:
        raise UserError(f"ROSITA students keep BERT's layout (absolute positions, token types, a pooler), "
                        f"the teacher is {tc.model_type!r}; use `students build tinybert` (its default "
                        f"--init etd-impt extracts a smaller {family.name} student)")
    limits = {"layers": (layers, tc.num_hidden_layers), "heads": (heads, tc.num_attention_heads),
              "ffn": (ffn, tc.intermediate_size), "emb_rank": (emb_rank, min(tc.vocab_size, tc.hidden_size))}
    for name, (value, most) in limits.items():
        if not 1 <= value <= most:
            raise UserError(f"ROSITA {name}={value} is outside 1..{most} for this teacher; pick a value in range")
    teacher = load_model(str(teacher_dir), attn_implementation="eager")
    teacher_hash = weights_hash(teacher)  # as loaded, so it equals the store's teacher_hash
    teacher.float()
    family.truncate(teacher, layers)
    head_scores, neuron_scores = taylor_importance(teacher.to(device), batches)
    kept_heads = head_scores.topk(heads, dim=1).indices.sort(dim=1).values.cpu()
    kept_neurons = neuron_scores.topk(ffn, dim=1).indices.sort(dim=1).values.cpu()

    config = rosita_config(tc, layers, heads, ffn, emb_rank)
    model = RositaForSequenceClassification(config)
    teacher.cpu()
    model.load_state_dict(_pruned_state(teacher, config, kept_heads, kept_neurons))
    spec = StudentSpec("rosita", layers=layers, heads=heads, ffn=ffn, emb_rank=emb_rank)
    kept = {"kept_heads": kept_heads.tolist(), "kept_neurons": kept_neurons.tolist()}
    save_new(model, teacher_dir, out_dir, spec, {"teacher_hash": teacher_hash, **kept})
    return model


def _layer_parameters(model: nn.Module) -> list[tuple[int, str, nn.Parameter, Axes]]:
    """(layer, name, parameter, axis labels) of every encoder-layer parameter."""
    parameters = dict(model.named_parameters())
    axes = parameter_axes(family_of(model.config), model.config, list(parameters))
    return [(layer, name, parameters[name], labels) for name, (layer, labels) in axes.items() if layer is not None]


def _per_index(values: Tensor, labels: Axes, label: str) -> Tensor | None:
    """`values` summed over every axis but the one labelled `label` (None if it has none)."""
    if label not in labels:
        return None
    axis = labels.index(label)
    return values.sum(dim=[a for a in range(values.dim()) if a != axis]) if values.dim() > 1 else values


def taylor_importance(
    model: nn.Module, batches: Iterable[dict[str, Tensor]]
) -> tuple[Tensor, Tensor]:
    """Per layer, Σ over batches of Σ |∂L/∂w · w| per head (layers, heads) and per
    FFN neuron (layers, ffn). L is the KD loss to the stored teacher logits, so no
    gold labels are needed (the truncated teacher no longer reproduces them).

    A head owns the parameter slices on its head axis (its rows of Q, K, V, weights and
    biases, and its input columns of the attention output); a neuron owns the slices on
    its FFN axis (its FFN-in row and bias, its FFN-out column).
    """
    model.eval()
    device = next(model.parameters()).device
    config = model.config
    regression = is_regression(config)
    parameters = _layer_parameters(model)
    n = config.num_hidden_layers
    heads = torch.zeros(n, config.num_attention_heads, device=device)
    neurons = torch.zeros(n, config.intermediate_size, device=device)
    seen = 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        logits = model(**{k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
        prediction_loss(logits, batch["logits"].to(device), 1.0, regression).backward()
        with torch.no_grad():
            for layer, _, parameter, labels in parameters:
                taylor = (parameter.grad * parameter).abs()
                if (per_head := _per_index(taylor, labels, HEADS)) is not None:
                    heads[layer] += per_head.view(config.num_attention_heads, -1).sum(1)
                if (per_neuron := _per_index(taylor, labels, FFN)) is not None:
                    neurons[layer] += per_neuron
        seen += 1
    model.zero_grad(set_to_none=True)
    if not seen:
        raise UserError("no batches to score heads and FFN neurons on; give the build a non-empty training set")
    return heads, neurons


def _pruned_state(teacher: nn.Module, config: RositaConfig, kept_heads: Tensor,
                  kept_neurons: Tensor) -> dict[str, Tensor]:
    """The student's state dict: the teacher's parameters with the kept heads' / neurons' slices
    along their head / FFN axes, and the word embeddings as SVD factors."""
    state = teacher.state_dict()
    head_index = (kept_heads[:, :, None] * config.head_dim + torch.arange(config.head_dim)).flatten(1)
    for layer, name, parameter, labels in _layer_parameters(teacher):
        kept = {HEADS: head_index[layer], FFN: kept_neurons[layer]}
        state[name] = select_axes(parameter.detach(), labels, kept.get).contiguous()
    words = next(n for n, p in teacher.named_parameters() if p is teacher.get_input_embeddings().weight)
    state[words], state[WORD_PROJECTION] = factorize_embedding(state[words], config.embedding_rank)
    return state


def factorize_embedding(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Truncated SVD W ≈ A B: A (V, r) for nn.Embedding and B^T (d, r) for
    nn.Linear(r, d). √S goes to both factors so neither starts at a much larger
    scale than the other under one learning rate. Computed in float64 so full
    rank reproduces W to float32 precision."""
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(weight.dtype), (vh[:rank].T * root).to(weight.dtype)
