"""Bad lengths and vocabularies are refused with one line before anything is written;
every narrowing cast into the store is checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast, RobertaConfig

import hskcache
from conftest import write_csv
from hskcache.cli.main import main
from hskcache.errors import UserError
from hskcache.storage.layout import narrow
from hskcache.teacher.loading import id_bound, usable_positions


def _extract(capsys, teacher, data, store, *extra) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["extract", "--teacher", str(teacher), "--data", str(data), "--store", str(store),
                 "--student-layers", "2", "--tokens", "3", "--batch-size", "8", "--quiet", *map(str, extra)])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(("length", "message"), [
    (100, "--max-length 100 is above the teacher's 64 positions; pass --max-length 64 or less"),
    (40000, "--max-length 40000 is above 32767, what the store's int16 lengths and positions hold"),
    (1, "--max-length must be at least 2 ([CLS] and [SEP]), got 1"),
])
def test_max_length_beyond_positions_or_int16(capsys, tmp_path, teacher_dir, single_csv, length, message):
    code, err = _extract(capsys, teacher_dir, single_csv, tmp_path / "store", "--max-length", length)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"hskcache: error: {message}")
    assert not (tmp_path / "store").exists()


def test_position_offset_families():
    """RoBERTa-style position ids start after the padding index: 514 rows hold 512 tokens."""
    assert usable_positions(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert usable_positions(BertConfig(max_position_embeddings=512)) == 512


def _teacher_with_vocab(folder, size: int):
    """A tiny BERT whose tokenizer has exactly `size` entries."""
    folder.mkdir()
    words = [f"w{i}" for i in range(size - 5)]
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=size, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return tokenizer, words


@pytest.mark.parametrize(("size", "dtype"), [(65536, np.uint16), (65537, np.int32)])
def test_token_ids_at_the_uint16_boundary(capsys, tmp_path, size, dtype):
    tokenizer, words = _teacher_with_vocab(tmp_path / "teacher", size)
    texts = [f"{words[-1]} {words[0]}", f"{words[-2]} {words[-1]} {words[3]}"]
    data = write_csv(tmp_path / "d.csv", [{"sentence": t, "label": i} for i, t in enumerate(texts)])
    code, err = _extract(capsys, tmp_path / "teacher", data, tmp_path / "store", "--max-length", 8)
    assert code == 0, err
    assert id_bound(tokenizer) == size
    assert zarr.open_group(str(tmp_path / "store"), mode="r")["input_ids"].dtype == dtype
    got = hskcache.open_store(tmp_path / "store").get([0, 1])["input_ids"]
    expected = tokenizer(texts, padding="max_length", max_length=8, return_tensors="pt")["input_ids"]
    assert torch.equal(got, expected) and int(got.max()) == size - 1  # the largest id survives the cast


def test_narrowing_casts_are_checked():
    assert narrow(np.array([0, 65535]), np.uint16, "token id").dtype == np.uint16
    with pytest.raises(UserError, match="token id 65536 does not fit the store's uint16"):
        narrow(np.array([3, 65536]), np.uint16, "token id")
    with pytest.raises(UserError, match="position -32769"):
        narrow(np.array([-32769]), np.int16, "position")


def test_min_length_is_one_rule():
    """Every command's --max-length floor is `check_min_length`: [CLS] and [SEP] need two positions."""
    from hskcache.teacher.loading import check_min_length

    for ok in (None, 2, 512):
        check_min_length(ok)
    for bad in (1, 0, -3):
        with pytest.raises(UserError, match=rf"^--max-length must be at least 2 \(\[CLS\] and \[SEP\]\), got {bad}$"):
            check_min_length(bad)
