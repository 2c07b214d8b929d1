"""Extract-Then-Distill: a narrower, shallower student of the teacher's own family, initialised from it.

Width-wise extraction with *hidden consistency* (ETD §3.1, SPEC "Teacher-initialised
students"): one set of d_S hidden-dimension indices is used in every module that
reads or writes the residual stream, so residual connections still add matching
dimensions. Every head is kept and shrunk to d_S / A head neurons (rotary families
keep the head size and drop whole heads instead); each layer keeps its own FFN
neurons. Indices come from first-order Taylor importance (ETD-Impt, Eqs. 5–8) or a
seeded draw (ETD-Rand). Then uniform (or bottom/top) layer selection picks which
teacher layers the student's layers start from.

Where each family keeps which weight, and which axis of it is which, is
`hskcache.teacher.families`' alone: here the plan is index arithmetic, importance runs
the teacher through the family's modules, and slicing follows the axis labels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModel, AutoModelForSequenceClassification, PretrainedConfig

from hskcache.data import known_labels
from hskcache.errors import UserError
from hskcache.teacher.families import BLOCKS, FFN, GLU, HEADS, HIDDEN, QKV, Family, family_of, parameter_axes, \
    select_axes, takes_token_types
from hskcache.teacher.loading import is_regression, is_task_teacher, load_model, weights_hash
from students.models.student import StudentSpec, save_new, teacher_config

# ETD §3.2: the teacher layers (1-based; 0 is the embeddings) an M-layer student's layers 1..M start from, of an
# N-layer teacher: uniform S = {0, ⌊N/M⌋, ⌊2N/M⌋, …, N}; bottom {0, 1, …, M}; top {0, N−M+1, …, N}.
# (--layer-selection's choices: the build's settings refuse any other name.)
LAYER_SELECTIONS: dict[str, Callable[[int, int], list[int]]] = {
    "uniform": lambda n, m: [k * n // m for k in range(1, m + 1)],
    "bottom": lambda n, m: list(range(1, m + 1)),
    "top": lambda n, m: list(range(n - m + 1, n + 1)),
}
# --init values that extract from the teacher; "random" and a checkpoint folder are models.student.build_tinybert's.
EXTRACTING_INITS = ("etd-impt", "etd-rand", "teacher-layers")
GAUSSIAN_DRAWS = 8  # draws ε per row of a bare encoder's expected score (`taylor_neuron_importance`)


def layer_selection(teacher_layers: int, student_layers: int, strategy: str = "uniform") -> list[int]:
    """The teacher layers (1-based) student layers 1..M start from, by `strategy` (`LAYER_SELECTIONS`)."""
    n, m = teacher_layers, student_layers
    if not 1 <= m <= n:
        raise UserError(f"a {m}-layer student cannot be extracted from a {n}-layer teacher; use 1..{n} layers")
    return LAYER_SELECTIONS[strategy](n, m)


@dataclass(frozen=True)
class Importance:
    """Summed first-order scores of the teacher's neurons (SPEC: task loss on labelled rows,
    the expected Fisher score under the teacher's own p_T on the others)."""

    hidden: Tensor  # (d_T,): Eq. 8, summed over the inputs of every layer and the last output
    heads: Tensor  # (N, A, d_k): head neurons (query, key and context), Eq. 6
    ffn: Tensor  # (N, F): FFN intermediate neurons, Eq. 5


@dataclass(frozen=True)
class ExtractionPlan:
    """Which teacher rows/columns the student keeps. `layers` are 0-based teacher layer indices."""

    layers: list[int]
    hidden: Tensor  # (d_S,) sorted hidden-dimension indices, shared by every module
    head_rows: list[Tensor]  # per student layer: kept rows of one of Q/K/V = columns of attention-out
    ffn_rows: list[Tensor]  # per student layer: (F_S,) FFN neurons

    def to_json(self) -> dict:
        return {"teacher_layers": [i + 1 for i in self.layers], "hidden": self.hidden.tolist(),
                "head_rows": [r.tolist() for r in self.head_rows], "ffn_rows": [r.tolist() for r in self.ffn_rows]}

    def index(self, label: str, layer: int | None, heads_width: int, ffn_width: int) -> Tensor:
        """The kept indices along an axis labelled `label` (families.BLOCKS: a fused axis repeats
        the index in each of its blocks) of a parameter of student layer `layer`."""
        if label == HIDDEN:
            return self.hidden
        rows, width = {HEADS: (self.head_rows, heads_width), QKV: (self.head_rows, heads_width),
                       FFN: (self.ffn_rows, ffn_width), GLU: (self.ffn_rows, ffn_width)}[label]
        return torch.cat([rows[layer] + block * width for block in range(BLOCKS[label])])


def _top(scores: Tensor, k: int) -> Tensor:
    return scores.topk(k).indices.sort().values


def plan_from_scores(importance: Importance, layers: list[int], hidden: int, ffn: int,
                     rotary: bool = False) -> ExtractionPlan:
    """Keep the highest-scoring hidden dimensions (one set) and FFN neurons per layer; per head its
    best hidden // A neurons, or (rotary) the hidden // d_k heads of largest summed importance."""
    heads, head_dim = importance.heads.shape[1:]
    offsets = torch.arange(heads)[:, None] * head_dim
    if rotary:
        units = torch.arange(head_dim)
        head_rows = [(_top(importance.heads[i].sum(-1), hidden // head_dim)[:, None] * head_dim + units).flatten()
                     for i in layers]
    else:
        size = hidden // heads
        head_rows = [(torch.stack([_top(importance.heads[i, h], size) for h in range(heads)]) + offsets).flatten()
                     for i in layers]
    return ExtractionPlan(layers, _top(importance.hidden, hidden), head_rows,
                          [_top(importance.ffn[i], ffn) for i in layers])


def _sizes(config: PretrainedConfig) -> tuple[int, int, int, int]:
    family = family_of(config)
    heads, ffn = config.num_attention_heads, getattr(config, family.ffn_size)
    return config.num_hidden_layers, heads, family.head_dim(config), ffn


def random_importance(config: PretrainedConfig, seed: int) -> Importance:
    """ETD-Rand: seeded random scores, so the kept indices are a uniform random draw."""
    generator = torch.Generator().manual_seed(seed)
    n, heads, head_dim, ffn = _sizes(config)
    return Importance(torch.rand(config.hidden_size, generator=generator),
                      torch.rand(n, heads, head_dim, generator=generator), torch.rand(n, ffn, generator=generator))


def full_importance(config: PretrainedConfig) -> Importance:
    """Equal scores: with every dimension kept, the plan is the identity (teacher-layers init)."""
    n, heads, head_dim, ffn = _sizes(config)
    return Importance(torch.zeros(config.hidden_size), torch.zeros(n, heads, head_dim), torch.zeros(n, ffn))


def model_inputs(config: PretrainedConfig, batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """The inputs a family's forward takes from a batch (no token types where it has none)."""
    names = ("input_ids", "attention_mask", "token_type_ids") if takes_token_types(config) else \
        ("input_ids", "attention_mask")
    return {k: batch[k].to(device) for k in names if k in batch}


def taylor_neuron_importance(model: nn.Module, batches: Iterable[dict[str, Tensor]],
                             draws: int = GAUSSIAN_DRAWS, seed: int = 0) -> Importance:
    """ETD Eqs. 5–8 on `batches`, from a loss that has a gradient at the teacher (SPEC).

    A row with a gold label (`labels`; -1 or NaN when unknown) scores |Σ_tokens ∂L/∂x · x| of
    its task loss L (cross-entropy, or squared error for regression); a row without one
    scores the expected Fisher term Σ_y p_T(y) (Σ_tokens ∂ log p_T(y)/∂x · x)² under the
    teacher's own prediction (regression: (∂ŷ/∂x · x)², a unit-variance Gaussian). A bare
    encoder (no head, no logits: the general stage) has neither labels nor p_T: its output
    is read as a unit-variance Gaussian p(y|x) = N(h_L(x), I) over the last layer's states at
    the real tokens, and a row scores E_y (Σ_tokens ∂ log p(y)/∂x · x)² = E_ε (∂(ε·h_L)/∂x · x)²,
    estimated with `draws` seeded draws ε ~ N(0, I) per row (`gaussian_draws`), keyed by the
    row's `example_id`, which a bare encoder's batches must carry. Scores
    are summed over rows, so they do not depend on how rows are batched. Hidden neurons
    are every hidden state (Eq. 8); head neurons the query, key and context units; FFN
    neurons the input of the FFN's output matrix. Padding carries no gradient.
    """
    model.eval()
    device = next(model.parameters()).device
    config = model.config
    family = family_of(config)
    regression = is_regression(config)
    layers = family.layer_list(model)
    n, heads, head_dim, ffn = _sizes(config)
    totals: dict[str, Tensor] = {}
    acts: dict[str, Tensor] = {}

    def keep(name: str, pre: bool):
        def hook(module, args, output=None):  # the first call: DeBERTa's shared query/key projections
            acts.setdefault(name, args[0] if pre else output)  # then also project the position embeddings
        return hook

    handles = []
    for i, layer in enumerate(layers):
        seen_paths = set()
        for module, projection in family.projections(layer)[:2]:  # query, key
            if projection.path not in seen_paths:
                seen_paths.add(projection.path)
                handles.append(module.register_forward_hook(keep(f"proj{i}:{projection.path}", False)))
        handles += [layer.get_submodule(family.attn_out).register_forward_pre_hook(keep(f"context{i}", True)),
                    layer.get_submodule(family.ffn_out).register_forward_pre_hook(keep(f"ffn{i}", True))]
    rows = 0
    try:
        for batch in batches:
            inputs = model_inputs(config, batch, device)
            mask = inputs["attention_mask"].bool()
            out = model(**inputs, output_hidden_states=True)
            names = [*acts, *(f"hidden{j}" for j in range(len(out.hidden_states)))]
            tensors = [*acts.values(), *out.hidden_states]
            if getattr(out, "logits", None) is None:  # a bare encoder: the Gaussian rule on its last states
                scores = _gaussian_scores(out.hidden_states[-1], tensors, mask, batch["example_id"].tolist(), draws,
                                          seed)
                for name, score in zip(names, scores):
                    totals[name] = totals[name] + score if name in totals else score
                rows += len(mask)
                acts.clear()
                continue
            logits = out.logits if out.logits.dtype == torch.float64 else out.logits.float()
            known = torch.zeros(len(logits), dtype=torch.bool, device=device)
            if "labels" in batch:
                known = known_labels(batch["labels"].to(device), regression)
            scores = [torch.zeros(t.shape[-1], dtype=torch.float64, device=device) for t in tensors]
            if known.any():
                labels = batch["labels"].to(device)[known]
                loss = (F.mse_loss(logits[known, 0], labels.float(), reduction="sum") if regression
                        else F.cross_entropy(logits[known], labels.long(), reduction="sum"))
                for score, term in zip(scores, _first_order(loss, tensors, mask)):
                    score += term[known].abs().sum(0)
            unknown = ~known
            if unknown.any():
                if regression:
                    outcomes = [(logits[:, 0], torch.ones_like(logits[:, 0]))]
                else:
                    log_p = torch.log_softmax(logits, -1)
                    outcomes = [(log_p[:, y], log_p[:, y].detach().exp()) for y in range(log_p.shape[-1])]
                for target, weight in outcomes:
                    terms = _first_order(target[unknown].sum(), tensors, mask)
                    for score, term in zip(scores, terms):
                        score += (weight[unknown, None].double() * term[unknown].double() ** 2).sum(0)
            for name, score in zip(names, scores):
                totals[name] = totals[name] + score if name in totals else score
            rows += len(logits)
            acts.clear()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    if not rows:
        raise UserError("no examples to score the teacher's neurons on; pass a non-empty --store or --data")
    return _collect(family, totals, layers, n, heads, head_dim)


def gaussian_draws(seed: int, key: int, draws: int, tokens: int, width: int) -> Tensor:
    """Row `key`'s draws ε ~ N(0, I), (draws, tokens, width) over its real tokens: seeded by (seed, key)
    alone, so a row scores the same whatever batch, padding or device it is read in."""
    state = int(np.random.SeedSequence([seed, key]).generate_state(1, np.uint64)[0] >> 1)
    return torch.randn(draws, tokens, width, generator=torch.Generator().manual_seed(state), dtype=torch.float64)


def _gaussian_scores(last: Tensor, tensors: list[Tensor], mask: Tensor, keys: list[int], draws: int,
                     seed: int) -> list[Tensor]:
    """Σ_rows mean over `draws` of (Σ_tokens ∂(ε·h_L)/∂x · x)² per neuron of each activation (the
    expected score of N(h_L, I): ∂ log p(y)/∂h_L = y − h_L = ε); padding has no draw."""
    eps = torch.zeros(draws, *last.shape, dtype=torch.float64)
    for row, key in enumerate(keys):
        real = mask[row].cpu()
        eps[:, row, real] = gaussian_draws(seed, key, draws, int(real.sum()), last.shape[-1])
    eps = eps.to(device=last.device, dtype=last.dtype)
    scores = [torch.zeros(t.shape[-1], dtype=torch.float64, device=last.device) for t in tensors]
    for k in range(draws):
        for score, term in zip(scores, _first_order((eps[k] * last).sum(), tensors, mask)):
            score += (term.double() ** 2).sum(0) / draws
    return scores


def _first_order(target: Tensor, tensors: list[Tensor], mask: Tensor) -> list[Tensor]:
    """Per row, Σ_real tokens ∂target/∂x · x for each activation x (B, T, D) -> (B, D). Rows are
    independent, so the gradient of a sum over rows gives every row's own term. Padding is
    left out (its gradient is zero, or NaN where a float64 ModernBERT masks a whole row)."""
    grads = torch.autograd.grad(target, tensors, retain_graph=True, allow_unused=True)
    with torch.no_grad():
        return [torch.zeros(x.shape[0], x.shape[-1], device=x.device) if g is None
                else torch.where(mask[:, :, None], g * x, 0).sum(1) for g, x in zip(grads, tensors)]


def _collect(family: Family, totals: dict[str, Tensor], layers: nn.ModuleList, n: int, heads: int,
             head_dim: int) -> Importance:
    """Named activation scores -> hidden (Eq. 8: summed over hidden states), head and FFN scores."""
    hidden = sum(score for name, score in totals.items() if name.startswith("hidden"))
    head = torch.zeros(n, heads * head_dim, dtype=torch.float64)
    ffn = torch.stack([totals[f"ffn{i}"].cpu() for i in range(n)])
    for i, layer in enumerate(layers):
        for _, projection in family.projections(layer)[:2]:
            head[i] += projection.take(totals[f"proj{i}:{projection.path}"].cpu())
        head[i] += totals[f"context{i}"].cpu()
    return Importance(hidden.cpu().float(), head.view(n, heads, head_dim).float(), ffn.float())


def extract_state(family: Family, config: PretrainedConfig, teacher: dict[str, Tensor],
                  plan: ExtractionPlan) -> dict[str, Tensor]:
    """The student's parameters, each the teacher's sliced along its labelled axes
    (`hskcache.teacher.families`): hidden indices on every residual-width axis, head rows on
    head axes (each block of a fused QKV), FFN rows on FFN axes (both halves of a GLU).
    Teacher layer plan.layers[s] becomes student layer s; other layers are dropped."""
    _, heads, head_dim, ffn_width = _sizes(config)
    source = {t: s for s, t in enumerate(plan.layers)}
    state: dict[str, Tensor] = {}
    for name, (layer, axes) in parameter_axes(family, config, list(teacher)).items():
        if layer is not None and layer not in source:
            continue
        student = None if layer is None else source[layer]
        value = select_axes(teacher[name], axes, lambda label: plan.index(label, student, heads * head_dim, ffn_width))
        key = name if layer is None else name.replace(family.layer_prefix(layer), family.layer_prefix(student), 1)
        state[key] = value.contiguous().clone()
    return state


def student_heads(config: PretrainedConfig, hidden: int) -> int:
    """The student's heads: the teacher's (head size shrinks), or for a rotary family hidden / head size."""
    family = family_of(config)
    return hidden // family.head_dim(config) if family.rotary else config.num_attention_heads


def check_shape(teacher: PretrainedConfig, init: str, spec: StudentSpec) -> None:
    """Refuse, in one line, a shape the teacher's weights cannot give."""
    family = family_of(teacher)
    _, heads, head_dim, ffn = _sizes(teacher)
    limits = {"layers": (spec.layers, teacher.num_hidden_layers), "hidden": (spec.hidden, teacher.hidden_size),
              "ffn": (spec.ffn, ffn)}
    for name, (value, most) in limits.items():
        if not 1 <= value <= most:
            raise UserError(f"--{name} {value} is outside 1..{most} for this teacher; --init {init} can only shrink it")
    if family.rotary:
        if spec.hidden % head_dim:
            raise UserError(f"--hidden {spec.hidden} is not a multiple of the {family.name} teacher's head size "
                            f"{head_dim} (rotary heads keep their size, whole heads are dropped); "
                            f"pick a multiple of {head_dim}")
        if spec.heads != spec.hidden // head_dim:
            raise UserError(f"--init {init} keeps {family.name}'s head size {head_dim}, so --hidden {spec.hidden} "
                            f"has {spec.hidden // head_dim} heads, got --heads {spec.heads}; "
                            f"pass --heads {spec.hidden // head_dim} or leave it out")
    else:
        if spec.heads != heads:
            raise UserError(f"--init {init} keeps the teacher's {heads} heads (and shrinks their size), "
                            f"got --heads {spec.heads}; pass --heads {heads} or --init random")
        if spec.hidden % heads:
            raise UserError(f"--hidden {spec.hidden} is not divisible by the teacher's {heads} heads; "
                            f"pick a multiple of {heads}")
    if init == "teacher-layers" and (spec.hidden, spec.ffn) != (teacher.hidden_size, ffn):
        raise UserError(f"--init teacher-layers keeps the teacher's width (hidden {teacher.hidden_size}, "
                        f"FFN {ffn}); drop --hidden/--ffn or use --init etd-impt")


def build_extracted(teacher_dir: str | Path, spec: StudentSpec, init: str, out_dir: str | Path,
                    batches: Iterable[dict[str, Tensor]] | None = None, selection: str = "uniform", seed: int = 0,
                    device: str | torch.device = "cpu", provenance: dict | None = None) -> nn.Module:
    """Build and save a `spec`-shaped student of the teacher's family (`init` one of EXTRACTING_INITS).

    etd-impt scores neurons on `batches` (with `labels` where known; cap them yourself,
    the paper uses 10k sentences); etd-rand draws them with `seed`; teacher-layers keeps all.
    """
    config = teacher_config(teacher_dir)
    family = family_of(config)
    check_shape(config, init, spec)
    layers = [i - 1 for i in layer_selection(config.num_hidden_layers, spec.layers, selection)]
    student_config = family.smaller_config(config, layers, spec.hidden, spec.ffn, spec.heads)  # refusals first
    bare = not is_task_teacher(config)  # a bare encoder gives a bare student: AutoModel, no head
    auto = AutoModel if bare else AutoModelForSequenceClassification
    teacher = load_model(str(teacher_dir), cls=auto, attn_implementation="eager")
    teacher_hash = weights_hash(teacher)
    teacher.float()
    if init == "etd-impt":
        if batches is None:
            raise UserError("--init etd-impt scores the teacher's neurons: pass --store STORE or --data DATA")
        importance = taylor_neuron_importance(teacher.to(device), batches, seed=seed)
        teacher.cpu()
    elif init == "etd-rand":
        importance = random_importance(config, seed)
    elif init == "teacher-layers":
        importance = full_importance(config)
    else:
        raise UserError(f"--init {init} is not an extraction; use one of {', '.join(EXTRACTING_INITS)}")
    plan = plan_from_scores(importance, layers, spec.hidden, spec.ffn, family.rotary)
    model = auto.from_config(student_config, **(family.bare_kwargs if bare else {}))  # as the teacher: no pooler
    named = {(f"{family.base}.{k}" if bare else k): v for k, v in teacher.named_parameters()}  # the classifier's
    # names, which the family's axis tables are written in
    _load_all(model, extract_state(family, config, named, plan), family, bare)
    save_new(model, teacher_dir, out_dir, spec, {"init": init, "family": family.name, "layer_selection": selection,
                                                  "seed": seed, "teacher_hash": teacher_hash,
                                                  "extraction": plan.to_json(), **(provenance or {})})
    return model


def _load_all(model: nn.Module, state: dict[str, Tensor], family: Family, bare: bool = False) -> None:
    """Load the sliced parameters (named as in the classifier; a `bare` model without the encoder's
    prefix); every student parameter must come from the teacher (nothing left at random init);
    teacher parameters the student's layout lacks must be ones the family names (ModernBERT's
    first layer has no attention norm)."""
    state = {(k.removeprefix(f"{family.base}.") if bare else k): v for k, v in state.items()
             if not any(re.match(p, k) for p in family.student_drops)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    parameters = dict(model.named_parameters())
    missing = [k for k in missing if k in parameters]
    if missing or unexpected:
        raise RuntimeError(f"{family.name} extraction left {missing[:3]} unset and {unexpected[:3]} unused")
