"""A bare encoder extracts a task-agnostic ("general") store from a plain-text corpus (issue 20, item 1).

The stored HSK and relations are checked against loops over a plain `AutoModel` forward
(`output_hidden_states`, `output_attentions`; the projections recomputed by hand from each layer's input),
at the stored positions; the passage-splitting rule against an independent re-tokenization of its pieces."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import zarr
from transformers import (AutoModel, AutoTokenizer, BertConfig, BertForMaskedLM, BertModel, GPT2Config, MPNetConfig,
                          MPNetForMaskedLM, MPNetModel, MPNetTokenizer, PreTrainedTokenizerFast, RobertaConfig,
                          RobertaForMaskedLM)

import hskcache
from conftest import WORDS, make_teacher, make_tokenizer
from hskcache.cli.main import main
from hskcache.corpus import cut_passage, sequence_tokens, split_passages
from hskcache.errors import UserError
from hskcache.kinds.relation import RelationRead
from hskcache.teacher import loading as teacher_loading
from hskcache.teacher.loading import load_teacher, weights_hash
from helpers import arrays, run_extract
from reference import coarsened_row, expected_selection, projection_relation_row, ranked_rows

MAX_LEN = 24
TOKENS, ROWS, KEYS = 8, 5, 6
FLAGS = ("--student-layers", 2, "--tokens", TOKENS, "--width", 0.5, "--knowledge", "hsk,att,val,qq,kk",
         "--att-layers", "pairs", "--att-rows", ROWS, "--att-keys", KEYS, "--token-strategy", "att-nosep")
RELATIONS = ("att", "val", "qq", "kk")
SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def passages(seed: int, n: int, longest: int) -> list[str]:
    """`n` passages of 1..`longest` of the tests' words (many longer than one sequence)."""
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(1, longest))) for _ in range(n)]


def bert_encoder(folder):
    tok = make_tokenizer(folder)
    return BertModel(BertConfig(vocab_size=len(tok), max_position_embeddings=64, **SHAPE)), tok


def mpnet_encoder(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["<s>", "<pad>", "</s>", "<unk>", "<mask>", *WORDS]) + "\n")
    tok = MPNetTokenizer(vocab=str(folder / "vocab.txt"))
    return MPNetModel(MPNetConfig(vocab_size=len(tok), max_position_embeddings=66, **SHAPE)), tok


# family -> (builder, the attention module of an encoder layer, its query/key/value Linear names)
ENCODERS = {"bert": (bert_encoder, "attention.self", ("query", "key", "value")),
            "mpnet": (mpnet_encoder, "attention.attn", ("q", "k", "v"))}


@pytest.fixture(scope="module", params=list(ENCODERS))
def general(request, tmp_path_factory):
    """(family, encoder folder, corpus passages, store) of a tiny random bare encoder and a .txt corpus."""
    root = tmp_path_factory.mktemp(f"general-{request.param}")
    torch.manual_seed(0)
    model, tok = ENCODERS[request.param][0](root / "encoder")
    model.eval().save_pretrained(root / "encoder")
    tok.save_pretrained(root / "encoder")
    texts = passages(1, 10, 50)
    lines = texts[:3] + ["", "   "] + texts[3:]  # blank lines are not passages
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    run_extract(root / "encoder", root / "corpus.txt", root / "store", *FLAGS, "--device", "cpu")
    return request.param, root / "encoder", texts, root / "store"


def masked_lm(family: str, folder):
    """A tiny *ForMaskedLM of `family` and its tokenizer: its save holds the encoder and the MLM head, no pooler."""
    if family == "mpnet":
        tok = mpnet_encoder(folder)[1]
        return MPNetForMaskedLM(MPNetConfig(vocab_size=len(tok), max_position_embeddings=66, **SHAPE)), tok
    tok = make_tokenizer(folder)
    if family == "roberta":
        config = RobertaConfig(vocab_size=len(tok), max_position_embeddings=66, type_vocab_size=1, pad_token_id=0,
                               **SHAPE)
        return RobertaForMaskedLM(config), tok
    return BertForMaskedLM(BertConfig(vocab_size=len(tok), max_position_embeddings=64, **SHAPE)), tok


@pytest.mark.parametrize("family", ["bert", "roberta", "mpnet"])
def test_an_encoder_saved_without_a_pooler_extracts_the_same_every_time(family, tmp_path):
    """AutoModel adds a pooler at random where a checkpoint has none (any *ForMaskedLM save, roberta-base), so the
    teacher's hash changed on every load and a second shard (or a resume) was refused. A bare encoder is loaded
    without it: the store's teacher hash is the hash of the MLM's own encoder weights, two runs write the same
    store, and shards 0/2 and 1/2 fill a third with the same rows."""
    torch.manual_seed(0)
    model, tok = masked_lm(family, tmp_path / "mlm")
    model.eval().save_pretrained(tmp_path / "mlm")
    tok.save_pretrained(tmp_path / "mlm")
    (tmp_path / "corpus.txt").write_text("\n".join(passages(2, 12, 30)) + "\n")
    flags = ("--student-layers", 2, "--tokens", 4, "--device", "cpu")
    for name in ("a", "b"):
        run_extract(tmp_path / "mlm", tmp_path / "corpus.txt", tmp_path / name, *flags)
    for shard in ("0/2", "1/2"):
        run_extract(tmp_path / "mlm", tmp_path / "corpus.txt", tmp_path / "shards", *flags, "--shard", shard)
    hashes = {name: hskcache.open_store(tmp_path / name).meta.teacher_hash for name in ("a", "b", "shards")}
    assert set(hashes.values()) == {weights_hash(model.base_model)}, hashes  # the encoder, without a pooler
    first = arrays(str(tmp_path / "a"))
    for name in ("b", "shards"):
        other = arrays(str(tmp_path / name))
        assert set(other) == set(first)
        for key, value in first.items():
            np.testing.assert_allclose(other[key].astype(np.float64), value.astype(np.float64), atol=2e-3,
                                       err_msg=f"{name}: {key}")


def forward(folder, input_ids, attention_mask):
    """A plain `AutoModel` forward with every hidden state and attention (eager)."""
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return model, model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                            output_attentions=True)


def test_store_is_task_agnostic(general, capsys):
    family, folder, texts, path = general
    store = hskcache.open_store(path)
    meta = store.meta
    pieces = split_passages(texts, AutoTokenizer.from_pretrained(folder), MAX_LEN)
    assert meta.general and meta.num_labels == 0 and meta.label_names is None and meta.config.label_col is None
    assert meta.corpus.passages == len(texts) and meta.corpus.sequences == store.num_examples == sum(map(len, pieces))
    assert store.num_examples > len(texts)  # long passages became several sequences
    stored = arrays(str(path))
    assert "logits" not in stored and "labels" not in stored and {"values", "att_keys", "qq_keys"} <= set(stored)
    batch = next(store.batches(4, shuffle=False))
    assert "logits" not in batch and "labels" not in batch and batch["example_id"].tolist() == [0, 1, 2, 3]
    assert main(["inspect", "--store", str(path)]) == 0
    assert "task-agnostic (general): from a bare encoder" in capsys.readouterr().out
    assert main(["verify", "--store", str(path), "--quiet"]) == 0
    assert main(["budget", "--store", str(path)]) == 0
    assert " 0 logits" in capsys.readouterr().out
    # a planned budget of the same encoder and corpus counts the sequences extract writes
    assert main(["budget", "--plan", "--teacher", str(folder), "--data", str(path.parent / "corpus.txt"),
                 "--seq-len", str(MAX_LEN), "--student-layers", "2"]) == 0
    assert f"{store.num_examples} examples × {MAX_LEN} tokens" in (out := capsys.readouterr().out) and " 0 logits" in out


def test_hsk_and_relations_match_an_hf_forward(general):
    """Every row: its tokens are the tokenized pieces of the corpus's passages, in order; its HSK and
    relation rows equal loops over an `AutoModel` forward at the stored positions."""
    family, folder, texts, path = general
    store = hskcache.open_store(path)
    n = store.num_examples
    got = store.get(np.arange(n), kinds={k: RelationRead((None, None)) for k in RELATIONS})
    tok = AutoTokenizer.from_pretrained(folder)
    rows = [piece for passage in split_passages(texts, tok, MAX_LEN) for piece in passage]
    enc = tok(rows, max_length=MAX_LEN, truncation=True, padding="max_length", return_tensors="pt")
    assert got["input_ids"].tolist() == enc["input_ids"].tolist()
    assert got["attention_mask"].tolist() == enc["attention_mask"].tolist()
    model, out = forward(folder, enc["input_ids"], enc["attention_mask"])
    positions, hsk = expected_selection(enc, out, tok.sep_token_id, [0, 1, 2], 2, 3, TOKENS, "att-nosep", 0.5, "mag")
    np.testing.assert_array_equal(got["positions"].numpy(), positions)
    np.testing.assert_allclose(got["hsk"].numpy(), hsk, atol=2e-3, rtol=2e-3)
    attention, names = ENCODERS[family][1:]
    heads = model.config.num_attention_heads
    for l in (1, 2):
        module = model.encoder.layer[l - 1].get_submodule(attention)
        x = out.hidden_states[l - 1].double()
        with torch.no_grad():
            projected = {kind: x @ getattr(module, name).weight.double().T + getattr(module, name).bias.double()
                         for kind, name in zip(("qq", "kk", "val"), names)}
        for b in range(n):
            length = int(enc["attention_mask"][b].sum())
            query = ranked_rows(enc, out, tok.sep_token_id, b, l, ROWS, "att-nosep")
            assert got["rel_positions"][b, l - 1].tolist() == query + [-1] * (ROWS - len(query))
            for r, q in enumerate(query):
                want = {"att": [out.attentions[l - 1][b, h, q] for h in range(heads)]}
                want |= {kind: projection_relation_row(projected[kind][b], q, length, heads) for kind in projected}
                for kind, dists in want.items():
                    for h in range(heads):
                        keys, probs, rest = coarsened_row(dists[h], length, KEYS)
                        stored = got[f"{kind}_keys"][b, l - 1, h, r].tolist()
                        assert stored[len(keys):] == [-1] * (KEYS - len(keys))
                        # the top keys by their reference probability (keys whose probabilities tie within fp32
                        # rounding may come in either order)
                        assert [float(dists[h][k]) for k in stored[:len(keys)]] == pytest.approx(probs, abs=1e-6)
                        assert got[f"{kind}_probs"][b, l - 1, h, r, :len(probs)].tolist() == pytest.approx(
                            probs, abs=1e-3, rel=1e-3)  # fp16
                        assert got[f"{kind}_rest"][b, l - 1, h, r].item() == pytest.approx(rest, abs=2e-3)


def bpe_tokenizer():
    """A tiny byte-level BPE as RoBERTa's (a word's leading space is part of its token, offsets trimmed to the
    word), trained on text where every word follows a space: a word that starts a piece has lost its space, so
    the piece tokenized on its own can take more tokens than inside its passage."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(trim_offsets=True)
    bpe.train_from_iterator([" " + text for text in passages(2, 50, 20)], vocab_size=300, min_frequency=2,
                            show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)


def assert_tiles(text: str, pieces: list[str]) -> None:
    """The pieces are the passage's text in order, each starting where the last ended up to whitespace (none
    inside a word cut at the token limit): with that whitespace they give back the passage."""
    at = 0
    for piece in pieces:
        start = text.find(piece, at)
        assert piece and start >= 0 and not text[at:start].strip(), (text, pieces)
        at = start + len(piece)
    assert not text[at:].strip()


@pytest.mark.parametrize("tokenizer", ["wordpiece", "bpe"])
@pytest.mark.parametrize("max_length", [8, 24])
def test_split_rule_against_retokenization(tokenizer, max_length, tmp_path):
    """Each piece, tokenized again on its own, fits a sequence; a passage's pieces joined give back its words in
    order; every piece but a passage's last would overflow with the next word; a passage that fits is kept whole."""
    tok = make_tokenizer(tmp_path) if tokenizer == "wordpiece" else bpe_tokenizer()
    budget = sequence_tokens(tok, max_length)
    assert budget == max_length - (2 if tokenizer == "wordpiece" else 0)
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    texts = passages(3, 40, 60) + ["  the   movie\twas  "]
    split = split_passages(texts, tok, max_length)
    assert len(split) == len(texts)
    cut = 0
    for text, pieces in zip(texts, split):
        assert " ".join(pieces).split() == text.split()
        assert_tiles(text, pieces)
        assert all(count(piece) <= budget for piece in pieces)
        if count(text) <= budget:
            assert pieces == [text]
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        at = 0
        for piece, following in zip(pieces, pieces[1:]):
            start = text.index(piece, at)  # the pieces are the passage's text, in order
            at = text.index(following, start + len(piece))
            word = following.split()[0]
            end = text.index(word, at) + len(word)
            with_next_word = text[start:end]  # as written (a tab stays a tab)
            inside = sum(start <= a and b <= end for a, b in offsets)  # its tokens inside the passage
            assert count(with_next_word) > budget or inside > budget  # the cut is made on the passage's tokens
            cut += 1
    assert cut > 10


def test_a_piece_that_takes_more_tokens_alone_gives_words_back(tmp_path):
    """With RoBERTa's BPE a piece that starts mid-passage loses its first word's space and may take more tokens
    on its own than inside the passage: the piece gives back words until it fits (counted here: it happens)."""
    tok, max_length = bpe_tokenizer(), 8
    budget = sequence_tokens(tok, max_length)
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    over = []

    def counted(piece: str) -> int:
        over.append(count(piece) > budget)
        return count(piece)

    texts = passages(3, 40, 60)
    split = split_passages(texts, tok, max_length)
    for text, pieces in zip(texts, split):
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        assert cut_passage(text, offsets, budget, counted) == pieces
        assert all(count(piece) <= budget for piece in pieces)
        assert_tiles(text, pieces)
    assert any(over)  # a cut that fitted inside its passage was too long alone, and gave a word back


@pytest.mark.parametrize("tokenizer", ["wordpiece", "bpe"])
def test_a_word_longer_than_a_sequence_is_cut_at_the_token_limit(tokenizer, tmp_path):
    """The one exception to whole words: a word (or a run of Chinese, which has no spaces) longer than a sequence
    is cut at the token limit; its pieces joined without spaces give it back, and the words around it stay whole."""
    tok = make_tokenizer(tmp_path) if tokenizer == "wordpiece" else bpe_tokenizer()
    max_length = 8
    budget = sequence_tokens(tok, max_length)
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    long = "我喜欢这部电影" * 4 if tokenizer == "wordpiece" else "x" * 50  # every character a token
    text = f"the movie {long} was good"
    [pieces] = split_passages([text], tok, max_length)
    assert count(long) > budget
    assert all(count(piece) <= budget for piece in pieces)
    assert_tiles(text, pieces)
    first, starts, at = text.index(long), [], 0
    for piece in pieces:
        starts.append(text.index(piece, at))
        at = starts[-1] + len(piece)
    inside = [s for s in starts if first < s < first + len(long)]
    assert len(inside) >= 1 and all(text[s - 1] != " " for s in inside)  # the word is cut, with no space between
    assert all(s == 0 or text[s - 1] == " " for s in starts if s not in inside)  # other words stay whole


def test_corpus_refusals_are_one_line(tmp_path, capsys, monkeypatch):
    """A tokenizer without offsets, a --max-length with no room for text and a corpus of two text columns are
    each refused in one line (exit 2) before a store is written."""
    encoder = tmp_path / "encoder"
    model, tok = bert_encoder(encoder)
    model.save_pretrained(encoder)
    tok.save_pretrained(encoder)
    (tmp_path / "corpus.txt").write_text("\n".join(passages(5, 4, 30)) + "\n")
    (tmp_path / "pairs.csv").write_text("sentence1,sentence2\nthe movie,a film\nthe plot,the end\n")
    real = teacher_loading.load_tokenizer

    def slow(*args, **kwargs):  # a tokenizer that gives no offset mapping (a Python one)
        tokenizer = real(*args, **kwargs)
        tokenizer.__class__ = type("SlowTokenizer", (type(tokenizer),), {"is_fast": property(lambda self: False)})
        return tokenizer

    cases = [("corpus.txt", ("--max-length", 2, "--tokens", 1), False,
              "--max-length 2 leaves no token for text beside the 2 special tokens; pass a larger --max-length"),
             ("pairs.csv", (), False, "is one text column, and"),
             ("corpus.txt", (), True, "needs a fast tokenizer (offsets), and SlowTokenizer is not one")]
    capsys.readouterr()
    for data, extra, patched, message in cases:
        if patched:
            monkeypatch.setattr(teacher_loading, "load_tokenizer", slow)
        store = tmp_path / "store"
        args = ["extract", "--teacher", str(encoder), "--data", str(tmp_path / data), "--store", str(store),
                "--student-layers", "2", "--max-length", str(MAX_LEN), "--quiet", *map(str, extra)]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not store.exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_blank_texts_are_not_passages_in_any_format(suffix, tmp_path, capsys):
    """"" and "   " in a .jsonl or .parquet corpus are skipped like a .txt's blank lines (they were sequences of
    special tokens only): the store holds the other passages' sequences, and a corpus of blank texts is refused."""
    import pandas as pd

    encoder = tmp_path / "encoder"
    model, tok = bert_encoder(encoder)
    model.save_pretrained(encoder)
    tok.save_pretrained(encoder)
    texts = passages(6, 5, 30)
    rows = texts[:2] + ["", "   "] + texts[2:]

    def write(name, column):
        frame = pd.DataFrame({"text": column})
        path = tmp_path / f"{name}{suffix}"
        frame.to_json(path, orient="records", lines=True) if suffix == ".jsonl" else frame.to_parquet(path)
        return path

    run_extract(encoder, write("corpus", rows), tmp_path / "store", "--student-layers", 2, "--limit", 4)
    store = hskcache.open_store(tmp_path / "store")
    want = split_passages(texts[:4], AutoTokenizer.from_pretrained(encoder), MAX_LEN)  # --limit counts passages
    assert (store.meta.corpus.passages, store.num_examples) == (4, sum(map(len, want)))
    ids = store.get(range(store.num_examples))["input_ids"]
    assert ((ids != tok.pad_token_id).sum(1) > 2).all()  # every sequence holds text beside [CLS] and [SEP]
    capsys.readouterr()
    args = ["extract", "--teacher", str(encoder), "--data", str(write("blank", ["", "  "])), "--store",
            str(tmp_path / "none"), "--student-layers", "2", "--max-length", str(MAX_LEN), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "has no passages (every text is blank)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "none").exists()


def test_txt_corpus_errors_are_one_line(tmp_path, capsys):
    encoder = tmp_path / "encoder"
    model, tok = bert_encoder(encoder)
    model.save_pretrained(encoder)
    tok.save_pretrained(encoder)
    (tmp_path / "blank.txt").write_text("\n  \n\t\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "labelled.csv").write_text("sentence,label\nthe movie,1\na film,0\n")
    cases = [(tmp_path / "blank.txt", (), "has no passages (every line is blank)"),
             (tmp_path / "empty.txt", (), "is empty"),
             (tmp_path / "labelled.csv", ("--label-col", "label"), "is a bare encoder")]
    capsys.readouterr()  # save_pretrained's progress bar
    for data, extra, message in cases:
        store = tmp_path / "store"
        args = ["extract", "--teacher", str(encoder), "--data", str(data), "--store", str(store),
                "--student-layers", "2", "--max-length", str(MAX_LEN), "--quiet", *extra]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not store.exists()  # checked before anything is written
    # without --label-col, the labelled file is a corpus like any other: its labels are not read
    run_extract(encoder, tmp_path / "labelled.csv", tmp_path / "store", "--student-layers", 2)
    assert hskcache.open_store(tmp_path / "store").meta.general
    # --limit takes the first passages, each then cut into sequences
    texts = passages(4, 5, 60)
    (tmp_path / "corpus.txt").write_text("\n".join(texts) + "\n")
    run_extract(encoder, tmp_path / "corpus.txt", tmp_path / "limited", "--student-layers", 2, "--limit", 2)
    corpus = hskcache.open_store(tmp_path / "limited").meta.corpus
    want = sum(map(len, split_passages(texts[:2], tok, MAX_LEN)))
    assert (corpus.passages, corpus.sequences, corpus.sequence_tokens) == (2, want, MAX_LEN - 2) and want > 2


def test_which_teachers_are_taken(tmp_path):
    """A causal model is refused naming the families; a bare encoder is not a task teacher where one is needed;
    a sequence classifier still writes a task store."""
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UserError, match="not a supported encoder family; use one of: bert"):
        load_teacher(str(tmp_path / "gpt2"), "cpu", bare=True)
    encoder = tmp_path / "encoder"
    model, tok = bert_encoder(encoder)
    model.save_pretrained(encoder)
    tok.save_pretrained(encoder)
    with pytest.raises(UserError, match="fine-tune it first"):
        load_teacher(str(encoder), "cpu")
    assert not load_teacher(str(encoder), "cpu", bare=True).task
    teacher = make_teacher(tmp_path / "teacher")
    (tmp_path / "data.csv").write_text("sentence,label\nthe movie,1\na film,0\n")
    run_extract(teacher, tmp_path / "data.csv", tmp_path / "task", "--student-layers", 2)
    store = hskcache.open_store(tmp_path / "task")
    assert not store.meta.general and store.meta.corpus is None and store.num_labels == 2
    assert {"logits", "labels"} <= set(arrays(str(tmp_path / "task")))


def test_schema_5_stores_open_as_task_stores(tmp_path):
    """Schema 6 added `general` and `corpus`; a schema-5 store (which lacks them) opens as a task store."""
    teacher = make_teacher(tmp_path / "teacher")
    (tmp_path / "data.csv").write_text("sentence,label\nthe movie,1\na film,0\n")
    run_extract(teacher, tmp_path / "data.csv", tmp_path / "store", "--student-layers", 2)
    zarr_json = tmp_path / "store" / "zarr.json"
    meta = json.loads(zarr_json.read_text())
    for key in ("general", "corpus"):
        del meta["attributes"][key]
    meta["attributes"]["schema_version"] = 5
    zarr_json.write_text(json.dumps(meta))
    store = hskcache.open_store(tmp_path / "store")
    assert not store.meta.general and store.meta.corpus is None
    assert zarr.open_group(str(tmp_path / "store"), mode="r").attrs["schema_version"] == 5
    meta["attributes"]["general"] = True  # contradicts its 2 labels
    zarr_json.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="malformed attribute general"):
        hskcache.open_store(tmp_path / "store")
