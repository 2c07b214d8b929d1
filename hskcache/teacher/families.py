"""Model families: the one place that knows how each encoder family lays out its weights.

For every supported family it records where the encoder's layers and their
attention projections, attention output and FFN output live (the module paths
hooks and importance scoring need), which axis of every parameter is the
residual width (`HIDDEN`), a head's neurons (`HEADS`, or `QKV` for a fused
query/key/value matrix), or an FFN neuron (`FFN`, or `GLU` for a gated input
matrix holding the input and the gate), and how to write a smaller config of
the same family. ETD (students/models/etd.py), ROSITA pruning (students/models/pruning.py),
the attention hooks (hskcache/teacher/hooks.py) and extraction all read this table; no
other module names a family's parameter keys. Add the next family here.

Rotary families (ModernBERT) keep the head size and drop whole heads: slicing a
head's dimensions would change its rotary frequencies. The others keep their
heads and shrink each head (ETD).
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn
from transformers import PretrainedConfig

from hskcache.errors import UserError

HIDDEN, HEADS, QKV, FFN, GLU = "hidden", "heads", "qkv", "ffn", "glu"
# How many equal blocks of the index an axis label holds (a fused QKV matrix holds three).
BLOCKS = {HIDDEN: 1, HEADS: 1, QKV: 3, FFN: 1, GLU: 2}
Axes = tuple[str | None, ...]  # one label per tensor axis; None: the axis is kept whole


@dataclass(frozen=True)
class Projection:
    """A module in a layer whose output (or a block of it) is a query, key or value projection."""

    path: str
    block: int = 0  # which of `blocks` equal slices of the output's last axis
    blocks: int = 1

    def take(self, output: Tensor) -> Tensor:
        width = output.shape[-1] // self.blocks
        return output[..., self.block * width:(self.block + 1) * width]


def _segments(config: PretrainedConfig) -> bool:
    """A type embedding with two or more rows (RoBERTa's single row takes none)."""
    return getattr(config, "type_vocab_size", 0) >= 2


@dataclass(frozen=True)
class Family:
    """One encoder family's layout. Paths are dotted module paths; `layer_axes` keys are
    regular expressions over a layer's parameter names, `model_axes` over the rest."""

    name: str
    model_types: tuple[str, ...]
    base: str  # attribute of the sequence classifier holding the encoder
    layers: str  # from the base model to the list of layers
    query: Projection
    key: Projection
    value: Projection
    attn_out: str  # in a layer: the Linear whose input is the heads' context
    ffn_out: str  # in a layer: the Linear whose input is the FFN neurons
    layer_axes: Callable[[PretrainedConfig], dict[str, Axes]]
    model_axes: Callable[[PretrainedConfig], dict[str, Axes]]
    rotary: bool = False  # keep the head size, drop whole heads
    token_types: Callable[[PretrainedConfig], bool] = _segments
    ffn_size: str = "intermediate_size"  # the config attribute of the FFN width
    extra_config: Callable[[PretrainedConfig, PretrainedConfig, list[int]], None] = lambda t, s, layers: None
    student_drops: tuple[str, ...] = ()  # student parameter keys (regex) a teacher layer has and the student lacks
    rosita: bool = False  # ROSITA students (students/models/rosita.py) share this layout
    pooler: bool = False  # its bare model (`AutoModel`) adds a pooler unless told not to (`add_pooling_layer`)

    @property
    def bare_kwargs(self) -> dict[str, bool]:
        """How a bare encoder of the family is built and loaded: without the pooler. It is no part of what a
        general store or a general student holds, and AutoModel gives one at random where the checkpoint has
        none (a *ForMaskedLM save, roberta-base): the weights' hash would change on every load."""
        return {"add_pooling_layer": False} if self.pooler else {}

    def encoder(self, model: nn.Module) -> nn.Module:
        """The encoder inside a sequence classifier (a bare encoder is its own)."""
        return getattr(model, self.base, model)

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return self.encoder(model).get_submodule(self.layers)

    def truncate(self, model: nn.Module, layers: int) -> None:
        """Keep the bottom `layers` layers of a model in place (its config too)."""
        parent, name = f"{self.base}.{self.layers}".rsplit(".", 1)
        owner = model.get_submodule(parent)
        setattr(owner, name, getattr(owner, name)[:layers])
        model.config.num_hidden_layers = layers

    def layer_prefix(self, index: int) -> str:
        """The state-dict prefix of layer `index` in the sequence classifier."""
        return f"{self.base}.{self.layers}.{index}."

    def projections(self, layer: nn.Module) -> tuple[tuple[nn.Module, Projection], ...]:
        """(module, projection) for the query, key and value of one layer."""
        return tuple((layer.get_submodule(p.path), p) for p in (self.query, self.key, self.value))

    def axes(self, config: PretrainedConfig) -> tuple[list[tuple[re.Pattern, Axes]], list[tuple[re.Pattern, Axes]]]:
        compile_ = lambda table: [(re.compile(k), v) for k, v in table.items()]  # noqa: E731
        return compile_(self.layer_axes(config)), compile_(self.model_axes(config))

    def head_dim(self, config: PretrainedConfig) -> int:
        return config.hidden_size // config.num_attention_heads

    def smaller_config(self, teacher: PretrainedConfig, layers: list[int], hidden: int, ffn: int,
                       heads: int) -> PretrainedConfig:
        """The teacher's config (activation, eps, vocabulary, labels, positions) at the student's size;
        `layers` are the 0-based teacher layers the student's start from."""
        config = copy.deepcopy(teacher)
        config.num_hidden_layers, config.hidden_size, config.num_attention_heads = len(layers), hidden, heads
        setattr(config, self.ffn_size, ffn)
        self.extra_config(teacher, config, layers)
        return config


def _emb(config: PretrainedConfig) -> str | None:
    """The embeddings' width is the residual width unless the family factorises it (ELECTRA, DeBERTa)."""
    size = getattr(config, "embedding_size", None)
    return HIDDEN if size in (None, config.hidden_size) else None


def _same_embedding_size(teacher: PretrainedConfig, student: PretrainedConfig, layers: list[int]) -> None:
    """Unfactorised embeddings narrow with the width; factorised ones keep their size and their
    projection, which Hugging Face only builds while the two sizes differ."""
    size = getattr(teacher, "embedding_size", None)
    if size in (None, teacher.hidden_size):
        student.embedding_size = student.hidden_size
    elif size == student.hidden_size:
        raise UserError(f"--hidden {size} equals the teacher's embedding size, which would drop its embedding "
                        f"projection; pick another --hidden")


def _bert_layer(q: str, k: str, v: str, extra: tuple[str, ...] = ()) -> Callable[[PretrainedConfig], dict[str, Axes]]:
    projections = "|".join((q, k, v, *extra))
    return lambda c: {
        rf"attention\.self\.({projections})\.weight": (HEADS, HIDDEN),
        rf"attention\.self\.({projections})\.bias": (HEADS,),
        r"attention\.output\.dense\.weight": (HIDDEN, HEADS),
        r"attention\.output\.(dense\.bias|LayerNorm\.weight|LayerNorm\.bias)": (HIDDEN,),
        r"intermediate\.dense\.weight": (FFN, HIDDEN),
        r"intermediate\.dense\.bias": (FFN,),
        r"output\.dense\.weight": (HIDDEN, FFN),
        r"output\.(dense\.bias|LayerNorm\.weight|LayerNorm\.bias)": (HIDDEN,),
    }


def _embeddings(base: str) -> Callable[[PretrainedConfig], dict[str, Axes]]:
    return lambda c: {
        rf"{base}\.embeddings\.(word|position|token_type)_embeddings\.weight": (None, _emb(c)),
        rf"{base}\.embeddings\.LayerNorm\.(weight|bias)": (_emb(c),),
        rf"{base}\.embeddings_project\.weight": (HIDDEN, None),  # ELECTRA with embedding_size < hidden_size
        rf"{base}\.embeddings_project\.bias": (HIDDEN,),
    }


_CLASSIFIER = {r"classifier\.weight": (None, HIDDEN), r"classifier\.bias": (None,)}
_HEAD = {r"classifier\.dense\.weight": (HIDDEN, HIDDEN), r"classifier\.dense\.bias": (HIDDEN,),
         r"classifier\.out_proj\.weight": (None, HIDDEN), r"classifier\.out_proj\.bias": (None,)}


def _pooler(base: str) -> dict[str, Axes]:
    return {rf"{base}\.pooler\.dense\.weight": (HIDDEN, HIDDEN), rf"{base}\.pooler\.dense\.bias": (HIDDEN,)}


def _bert_like(name: str, model_types: tuple[str, ...], base: str, head: dict[str, Axes], **kw) -> Family:
    embeddings = _embeddings(base)
    return Family(name, model_types, base, "encoder.layer", Projection("attention.self.query"),
                  Projection("attention.self.key"), Projection("attention.self.value"), "attention.output.dense",
                  "output.dense", _bert_layer("query", "key", "value"), lambda c: embeddings(c) | head, **kw)


def _deberta_model(c: PretrainedConfig) -> dict[str, Axes]:
    pooled = HIDDEN if getattr(c, "pooler_hidden_size", c.hidden_size) == c.hidden_size else None
    return _embeddings("deberta")(c) | {
        r"deberta\.embeddings\.LayerNorm\.(weight|bias)": (HIDDEN,),  # after embed_proj: residual width
        r"deberta\.embeddings\.embed_proj\.weight": (HIDDEN, None),
        r"deberta\.encoder\.rel_embeddings\.weight": (None, HIDDEN),
        r"deberta\.encoder\.LayerNorm\.(weight|bias)": (HIDDEN,),
        r"deberta\.encoder\.conv\.conv\.weight": (HIDDEN, HIDDEN, None),
        r"deberta\.encoder\.conv\.(conv\.bias|LayerNorm\.weight|LayerNorm\.bias)": (HIDDEN,),
        r"pooler\.dense\.weight": (pooled, HIDDEN), r"pooler\.dense\.bias": (pooled,),
        r"classifier\.weight": (None, pooled), r"classifier\.bias": (None,),
    }


def _deberta_config(teacher: PretrainedConfig, student: PretrainedConfig, layers: list[int]) -> None:
    _same_embedding_size(teacher, student, layers)
    if getattr(teacher, "pooler_hidden_size", None) == teacher.hidden_size:
        student.pooler_hidden_size = student.hidden_size


def _modernbert_config(teacher: PretrainedConfig, student: PretrainedConfig, layers: list[int]) -> None:
    """Each kept layer keeps its global (full) or local (sliding-window) attention."""
    student.layer_types = [teacher.layer_types[i] for i in layers]


_MODERNBERT_LAYER = {
    r"attn_norm\.(weight|bias)": (HIDDEN,),
    r"attn\.Wqkv\.weight": (QKV, HIDDEN), r"attn\.Wqkv\.bias": (QKV,),
    r"attn\.Wo\.weight": (HIDDEN, HEADS), r"attn\.Wo\.bias": (HIDDEN,),
    r"mlp_norm\.(weight|bias)": (HIDDEN,),
    r"mlp\.Wi\.weight": (GLU, HIDDEN), r"mlp\.Wi\.bias": (GLU,),
    r"mlp\.Wo\.weight": (HIDDEN, FFN), r"mlp\.Wo\.bias": (HIDDEN,),
}
_MODERNBERT_MODEL = {
    r"model\.embeddings\.tok_embeddings\.weight": (None, HIDDEN),
    r"model\.embeddings\.norm\.(weight|bias)": (HIDDEN,),
    r"model\.final_norm\.(weight|bias)": (HIDDEN,),
    r"head\.dense\.weight": (HIDDEN, HIDDEN), r"head\.(dense\.bias|norm\.weight|norm\.bias)": (HIDDEN,),
    **_CLASSIFIER,
}
_DISTILBERT_LAYER = {
    r"attention\.(q_lin|k_lin|v_lin)\.weight": (HEADS, HIDDEN), r"attention\.(q_lin|k_lin|v_lin)\.bias": (HEADS,),
    r"attention\.out_lin\.weight": (HIDDEN, HEADS), r"attention\.out_lin\.bias": (HIDDEN,),
    r"(sa_layer_norm|output_layer_norm)\.(weight|bias)": (HIDDEN,),
    r"ffn\.lin1\.weight": (FFN, HIDDEN), r"ffn\.lin1\.bias": (FFN,),
    r"ffn\.lin2\.weight": (HIDDEN, FFN), r"ffn\.lin2\.bias": (HIDDEN,),
}
_DISTILBERT_MODEL = {
    r"distilbert\.embeddings\.(word|position)_embeddings\.weight": (None, HIDDEN),
    r"distilbert\.embeddings\.LayerNorm\.(weight|bias)": (HIDDEN,),
    r"pre_classifier\.weight": (HIDDEN, HIDDEN), r"pre_classifier\.bias": (HIDDEN,),
    **_CLASSIFIER,
}
_MPNET_LAYER = {
    r"attention\.attn\.(q|k|v)\.weight": (HEADS, HIDDEN), r"attention\.attn\.(q|k|v)\.bias": (HEADS,),
    r"attention\.attn\.o\.weight": (HIDDEN, HEADS), r"attention\.attn\.o\.bias": (HIDDEN,),
    r"attention\.LayerNorm\.(weight|bias)": (HIDDEN,),
    r"intermediate\.dense\.weight": (FFN, HIDDEN), r"intermediate\.dense\.bias": (FFN,),
    r"output\.dense\.weight": (HIDDEN, FFN), r"output\.(dense\.bias|LayerNorm\.weight|LayerNorm\.bias)": (HIDDEN,),
}
_MPNET_MODEL = {
    r"mpnet\.embeddings\.(word|position)_embeddings\.weight": (None, HIDDEN),
    r"mpnet\.embeddings\.LayerNorm\.(weight|bias)": (HIDDEN,),
    r"mpnet\.encoder\.relative_attention_bias\.weight": (None, None),  # (buckets, heads): every head is kept
    **_HEAD,
}

FAMILIES: tuple[Family, ...] = (
    _bert_like("bert", ("bert",), "bert", _pooler("bert") | _CLASSIFIER, rosita=True, pooler=True),
    _bert_like("roberta", ("roberta", "xlm-roberta"), "roberta", _HEAD, pooler=True),
    _bert_like("electra", ("electra",), "electra", _HEAD, extra_config=_same_embedding_size),
    Family("mpnet", ("mpnet",), "mpnet", "encoder.layer", Projection("attention.attn.q"),
           Projection("attention.attn.k"), Projection("attention.attn.v"), "attention.attn.o", "output.dense",
           lambda c: _MPNET_LAYER, lambda c: _MPNET_MODEL, token_types=lambda c: False, pooler=True),
    Family("deberta-v2", ("deberta-v2",), "deberta", "encoder.layer", Projection("attention.self.query_proj"),
           Projection("attention.self.key_proj"), Projection("attention.self.value_proj"),
           "attention.output.dense", "output.dense",
           _bert_layer("query_proj", "key_proj", "value_proj", ("pos_key_proj", "pos_query_proj")),
           _deberta_model, extra_config=_deberta_config),
    Family("modernbert", ("modernbert",), "model", "layers", Projection("attn.Wqkv", 0, 3),
           Projection("attn.Wqkv", 1, 3), Projection("attn.Wqkv", 2, 3), "attn.Wo", "mlp.Wo",
           lambda c: _MODERNBERT_LAYER, lambda c: _MODERNBERT_MODEL, rotary=True, token_types=lambda c: False,
           extra_config=_modernbert_config, student_drops=(r"model\.layers\.0\.attn_norm\.",)),
    Family("distilbert", ("distilbert",), "distilbert", "transformer.layer", Projection("attention.q_lin"),
           Projection("attention.k_lin"), Projection("attention.v_lin"), "attention.out_lin", "ffn.lin2",
           lambda c: _DISTILBERT_LAYER, lambda c: _DISTILBERT_MODEL, token_types=lambda c: False,
           ffn_size="hidden_dim"),
)
# Students of this package that are not a Hugging Face family but share one's layout (hooks only).
STUDENT_LAYOUTS: dict[str, str] = {"rosita": "bert"}
BY_TYPE: dict[str, Family] = {t: f for f in FAMILIES for t in f.model_types}


def supported() -> str:
    """The supported families, for error messages."""
    names = {"roberta": "roberta (xlm-roberta)", "deberta-v2": "deberta-v2 (v3)"}
    return ", ".join(names.get(f.name, f.name) for f in FAMILIES)


def family_of(config: PretrainedConfig | str, role: str = "teacher") -> Family:
    """The family of a config (or model type); anything unregistered (a causal model, say) is refused."""
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    if model_type in BY_TYPE:
        return BY_TYPE[model_type]
    if model_type in STUDENT_LAYOUTS:
        return BY_TYPE[STUDENT_LAYOUTS[model_type]]
    raise UserError(f"the {role}'s model type {model_type!r} is not a supported encoder family; "
                    f"use one of: {supported()}")


def takes_token_types(config: PretrainedConfig) -> bool:
    """Whether the family has segment (token type) embeddings to feed (RoBERTa's single type: no).
    A model outside the registry (evaluated, never extracted) is judged by its type embedding."""
    model_type = STUDENT_LAYOUTS.get(config.model_type, config.model_type)
    return BY_TYPE[model_type].token_types(config) if model_type in BY_TYPE else _segments(config)


def select_axes(value: Tensor, axes: Axes, index: Callable[[str], Tensor | None]) -> Tensor:
    """`value` cut along each labelled axis to `index(label)` (an unlabelled axis, or a None index, is kept whole)."""
    for axis, label in enumerate(axes):
        if label is not None and (kept := index(label)) is not None:
            value = value.index_select(axis, kept)
    return value


def parameter_axes(family: Family, config: PretrainedConfig, names: list[str]) -> dict[str, tuple[int | None, Axes]]:
    """Each parameter name -> (its layer index or None, its axis labels). A name the family's
    table does not cover is an error here, so no parameter is ever copied unsliced by omission."""
    layer_table, model_table = family.axes(config)
    pattern = re.compile(re.escape(f"{family.base}.{family.layers}.") + r"(\d+)\.(.*)")
    out = {}
    for name in names:
        match = pattern.fullmatch(name)
        layer, rest, table = (int(match[1]), match[2], layer_table) if match else (None, name, model_table)
        axes = next((labels for regex, labels in table if regex.fullmatch(rest)), None)
        if axes is None:
            raise UserError(f"the {family.name} family has no axis map for parameter {name!r}; "
                            "this teacher's layout is not supported for extraction")
        out[name] = (layer, axes)
    return out
