"""The ROSITA-style student as a Hugging Face model: `RositaConfig` + `RositaForSequenceClassification`.

BERT at the teacher's width with fewer layers, heads and FFN neurons than the
teacher and a factorised word embedding. HF BERT ties `heads × head_dim` to the
hidden size, so pruned heads need their own attention; everything else mirrors
HF BERT's module and parameter names, so the teacher's state dict maps key for
key (students/models/pruning.py). Registered with the Auto classes on import, so after
`import students`, `AutoModelForSequenceClassification.from_pretrained(folder)`
opens a ROSITA folder like any other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput

from hskcache.teacher.loading import is_regression


class RositaConfig(BertConfig):
    """A BertConfig whose `num_attention_heads`/`intermediate_size` are the kept counts,
    plus `head_dim` (the teacher's, unchanged by pruning) and `embedding_rank`."""

    model_type = "rosita"

    def __init__(self, head_dim: int = 64, embedding_rank: int = 128, **kwargs) -> None:
        super().__init__(**kwargs)
        self.head_dim = head_dim
        self.embedding_rank = embedding_rank


# The factorised embeddings' second factor (its first keeps BERT's word-embedding key).
WORD_PROJECTION = "bert.embeddings.word_projection.weight"


class RositaEmbeddings(nn.Module):
    """BERT embeddings with the word matrix factorised: Embedding(V, r) then Linear(r, d)."""

    def __init__(self, config: RositaConfig) -> None:
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
    """Multi-head attention with `heads × head_dim` ≠ hidden."""

    def __init__(self, config: RositaConfig) -> None:
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

    def __init__(self, width: int, config: RositaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class RositaAttention(nn.Module):
    def __init__(self, config: RositaConfig) -> None:
        super().__init__()
        self.self = RositaSelfAttention(config)
        self.output = RositaResidual(config.num_attention_heads * config.head_dim, config)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return self.output(self.self(hidden, mask), hidden)


class RositaIntermediate(nn.Module):
    def __init__(self, config: RositaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden: Tensor) -> Tensor:
        return self.act(self.dense(hidden))


class RositaLayer(nn.Module):
    def __init__(self, config: RositaConfig) -> None:
        super().__init__()
        self.attention = RositaAttention(config)
        self.intermediate = RositaIntermediate(config)
        self.output = RositaResidual(config.intermediate_size, config)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class RositaEncoder(nn.Module):
    def __init__(self, config: RositaConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(RositaLayer(config) for _ in range(config.num_hidden_layers))


class RositaPooler(nn.Module):
    def __init__(self, config: RositaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class RositaModel(nn.Module):
    def __init__(self, config: RositaConfig) -> None:
        super().__init__()
        self.embeddings = RositaEmbeddings(config)
        self.encoder = RositaEncoder(config)
        self.pooler = RositaPooler(config)


class RositaPreTrainedModel(PreTrainedModel):
    config_class = RositaConfig
    base_model_prefix = "bert"
    _no_split_modules = ["RositaLayer"]


class RositaForSequenceClassification(RositaPreTrainedModel):
    """A ROSITA-style student with BERT's classification head; `labels` give HF's
    loss (MSE for regression heads, else cross-entropy)."""

    def __init__(self, config: RositaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = RositaModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.bert.embeddings.word_embeddings

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.bool()[:, None, None, :]
        hidden = self.bert.embeddings(input_ids, token_type_ids)
        states = [hidden]
        for layer in self.bert.encoder.layer:
            hidden = layer(hidden, mask)
            states.append(hidden)
        logits = self.classifier(self.dropout(self.bert.pooler(hidden)))
        loss = None
        if labels is not None:
            loss = (F.mse_loss(logits.squeeze(-1), labels.float().view(-1)) if is_regression(self.config)
                    else F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1)))
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=tuple(states) if output_hidden_states else None)


AutoConfig.register(RositaConfig.model_type, RositaConfig)
AutoModelForSequenceClassification.register(RositaConfig, RositaForSequenceClassification)
