"""What a storage budget is computed from when it is measured rather than given: a teacher's
widths and labels, the token lengths its tokenizer gives the data, and an existing store's
setting and bytes on disk (``budget.plan`` computes the reports; ``cli.budget`` is the command)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hskcache.budget import plan as budget
from hskcache.kinds import KINDS
from hskcache.options import columns

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

TOKENIZE_BATCH = 4096


def teacher_files(teacher: str) -> tuple[PretrainedConfig, PreTrainedTokenizerBase]:
    """(config, tokenizer) of a teacher folder, no weights: loaded once per budget and passed to
    everything measured from them (`teacher_numbers`, `length_counts`, the opt-in kinds' heads)."""
    from hskcache.teacher.loading import load_config, load_tokenizer

    config = load_config(teacher)
    return config, load_tokenizer(teacher, config)


def teacher_numbers(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[int, int, int, bool]:
    """(hidden, vocabulary, labels, regression) from the model config and tokenizer
    (a bare encoder: 0 labels, a task-agnostic store)."""
    from hskcache.teacher.loading import head_outputs, id_bound

    return (config.hidden_size, id_bound(tokenizer), *head_outputs(config))


def length_counts(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase, data: str, split: str,
                  text_cols: str | None, seq_len: int, token_strategy: str) -> list[int]:
    """Examples per eligible token count (0..seq_len) after tokenization like the extractor's, by the
    teacher's tokenizer (a bare encoder's corpus cut into sequences first, as `extract` cuts it);
    `token_strategy` is one of `TOKEN_STRATEGIES`, as `BudgetConfig` checks it."""
    from hskcache.corpus import split_corpus
    from hskcache.data import load_texts, tokenize_batch
    from hskcache.teacher.loading import is_task_teacher

    texts = load_texts(data, split=split, text_cols=columns(text_cols), unlabeled=not is_task_teacher(config))
    if not is_task_teacher(config):
        texts = split_corpus(texts, tokenizer, seq_len)
    counts = np.zeros(seq_len + 1, dtype=np.int64)
    for start in range(0, len(texts), TOKENIZE_BATCH):
        end = start + TOKENIZE_BATCH
        enc = tokenize_batch(tokenizer, texts.texts_a[start:end],
                             texts.texts_b[start:end] if texts.texts_b else None, seq_len)
        real = enc["attention_mask"].astype(bool)
        eligible = real.sum(axis=1)
        if "nosep" in token_strategy:
            eligible -= (enc["sep_mask"] & real).sum(axis=1)
        counts += np.bincount(eligible, minlength=seq_len + 1)
    return counts.tolist()


def store_setting(path: str) -> tuple[budget.Setting, budget.Config, dict[str, int]]:
    """A store's setting (with its real token lengths), its own configuration and its bytes on disk."""
    from hskcache.store.group import StoreData, committed_chunks, describe, num_chunks

    info = describe(path)  # raises UserError for anything but an hskcache store
    data = StoreData(path, complete=False)
    meta = data.meta
    cfg, hsk = meta.config, meta.kinds["hsk"]
    examples = int(info["rows_committed"])
    # the committed chunks' lengths (whichever writers committed them), each chunk checked
    chunks = range(num_chunks(data.commits)) if data.complete else sorted(committed_chunks(data.location))
    lengths = np.concatenate([data.read_chunk(["length"], c)["length"] for c in chunks] or [np.zeros(0)])
    lengths = lengths.astype(np.int64)
    setting = budget.Setting(
        examples=examples, seq_len=cfg.max_length, student_layers=cfg.student_layers,
        hidden=meta.hidden_size, vocab_size=meta.tokenizer.vocab_size,
        num_logits=meta.num_labels, regression=meta.regression,
        width_strategy=hsk.width_strategy,
        length_counts=tuple(np.bincount(lengths, minlength=cfg.max_length + 1).tolist()),
        width_code=hsk.width_code, values=hsk.values, compress=cfg.compress,
        kinds={name: record for name, record in meta.kinds.items() if KINDS[name].opt_in},
    )
    return setting, budget.Config.of(hsk.depth, hsk.tokens, hsk.width), info["bytes"]
