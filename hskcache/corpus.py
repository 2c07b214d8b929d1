"""A task-agnostic corpus as full-length sequences: the passage-splitting rule of general stores.

MiniLM and TinyBERT distil their general stage on full 128-512-token sequences,
not on sentences, so a bare encoder's extraction (`hskcache extract` with an
encoder that is not a sequence classifier) stores each passage of the corpus as
one or more sequences of `--max-length` tokens:

- a passage whose tokens fit one sequence (`--max-length` less the tokenizer's
  special tokens, e.g. [CLS] and [SEP]) is one sequence, as written;
- a longer passage is cut greedily from its start: each piece takes as many
  whole words (whitespace-separated) as fit (counted on the passage's own
  tokens), so no word is split and every
  piece but a passage's last is within one word of full length. The cut is made
  on the fast tokenizer's offset mapping, and each piece is tokenized again on
  its own: where that takes more tokens (a byte-level BPE word that lost its
  leading space), the piece gives back words until it fits;
- a single word longer than a whole sequence is the one exception: it is cut at
  the token limit (so is a run of text without whitespace, e.g. Chinese or Japanese).

A passage is a text of the corpus that is not blank, in any format (`is_passage`).
Pieces are exact substrings of the passage, in order, each starting where the
last ended, up to the whitespace between them: joined with that whitespace they
give back the passage (joined with single spaces, its words, except where a word
was cut). Passages are never packed together: a sequence holds text of one
passage only. Task stores keep truncation (`data.tokenize_batch`).
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import replace

from tqdm.auto import tqdm

from hskcache.data import TextData
from hskcache.errors import UserError

BATCH = 512  # passages tokenized at once


def sequence_tokens(tokenizer, max_length: int) -> int:
    """Tokens of text one sequence holds: `max_length` less the special tokens of a single text."""
    return max_length - tokenizer.num_special_tokens_to_add(pair=False)


def _starts_word(text: str, offsets: Sequence[tuple[int, int]], i: int) -> bool:
    """Whether token i begins a whitespace-separated word: whitespace lies between it and the
    token before (or opens its own span, for tokenizers whose offsets keep the space)."""
    start, end = offsets[i]
    return i == 0 or any(ch.isspace() for ch in text[offsets[i - 1][1]:start]) or text[start:end][:1].isspace()


def cut_passage(text: str, offsets: Sequence[tuple[int, int]], budget: int,
                count: Callable[[str], int]) -> list[str]:
    """The pieces of one passage (see the module's rule). `offsets`: the character span of each of its
    tokens (no special tokens); `budget`: tokens of text per sequence; `count(piece)`: a piece's tokens
    when tokenized on its own."""
    n = len(offsets)
    if n <= budget:  # the passage itself was tokenized: it fits as written
        return [text]
    starts = [i for i in range(n) if _starts_word(text, offsets, i)]
    pieces, a = [], 0
    while a < n:
        piece = text[offsets[a][0]:offsets[n - 1][1]]
        limit = min(a + budget, n - 1)  # the cut: before a token in (a, limit], so tokens a..cut-1 fit
        if n - a <= budget and count(piece) <= budget or limit <= a:
            pieces.append(piece)
            break
        words = starts[bisect.bisect_right(starts, a):bisect.bisect_right(starts, limit)]
        # before the last word start that fits; no word start (one word longer than a sequence): at a token
        ends = words[::-1] + list(range((words[0] if words else limit + 1) - 1, a, -1))
        for end in ends:
            piece = text[offsets[a][0]:offsets[end - 1][1]]
            if count(piece) <= budget:
                break
        pieces.append(piece)
        a = end
    return pieces


def split_passages(texts: Sequence[str], tokenizer, max_length: int, progress: bool = False) -> list[list[str]]:
    """Each text's pieces, in order (see the module's rule; a blank text, no passage, has none); needs a fast
    tokenizer (offset mapping)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"splitting a corpus into sequences needs a fast tokenizer (offsets), and "
                        f"{type(tokenizer).__name__} is not one; save the model's fast tokenizer (tokenizer.json)")
    budget = sequence_tokens(tokenizer, max_length)
    if budget < 1:
        raise UserError(f"--max-length {max_length} leaves no token for text beside the "
                        f"{max_length - budget} special tokens; pass a larger --max-length")

    def count(piece: str) -> int:
        return len(tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"])

    out: list[list[str]] = []
    with tqdm(total=len(texts), unit="passage", desc="split corpus", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(texts), BATCH):
            batch = list(texts[start:start + BATCH])
            enc = tokenizer(batch, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            out += [cut_passage(text, offsets, budget, count) if is_passage(text) else []
                    for text, offsets in zip(batch, enc["offset_mapping"])]
            bar.update(len(batch))
    return out


def is_passage(text: str) -> bool:
    """Whether a text of a corpus is a passage: not blank (empty or whitespace only: no text to distil on),
    in any format."""
    return bool(text.strip())


def passages(data: TextData) -> TextData:
    """A corpus's passages (`is_passage`), in order: one text column; a corpus of blank texts only is refused."""
    if data.texts_b is not None:
        raise UserError(f"a task-agnostic corpus is one text column, and {data.source} gives two "
                        f"({', '.join(data.text_cols)}); pass --text-cols with one column")
    kept = [text for text in data.texts_a if is_passage(text)]
    if not kept:
        raise UserError(f"{data.source} has no passages (every text is blank); pass a corpus with text")
    return data if len(kept) == len(data.texts_a) else replace(data, texts_a=kept, labels=None)


def split_corpus(data: TextData, tokenizer, max_length: int, progress: bool = False) -> TextData:
    """The corpus's passages (`passages`) replaced by their pieces, in order: one row per sequence."""
    data = passages(data)
    pieces = [piece for passage in split_passages(data.texts_a, tokenizer, max_length, progress) for piece in passage]
    return replace(data, texts_a=pieces, labels=None)
