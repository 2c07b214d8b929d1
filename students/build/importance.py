"""The rows that score the teacher's neurons and heads (ETD's `etd-impt`, ROSITA's pruning).

From a store (its inputs, logits and gold labels: the smallest HSK read) or from
labeled data tokenized by the teacher (a bare encoder: any text, its labels
unused, cut into sequences as `hskcache extract` cuts a general store's, so its
rows are that store's); either way without the rows that `students train
--select-on` will hold out, so the held-out slice stays unseen.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from hskcache.errors import UserError
from hskcache.kinds.hsk import HSKRead

IMPORTANCE_BATCH = 32


def importance_store(store_path: str, teacher: str):
    """The store whose inputs, logits and labels score importance, checked against the teacher."""
    from hskcache.data import check_labels
    from hskcache.store.reader import open_store
    from hskcache.teacher.loading import is_task_teacher, load_config, load_tokenizer, tokenizer_hash

    store = open_store(store_path)
    config = load_config(teacher)
    if tokenizer_hash(load_tokenizer(teacher, config)) != store.meta.tokenizer.vocab_hash:
        raise UserError(f"teacher {teacher}'s vocabulary differs from --store {store_path}'s tokenizer; "
                        "pass the teacher that wrote the store")
    if is_task_teacher(config) and not store.meta.general:  # a general store has no labels; a bare encoder uses none
        check_labels(store.labels(), config.num_labels, store.regression, f"--store {store_path}", "teacher")
    return store


def store_sample(store, examples: int, select_on: str | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled store batches (only inputs, logits and labels are used), without the rows
    `students train --select-on select_on` holds out, up to `examples` rows."""
    from students.training.selection import HOLDOUT_SEED, drop_rows, holdout_rows, parse_select_on

    fraction = None if select_on is None else parse_select_on(select_on)[1]  # checked before the teacher loads
    held = None if fraction is None else torch.from_numpy(holdout_rows(np.arange(store.num_examples), fraction,
                                                                        HOLDOUT_SEED))

    def sample():
        left = examples
        for batch in store.batches(IMPORTANCE_BATCH, shuffle=True, seed=0, kinds={"hsk": HSKRead(None)}):
            batch = {k: v[:left] for k, v in (batch if held is None else drop_rows(batch, held)).items()}
            if len(batch["input_ids"]):
                yield batch
            left -= len(batch["input_ids"])
            if left <= 0:
                return
    return sample()


def data_sample(teacher: str, data: str, split: str, text_cols: tuple[str, ...] | None, label_col: str | None,
                max_length: int | None, examples: int, select_on: str) -> list[dict[str, torch.Tensor]]:
    """The first `examples` labeled rows of `data` outside `select_on`'s held-out slice, tokenized by the
    teacher, in batches with their row numbers as `example_id` (built before the teacher's weights load, so
    bad data fails first). A bare encoder's rows are the sequences `hskcache extract` cuts the passages into
    at `max_length` (`hskcache.corpus.split_corpus`; no labels), numbered and held out as the general store
    extracted at that --max-length numbers and holds out its rows."""
    from hskcache.corpus import split_corpus
    from hskcache.data import check_labels, load_texts, tokenize_batch
    from hskcache.teacher.loading import (check_max_length, is_regression, is_task_teacher, load_config, load_tokenizer,
                                          named_labels, usable_positions)
    from students.evaluation.evaluate import MODEL_INPUTS, trim_padding
    from students.training.selection import HOLDOUT_SEED, holdout_rows, parse_select_on

    config = load_config(teacher)
    bare = not is_task_teacher(config)
    texts = load_texts(data, split, text_cols, label_col, None if bare else named_labels(config))
    if texts.labels is None and not bare:
        raise UserError(f"--data {data} has no labels for the task loss; pass --label-col, "
                        "or score on the teacher's logits with --store STORE")
    if not bare:
        check_labels(texts.labels, config.num_labels, is_regression(config), f"--data {data}", "teacher",
                     named=texts.label_names is not None)
    max_length = max_length or min(128, usable_positions(config))
    check_max_length(max_length, config, "teacher")
    tokenizer = load_tokenizer(teacher, config)
    if bare:  # the general store's rows: every passage cut into sequences, as extraction cuts them
        texts = split_corpus(texts, tokenizer, max_length)
    rows = np.arange(len(texts))
    fraction = parse_select_on(select_on)[1]
    if fraction is not None:  # the rows a store of this data would hold out for model selection
        rows = np.setdiff1d(rows, holdout_rows(rows, fraction, HOLDOUT_SEED))
    rows = rows[:examples]
    enc = tokenize_batch(tokenizer, [texts.texts_a[i] for i in rows],
                         None if texts.texts_b is None else [texts.texts_b[i] for i in rows], max_length)
    batches = []
    for lo in range(0, len(rows), IMPORTANCE_BATCH):
        part = {k: enc[k][lo:lo + IMPORTANCE_BATCH] for k in MODEL_INPUTS}
        batch = {k: torch.from_numpy(v) for k, v in trim_padding(part).items()}
        batch["example_id"] = torch.from_numpy(rows[lo:lo + IMPORTANCE_BATCH])
        if not bare:
            batch["labels"] = torch.from_numpy(np.asarray(texts.labels)[rows[lo:lo + IMPORTANCE_BATCH]])
        batches.append(batch)
    return batches
