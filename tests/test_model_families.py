"""Other BERT-family teachers: ELECTRA (WordPiece, token types) and MPNet
(`<s> A </s></s> B </s>`, no token types, relative attention bias)."""
from __future__ import annotations

import pytest
import torch
from transformers import (BertTokenizer, ElectraConfig, ElectraForSequenceClassification, MPNetConfig,
                          MPNetForSequenceClassification, MPNetTokenizer)

from conftest import WORDS
from students import cli as students_cli
from students.models.student import load_student
from helpers import check_against_reference, run_extract

SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=2)


def electra(folder):
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tok = BertTokenizer(vocab=str(folder / "vocab.txt"))
    model = ElectraForSequenceClassification(ElectraConfig(vocab_size=len(tok), embedding_size=32,
                                                           max_position_embeddings=64, **SHAPE))
    return model, tok


def mpnet(folder):
    (folder / "vocab.txt").write_text("\n".join(["<s>", "<pad>", "</s>", "<unk>", "<mask>", *WORDS]) + "\n")
    tok = MPNetTokenizer(vocab=str(folder / "vocab.txt"))
    model = MPNetForSequenceClassification(MPNetConfig(vocab_size=len(tok), max_position_embeddings=66, **SHAPE))
    return model, tok


@pytest.mark.parametrize("family", [electra, mpnet])
def test_family_selection_matches_reference(tmp_path, pair_csv, family, device):
    folder = tmp_path / "teacher"
    folder.mkdir()
    torch.manual_seed(0)
    model, tok = family(folder)
    model.eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    run_extract(folder, pair_csv, tmp_path / "s", "--student-layers", 2, "--tokens", 8, "--width", 0.25,
                "--device", device, "--dtype", "fp32")  # selection on `device`, in the reference's fp32
    got, store = check_against_reference(folder, pair_csv, tmp_path / "s", [0, 1, 2], 3, 8, "att-nosep-top", 0.25, "mag")
    sep = torch.isin(got["input_ids"].gather(1, got["positions"].clamp(min=0).flatten(1)),
                     torch.tensor([tok.sep_token_id]))
    assert not (sep & (got["positions"].flatten(1) >= 0)).any()  # no [SEP] / </s> stored
    assert store.config.student_layers == 2
    # a TinyBERT-style student of the same vocabulary distils from that store
    assert students_cli.main(["build", "tinybert", "--init", "random", "--teacher", str(folder), "--layers", "2", "--hidden", "16",
                              "--ffn", "32", "--heads", "2", "--out", str(tmp_path / "student")]) == 0
    assert students_cli.main(["train", "--store", str(tmp_path / "s"), "--student", str(tmp_path / "student"),
                              "--out", str(tmp_path / "run"), "--max-steps", "2", "--threads", "1", "--quiet",
                              "--device", device]) == 0
    assert (tmp_path / "run" / "student" / "config.json").is_file()
    # the default init (etd-impt, scored on the store's rows) writes a student of the teacher's own family
    assert students_cli.main(["build", "tinybert", "--teacher", str(folder), "--store", str(tmp_path / "s"),
                              "--layers", "2", "--hidden", "16", "--ffn", "32", "--out", str(tmp_path / "etd")]) == 0
    assert type(load_student(tmp_path / "etd")) is type(model)
    assert students_cli.main(["train", "--store", str(tmp_path / "s"), "--student", str(tmp_path / "etd"),
                              "--out", str(tmp_path / "etd-run"), "--max-steps", "2", "--threads", "1", "--quiet"]) == 0
    assert type(load_student(tmp_path / "etd-run" / "student")) is type(model)
