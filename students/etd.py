"""Extract-Then-Distill: a narrower, shallower BERT student initialised from the teacher.

Width-wise extraction with *hidden consistency* (ETD §3.1, SPEC "Teacher-initialised
TinyBERT-style students"): one set of d_S hidden-dimension indices is used in every
module that reads or writes the residual stream, so residual connections still add
matching dimensions. Every head is kept and shrunk to d_S / A head neurons; each
layer keeps its own FFN neurons. Indices come from first-order Taylor importance
(ETD-Impt, Eqs. 5–8) or a seeded draw (ETD-Rand). Then uniform (or bottom/top)
layer selection picks which teacher layers the student's layers start from.

The pieces are kept apart: `layer_selection` and the plans are pure index
arithmetic, `taylor_neuron_importance` runs the teacher, `extract_state` slices a
state dict, and `build_extracted` writes a student folder.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, PretrainedConfig

from hskcache.errors import UserError
from hskcache.teacher import weights_hash
from students.models import StudentSpec, save_new, teacher_config

LAYER_SELECTIONS = ("uniform", "bottom", "top")
# --init values that extract from the teacher; "random" and a checkpoint folder are models.build_tinybert's.
EXTRACTING_INITS = ("etd-impt", "etd-rand", "teacher-layers")


def layer_selection(teacher_layers: int, student_layers: int, strategy: str = "uniform") -> list[int]:
    """ETD §3.2: the teacher layers (1-based; 0 is the embeddings) student layers 1..M start from.

    uniform S = {0, ⌊N/M⌋, ⌊2N/M⌋, …, N}; bottom {0, 1, …, M}; top {0, N−M+1, …, N}.
    """
    n, m = teacher_layers, student_layers
    if not 1 <= m <= n:
        raise UserError(f"a {m}-layer student cannot be extracted from a {n}-layer teacher; use 1..{n} layers")
    if strategy == "uniform":
        return [k * n // m for k in range(1, m + 1)]
    if strategy == "bottom":
        return list(range(1, m + 1))
    if strategy == "top":
        return list(range(n - m + 1, n + 1))
    raise UserError(f"--layer-selection {strategy!r} is unknown; use one of {', '.join(LAYER_SELECTIONS)}")


@dataclass(frozen=True)
class Importance:
    """Summed first-order Taylor scores |∂L/∂x · x| of the teacher's neurons."""

    hidden: Tensor  # (d_T,): Eq. 8, summed over the inputs of every layer and the last output
    heads: Tensor  # (N, A, d_k): head neurons (query, key and context), Eq. 6
    ffn: Tensor  # (N, F): FFN intermediate neurons, Eq. 5


@dataclass(frozen=True)
class ExtractionPlan:
    """Which teacher rows/columns the student keeps. `layers` are 0-based teacher layer indices."""

    layers: list[int]
    hidden: Tensor  # (d_S,) sorted hidden-dimension indices, shared by every module
    head_rows: list[Tensor]  # per student layer: (A · d_S/A,) rows of Q/K/V = columns of attention-out
    ffn_rows: list[Tensor]  # per student layer: (F_S,) FFN neurons

    def to_json(self) -> dict:
        return {"teacher_layers": [i + 1 for i in self.layers], "hidden": self.hidden.tolist(),
                "head_rows": [r.tolist() for r in self.head_rows], "ffn_rows": [r.tolist() for r in self.ffn_rows]}


def _top(scores: Tensor, k: int) -> Tensor:
    return scores.topk(k).indices.sort().values


def plan_from_scores(importance: Importance, layers: list[int], hidden: int, ffn: int) -> ExtractionPlan:
    """Keep the highest-scoring hidden dimensions (one set), head neurons per head and FFN neurons per layer."""
    heads, head_dim = importance.heads.shape[1:]
    size = hidden // heads
    offsets = torch.arange(heads)[:, None] * head_dim
    head_rows = [(torch.stack([_top(importance.heads[i, h], size) for h in range(heads)]) + offsets).flatten()
                 for i in layers]
    return ExtractionPlan(layers, _top(importance.hidden, hidden), head_rows,
                          [_top(importance.ffn[i], ffn) for i in layers])


def random_importance(config: PretrainedConfig, seed: int) -> Importance:
    """ETD-Rand: seeded random scores, so the kept indices are a uniform random draw."""
    generator = torch.Generator().manual_seed(seed)
    n, heads = config.num_hidden_layers, config.num_attention_heads
    return Importance(torch.rand(config.hidden_size, generator=generator),
                      torch.rand(n, heads, config.hidden_size // heads, generator=generator),
                      torch.rand(n, config.intermediate_size, generator=generator))


def full_importance(config: PretrainedConfig) -> Importance:
    """Equal scores: with every dimension kept, the plan is the identity (teacher-layers init)."""
    n, heads = config.num_hidden_layers, config.num_attention_heads
    return Importance(torch.zeros(config.hidden_size), torch.zeros(n, heads, config.hidden_size // heads),
                      torch.zeros(n, config.intermediate_size))


LossFn = Callable[[Tensor, dict[str, Tensor]], Tensor]  # (logits, batch) -> scalar loss


def taylor_neuron_importance(model: BertForSequenceClassification, batches: Iterable[dict[str, Tensor]],
                             loss_fn: LossFn) -> Importance:
    """ETD Eqs. 5–8 on `batches`: per example |Σ_tokens ∂L/∂x · x| of each neuron x, summed over examples.

    Hidden neurons are the inputs of every layer's MHA (layer 0 is the embeddings'
    output) and the last layer's output, summed over layers (Eq. 8). Head neurons
    are the query, key and context (attention-out input) units of a head. Padding
    positions carry no gradient (masked keys, only [CLS] is classified).
    """
    model.eval()
    device = next(model.parameters()).device
    config = model.config
    layers = model.bert.encoder.layer
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    total = Importance(torch.zeros(config.hidden_size, device=device),
                       torch.zeros(len(layers), heads, head_dim, device=device),
                       torch.zeros(len(layers), config.intermediate_size, device=device))
    captured: dict[tuple[str, int], Tensor] = {}

    def keep(name: str, i: int):
        def hook(module, args, output=None):
            value = output if output is not None else args[0]
            value.retain_grad()
            captured[name, i] = value
        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles += [layer.attention.self.query.register_forward_hook(keep("query", i)),
                    layer.attention.self.key.register_forward_hook(keep("key", i)),
                    layer.attention.output.dense.register_forward_pre_hook(keep("context", i)),
                    layer.intermediate.register_forward_hook(keep("ffn", i))]
    seen = 0
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}
            out = model(**inputs, output_hidden_states=True)
            for state in out.hidden_states:
                state.retain_grad()
            loss_fn(out.logits.float(), batch).backward()
            with torch.no_grad():
                for state in out.hidden_states:
                    total.hidden.add_(_score(state))
                for i in range(len(layers)):
                    for name in ("query", "key", "context"):
                        total.heads[i].add_(_score(captured[name, i]).view(heads, head_dim))
                    total.ffn[i].add_(_score(captured["ffn", i]))
            seen += 1
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    if not seen:
        raise UserError("no examples to score the teacher's neurons on; pass a non-empty --cache or --data")
    return Importance(total.hidden.cpu(), total.heads.cpu(), total.ffn.cpu())


def _score(x: Tensor) -> Tensor:
    """(B, T, D) activation with its gradient -> (D,) Σ_examples |Σ_tokens grad · x|."""
    return (x.grad * x).sum(1).abs().sum(0)


def extract_state(teacher_state: dict[str, Tensor], plan: ExtractionPlan) -> dict[str, Tensor]:
    """The student's BertForSequenceClassification state dict, sliced from the teacher's.

    Hidden indices slice every residual-stream side (embeddings, LayerNorms, Q/K/V and
    FFN-in columns, attention-out and FFN-out rows, the pooler both ways, the
    classifier's columns); head rows slice Q/K/V rows and attention-out columns;
    FFN rows slice FFN-in rows and FFN-out columns.
    """
    h = plan.hidden
    state: dict[str, Tensor] = {}
    for key, value in teacher_state.items():
        if key.startswith("bert.encoder.layer."):
            continue
        if key.startswith("bert.embeddings.") and key.endswith("_embeddings.weight"):
            state[key] = value[:, h]
        elif key.startswith("bert.embeddings.LayerNorm."):
            state[key] = value[h]
        elif key == "bert.pooler.dense.weight":
            state[key] = value[h][:, h]
        elif key == "bert.pooler.dense.bias":
            state[key] = value[h]
        elif key == "classifier.weight":
            state[key] = value[:, h]
        else:
            state[key] = value  # classifier.bias
    for student, (teacher, heads, ffn) in enumerate(zip(plan.layers, plan.head_rows, plan.ffn_rows)):
        src, dst = f"bert.encoder.layer.{teacher}.", f"bert.encoder.layer.{student}."
        w = {name: teacher_state[src + name] for name in _LAYER_KEYS}
        for proj in ("query", "key", "value"):
            state[dst + f"attention.self.{proj}.weight"] = w[f"attention.self.{proj}.weight"][heads][:, h]
            state[dst + f"attention.self.{proj}.bias"] = w[f"attention.self.{proj}.bias"][heads]
        state[dst + "attention.output.dense.weight"] = w["attention.output.dense.weight"][h][:, heads]
        state[dst + "intermediate.dense.weight"] = w["intermediate.dense.weight"][ffn][:, h]
        state[dst + "intermediate.dense.bias"] = w["intermediate.dense.bias"][ffn]
        state[dst + "output.dense.weight"] = w["output.dense.weight"][h][:, ffn]
        for name in ("attention.output.dense.bias", "attention.output.LayerNorm.weight",
                     "attention.output.LayerNorm.bias", "output.dense.bias", "output.LayerNorm.weight",
                     "output.LayerNorm.bias"):
            state[dst + name] = w[name][h]
    return {key: value.contiguous().clone() for key, value in state.items()}


_LAYER_KEYS = tuple(f"attention.self.{p}.{t}" for p in ("query", "key", "value") for t in ("weight", "bias")) + (
    "attention.output.dense.weight", "attention.output.dense.bias", "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias", "intermediate.dense.weight", "intermediate.dense.bias",
    "output.dense.weight", "output.dense.bias", "output.LayerNorm.weight", "output.LayerNorm.bias")


def student_config(teacher: PretrainedConfig, layers: int, hidden: int, ffn: int) -> PretrainedConfig:
    """The teacher's config (activation, eps, vocabulary, labels) at the student's size; heads stay the teacher's."""
    config = copy.deepcopy(teacher)
    config.num_hidden_layers, config.hidden_size, config.intermediate_size = layers, hidden, ffn
    config.architectures = ["BertForSequenceClassification"]
    return config


def check_shape(teacher: PretrainedConfig, init: str, spec: StudentSpec) -> None:
    """Refuse, in one line, a shape the teacher's weights cannot give."""
    if teacher.model_type != "bert":
        raise UserError(f"--init {init} extracts a BERT teacher's weights, the teacher is {teacher.model_type!r}; "
                        "use --init random")
    heads = teacher.num_attention_heads
    if spec.heads != heads:
        raise UserError(f"--init {init} keeps the teacher's {heads} heads (and shrinks their size), "
                        f"got --heads {spec.heads}; pass --heads {heads} or --init random")
    limits = {"layers": (spec.layers, teacher.num_hidden_layers), "hidden": (spec.hidden, teacher.hidden_size),
              "ffn": (spec.ffn, teacher.intermediate_size)}
    for name, (value, most) in limits.items():
        if not 1 <= value <= most:
            raise UserError(f"--{name} {value} is outside 1..{most} for this teacher; --init {init} can only shrink it")
    if spec.hidden % heads:
        raise UserError(f"--hidden {spec.hidden} is not divisible by the teacher's {heads} heads; "
                        f"pick a multiple of {heads}")
    if init == "teacher-layers" and (spec.hidden, spec.ffn) != (teacher.hidden_size, teacher.intermediate_size):
        raise UserError(f"--init teacher-layers keeps the teacher's width (hidden {teacher.hidden_size}, "
                        f"FFN {teacher.intermediate_size}); drop --hidden/--ffn or use --init etd-impt")


def build_extracted(teacher_dir: str | Path, spec: StudentSpec, init: str, out_dir: str | Path,
                    batches: Iterable[dict[str, Tensor]] | None = None, loss_fn: LossFn | None = None,
                    selection: str = "uniform", seed: int = 0,
                    device: str | torch.device = "cpu") -> BertForSequenceClassification:
    """Build and save a `spec`-shaped student extracted from the teacher (`init` one of EXTRACTING_INITS).

    etd-impt scores neurons with `loss_fn` on `batches` (cap them yourself; the paper
    uses 10k sentences); etd-rand draws them with `seed`; teacher-layers keeps all.
    """
    config = teacher_config(teacher_dir)
    check_shape(config, init, spec)
    layers = [i - 1 for i in layer_selection(config.num_hidden_layers, spec.layers, selection)]
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="eager")
    teacher_hash = weights_hash(teacher)
    teacher.float()
    if init == "etd-impt":
        if batches is None or loss_fn is None:
            raise UserError("--init etd-impt scores the teacher's neurons: pass --cache STORE or --data DATA")
        importance = taylor_neuron_importance(teacher.to(device), batches, loss_fn)
        teacher.cpu()
    elif init == "etd-rand":
        importance = random_importance(config, seed)
    elif init == "teacher-layers":
        importance = full_importance(config)
    else:
        raise UserError(f"--init {init} is not an extraction; use one of {', '.join(EXTRACTING_INITS)}")
    plan = plan_from_scores(importance, layers, spec.hidden, spec.ffn)
    model = BertForSequenceClassification(student_config(config, spec.layers, spec.hidden, spec.ffn))
    model.load_state_dict(extract_state(teacher.state_dict(), plan))  # strict: nothing left at random init
    save_new(model, teacher_dir, out_dir, spec, {"init": init, "layer_selection": selection, "seed": seed,
                                                  "teacher_hash": teacher_hash, "extraction": plan.to_json()})
    return model

