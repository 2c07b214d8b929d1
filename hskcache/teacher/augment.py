"""Transfer-set augmentation (TinyBERT's word replacement), written once and extracted once.

TinyBERT (Jiao et al. 2020, data augmentation) replaces each word with
probability `p` by one of its K most similar words, N times per example. Its
candidates come from BERT's MLM for single-piece words and GloVe for the rest;
neither can be downloaded here, so the candidates are the nearest neighbours
of the word-piece in the teacher's own input-embedding space (cosine), or the
teacher's MLM predictions at the masked word when the folder has an MLM head.
Only whole words that are one vocabulary entry are replaced (as TinyBERT's MLM
branch), by whole-word vocabulary entries.

The output keeps the original rows first, marks the new ones in an
`augmented` column and leaves their labels empty: `hskcache extract` reads
them as unknown, the store takes the teacher's logits, and gold-label metrics
skip them.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForMaskedLM

from hskcache.data import load_texts
from hskcache.errors import UserError
from hskcache.options import Settings, columns, setting
from hskcache.outputs import check_out_file, replaced_file
from hskcache.teacher.loading import LOAD_ERRORS, check_model_source, load_config, load_model, load_tokenizer

AUGMENTED_COL = "augmented"
WRITERS = {".csv": lambda frame, path: frame.to_csv(path, index=False),
           ".jsonl": lambda frame, path: frame.to_json(path, orient="records", lines=True),
           ".parquet": lambda frame, path: frame.to_parquet(path, index=False)}
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class AugmentConfig(Settings):
    """Every setting of `hskcache augment`: each field is a flag and a TOML key."""

    teacher: str = setting(MISSING, "the fine-tuned teacher (its embeddings or MLM head give candidates)")
    data: str = setting(MISSING, "glue/<task> or a .csv/.tsv/.json/.jsonl/.parquet file")
    out: str = setting(MISSING, "data file to write: .csv, .jsonl or .parquet")
    per_example: int = setting(10, "augmented rows per example", at_least=1)
    seed: int = setting(0, "seed of the replacements")
    replace_prob: float = setting(0.4, "chance a word is replaced (TinyBERT's p_t)", above=0, at_most=1)
    candidates: int = setting(15, "K most similar words to draw from (TinyBERT's K)", at_least=1)
    split: str = setting("train", "split of a glue/<task> --data")
    text_cols: tuple[str, ...] | None = setting(None, "text column(s), a or a,b", parse=columns)
    label_col: str | None = setting(None, "label column")
    overwrite: bool = setting(False, "replace an existing --out file (never one in a store)")

    def __post_init__(self) -> None:
        if Path(self.out).suffix.lower() not in WRITERS:
            raise UserError(f"--out {self.out} must end in {', '.join(WRITERS)} (a file `hskcache extract` reads)")
        check_out_file(self.out, "--out", self.overwrite)
        check_model_source(self.teacher)


def whole_words(tokenizer) -> np.ndarray:
    """Vocabulary ids that are whole lowercase words (no ## pieces, special or unused tokens)."""
    ids = np.zeros(len(tokenizer), dtype=bool)
    special = set(tokenizer.all_special_ids)
    for token, i in tokenizer.get_vocab().items():
        ids[i] = i not in special and _WORD.fullmatch(token) is not None
    return ids


def embedding_neighbours(embeddings: torch.Tensor, words: np.ndarray, allowed: np.ndarray, k: int,
                         chunk: int = 1024) -> dict[int, np.ndarray]:
    """For each id in `words`, its `k` nearest `allowed` ids by cosine similarity (itself excluded)."""
    unit = torch.nn.functional.normalize(embeddings.float(), dim=1)
    pool = torch.from_numpy(np.flatnonzero(allowed))
    neighbours: dict[int, np.ndarray] = {}
    for lo in range(0, len(words), chunk):
        ids = torch.from_numpy(words[lo:lo + chunk])
        sims = unit[ids] @ unit[pool].T
        sims[pool[None, :] == ids[:, None]] = -2.0  # never the word itself
        top = pool[sims.topk(min(k, len(pool) - 1), dim=1).indices]
        neighbours.update(zip(ids.tolist(), top.numpy()))
    return neighbours


def has_mlm_head(teacher: str) -> bool:
    """Whether the folder holds trained MLM-head weights (a fine-tuned classifier does not)."""
    try:
        _, info = AutoModelForMaskedLM.from_pretrained(teacher, output_loading_info=True)
    except LOAD_ERRORS:  # no or unreadable weights: load_model says why, once
        return False
    return not any(".predictions." in key or key.startswith("lm_head") for key in info["missing_keys"])


def mlm_candidates(model, tokenizer, words: list[str], slot: int, k: int, allowed: np.ndarray) -> np.ndarray:
    """The MLM's `k` most likely whole words at word `slot` of `words`, masked (not the word itself)."""
    masked = [*words[:slot], tokenizer.mask_token, *words[slot + 1:]]
    enc = tokenizer(" ".join(masked), return_tensors="pt", truncation=True, max_length=128)
    position = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()
    if not len(position):
        return np.empty(0, dtype=np.int64)
    with torch.no_grad():
        scores = model(**enc).logits[0, position[0, 0]]
    scores[torch.from_numpy(~allowed)] = -torch.inf
    scores[tokenizer.convert_tokens_to_ids(words[slot])] = -torch.inf
    return scores.topk(k).indices.numpy()


def split_words(tokenizer, text: str) -> list[str]:
    """The tokenizer's own word split (BERT: lowercased, punctuation apart), else whitespace."""
    if hasattr(tokenizer, "basic_tokenizer"):
        return tokenizer.basic_tokenizer.tokenize(text)
    return text.lower().split()


def augment_text(text: str, tokenizer, candidates, rng: np.random.Generator, p: float) -> str:
    """One augmented copy: each replaceable word, with probability p, becomes a random candidate.

    `candidates(words, slot)` gives the candidate ids of word `slot` (empty: keep it).
    """
    words = split_words(tokenizer, text)
    out = list(words)
    for slot, word in enumerate(words):
        if rng.random() >= p:
            continue
        options = candidates(words, slot)
        if len(options):
            out[slot] = tokenizer.convert_ids_to_tokens(int(rng.choice(options)))
    return " ".join(out)


def augment(cfg: AugmentConfig, progress: bool = True) -> pd.DataFrame:
    """Write the augmented data file; returns it."""
    data = load_texts(cfg.data, cfg.split, cfg.text_cols, cfg.label_col)
    if data.texts_b is not None:
        raise UserError(f"{cfg.data} holds sentence pairs; `hskcache augment` augments single sentences only")
    tokenizer = load_tokenizer(cfg.teacher, load_config(cfg.teacher))
    allowed = whole_words(tokenizer)
    vocab = tokenizer.get_vocab()
    if has_mlm_head(cfg.teacher):
        model = load_model(cfg.teacher, cls=AutoModelForMaskedLM).eval()
        source = "the teacher's MLM head"

        def candidates(words, slot):
            if words[slot] not in vocab or not allowed[vocab[words[slot]]]:
                return np.empty(0, dtype=np.int64)
            return mlm_candidates(model, tokenizer, words, slot, cfg.candidates, allowed)
    else:
        embeddings = load_model(cfg.teacher).get_input_embeddings().weight
        present = sorted({vocab[w] for text in data.texts_a for w in split_words(tokenizer, text)
                          if w in vocab and allowed[vocab[w]]})
        table = embedding_neighbours(embeddings.detach(), np.asarray(present, dtype=np.int64), allowed,
                                     cfg.candidates)
        source = "nearest neighbours in the teacher's input embeddings"

        def candidates(words, slot):
            return table.get(vocab.get(words[slot], -1), np.empty(0, dtype=np.int64))

    rng = np.random.default_rng(cfg.seed)
    text_col = data.text_cols[0]
    label_col = data.label_col or "label"
    labels = ([data.label_names[i] for i in data.labels] if data.label_names and data.labels is not None
              else (list(data.labels) if data.labels is not None else [None] * len(data)))
    rows = [{text_col: t, label_col: y, AUGMENTED_COL: 0} for t, y in zip(data.texts_a, labels)]
    for text in tqdm(data.texts_a, desc=f"augment ({source})", unit="example", disable=not progress):
        for _ in range(cfg.per_example):
            rows.append({text_col: augment_text(text, tokenizer, candidates, rng, cfg.replace_prob),
                         label_col: None, AUGMENTED_COL: 1})
    frame = pd.DataFrame(rows)
    if data.labels is not None and not data.label_names and not data.is_regression:
        frame[label_col] = frame[label_col].astype("Int64")  # integer classes stay integers next to empty cells
    if data.labels is None:
        frame = frame.drop(columns=[label_col])
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replaced_file(out) as tmp:  # whole or not at all: a cut write leaves no part of a transfer set
        WRITERS[out.suffix.lower()](frame, tmp)
    return frame
