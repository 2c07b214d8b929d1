"""Students: TinyBERT-style (a small HF BERT) and ROSITA-style (the pruned teacher).

Every student folder holds `config.json`, the weights, the teacher's tokenizer and
`student.json` (kind, spec, provenance). `load_student` opens either kind; both
forwards take `input_ids, attention_mask, token_type_ids, output_hidden_states`
and return `.logits` and `.hidden_states` (L'+1 tensors, embeddings first).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    PretrainedConfig,
)
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput

from hskcache.errors import UserError
from hskcache.teacher import tokenizer_hash, weights_hash
from students.losses import prediction_loss

STUDENT_FILE = "student.json"
WEIGHTS_FILE = "model.safetensors"
ROSITA_ARCHITECTURE = "RositaForSequenceClassification"


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
    init_dir: str | Path | None = None,
    seed: int = 0,
) -> BertForSequenceClassification:
    """A BERT classifier of the given shape on the teacher's vocabulary and labels.

    Randomly initialised (seeded), or with the encoder of a general-distilled
    checkpoint `init_dir` of exactly this shape (the classifier stays random).
    """
    if min(layers, hidden, ffn, heads) < 1 or hidden % heads:
        raise UserError(f"bad TinyBERT shape layers={layers} hidden={hidden} ffn={ffn} heads={heads}; "
                        "use positive sizes with hidden divisible by heads")
    teacher = _teacher_config(teacher_dir)
    config = BertConfig(
        vocab_size=teacher.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=teacher.max_position_embeddings,
        type_vocab_size=max(1, getattr(teacher, "type_vocab_size", 1)),  # MPNet has no segment embeddings
        pad_token_id=teacher.pad_token_id,
        id2label=teacher.id2label,
        label2id=teacher.label2id,
        problem_type=teacher.problem_type,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
    if init_dir is not None:
        _load_general_encoder(model, Path(init_dir))
    spec = StudentSpec("tinybert", layers=layers, heads=heads, ffn=ffn, hidden=hidden)
    _save_new(model, teacher_dir, out_dir, spec,
              {"init": None if init_dir is None else str(init_dir), "seed": seed})
    return model


def _load_general_encoder(model: BertForSequenceClassification, init_dir: Path) -> None:
    _require_model_dir(init_dir, "--init")
    init, info = BertModel.from_pretrained(init_dir, output_loading_info=True)
    missing = [key for key in info["missing_keys"] if not key.startswith("pooler.")]
    if missing:
        raise UserError(f"--init {init_dir} lacks BERT encoder weights (e.g. {missing[0]}); pass a BERT checkpoint")
    source, target = init.state_dict(), model.bert.state_dict()
    wrong = [f"{key} {tuple(source[key].shape)} != {tuple(value.shape)}"
             for key, value in target.items() if source[key].shape != value.shape]
    if init.config.num_attention_heads != model.config.num_attention_heads:
        wrong.append(f"heads {init.config.num_attention_heads} != {model.config.num_attention_heads}")
    if wrong:
        raise UserError(f"--init {init_dir} has another shape than the student ({wrong[0]}); "
                        "build with the checkpoint's layers/hidden/ffn/heads and the teacher's vocabulary")
    model.bert.load_state_dict(source)


# --------------------------------------------------------------------------- ROSITA model
# Module and parameter names mirror HF BERT, so the teacher's state dict maps key
# for key, and loading a ROSITA folder with AutoModel fails on shapes instead of
# silently re-initialising.


class RositaEmbeddings(nn.Module):
    """BERT embeddings with the word matrix factorised: Embedding(V, r) then Linear(r, d)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_rank, padding_idx=config.pad_token_id)
        self.word_projection = nn.Linear(config.embedding_rank, d, bias=False)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.LayerNorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        embeddings = (self.word_projection(self.word_embeddings(input_ids))
                      + self.token_type_embeddings(token_type_ids) + self.position_embeddings(positions))
        return self.dropout(self.LayerNorm(embeddings))


class RositaSelfAttention(nn.Module):
    """Multi-head attention with `heads × head_dim` ≠ hidden (HF BERT ties them)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        width = self.heads * self.head_dim
        self.query = nn.Linear(config.hidden_size, width)
        self.key = nn.Linear(config.hidden_size, width)
        self.value = nn.Linear(config.hidden_size, width)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        batch, length, _ = hidden.shape

        def split(x: Tensor) -> Tensor:
            return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            split(self.query(hidden)), split(self.key(hidden)), split(self.value(hidden)),
            attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
        )
        return context.transpose(1, 2).reshape(batch, length, -1)


class RositaResidual(nn.Module):
    """dense → dropout → add the residual → LayerNorm (BertSelfOutput / BertOutput)."""

    def __init__(self, width: int, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class RositaAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = RositaSelfAttention(config)
        self.output = RositaResidual(config.num_attention_heads * config.head_dim, config)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return self.output(self.self(hidden, mask), hidden)


class RositaIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden: Tensor) -> Tensor:
        return self.act(self.dense(hidden))


class RositaLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = RositaAttention(config)
        self.intermediate = RositaIntermediate(config)
        self.output = RositaResidual(config.intermediate_size, config)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class RositaPooler(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class RositaModel(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.embeddings = RositaEmbeddings(config)
        layers = nn.ModuleList(RositaLayer(config) for _ in range(config.num_hidden_layers))
        self.encoder = nn.ModuleDict({"layer": layers})
        self.pooler = RositaPooler(config)


class RositaForSequenceClassification(nn.Module):
    """A ROSITA-style student: BERT at the teacher's width with fewer layers, heads
    and FFN neurons and a factorised word embedding. Its config is a BertConfig whose
    `num_attention_heads`/`intermediate_size` are the kept counts, plus `head_dim`
    (the teacher's) and `embedding_rank`."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = RositaModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.bool()[:, None, None, :]
        hidden = self.bert.embeddings(input_ids, token_type_ids)
        states = [hidden]
        for layer in self.bert.encoder["layer"]:
            hidden = layer(hidden, mask)
            states.append(hidden)
        logits = self.classifier(self.dropout(self.bert.pooler(hidden)))
        return SequenceClassifierOutput(logits=logits, hidden_states=tuple(states) if output_hidden_states else None)

    def save_pretrained(self, out_dir: str | Path) -> None:
        """config.json + model.safetensors, like HF's method of the same name."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(out)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, out / WEIGHTS_FILE, metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> RositaForSequenceClassification:
        model = cls(BertConfig.from_pretrained(model_dir))
        model.load_state_dict(load_file(Path(model_dir) / WEIGHTS_FILE))
        return model


def rosita_config(teacher: PretrainedConfig, layers: int, heads: int, ffn: int, emb_rank: int) -> BertConfig:
    """The teacher's config with the kept counts; head_dim stays the teacher's."""
    config = copy.deepcopy(teacher)
    config.head_dim = teacher.hidden_size // teacher.num_attention_heads
    config.num_hidden_layers, config.num_attention_heads, config.intermediate_size = layers, heads, ffn
    config.embedding_rank = emb_rank
    config.architectures = [ROSITA_ARCHITECTURE]
    return config


# --------------------------------------------------------------------------- ROSITA build


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
    tc = _teacher_config(teacher_dir)
    if tc.model_type != "bert":
        raise UserError(f"ROSITA students need a BERT teacher, {teacher_dir} is {tc.model_type!r}; "
                        "use a TinyBERT-style student instead")
    limits = {"layers": (layers, tc.num_hidden_layers), "heads": (heads, tc.num_attention_heads),
              "ffn": (ffn, tc.intermediate_size), "emb_rank": (emb_rank, min(tc.vocab_size, tc.hidden_size))}
    for name, (value, most) in limits.items():
        if not 1 <= value <= most:
            raise UserError(f"ROSITA {name}={value} is outside 1..{most} for this teacher; pick a value in range")
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="eager")
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
    _save_new(model, teacher_dir, out_dir, spec, {"teacher_hash": teacher_hash, **kept})
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
    regression = config.num_labels == 1
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


def _pruned_state(teacher_state: dict[str, Tensor], config: BertConfig, kept_heads: Tensor,
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


# --------------------------------------------------------------------------- folders


def load_student(student_dir: str | Path) -> nn.Module:
    """Either kind of student (or a trainer checkpoint of one), told apart by config.json."""
    path = Path(student_dir)
    _require_model_dir(path, "student")
    if ROSITA_ARCHITECTURE in (json.loads((path / "config.json").read_text()).get("architectures") or []):
        return RositaForSequenceClassification.from_pretrained(path)
    return AutoModelForSequenceClassification.from_pretrained(path)


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


def _require_model_dir(folder: str | Path, role: str) -> None:
    if not (Path(folder) / "config.json").is_file():
        raise UserError(f"{role} {folder} is not a model folder (no config.json); "
                        "pass a saved Hugging Face model folder")


def _teacher_config(teacher_dir: str | Path) -> PretrainedConfig:
    _require_model_dir(teacher_dir, "teacher")
    return AutoConfig.from_pretrained(teacher_dir)


def _save_new(model: nn.Module, teacher_dir: str | Path, out_dir: str | Path, spec: StudentSpec, extra: dict) -> None:
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"kind": spec.kind, "spec": asdict(spec), "teacher": str(teacher_dir),
            "teacher_vocab_size": model.config.vocab_size, "tokenizer_hash": tokenizer_hash(tokenizer), **extra}
    (out / STUDENT_FILE).write_text(json.dumps(info, indent=1) + "\n")
