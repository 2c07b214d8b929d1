"""Inputs shared by the benchmarks: real movie reviews, the packaged teacher, big stores."""
from __future__ import annotations

import bz2
import csv
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import zarr
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hskcache.options import quiet_libraries
from hskcache.embedded import minilm_encoder, movie_corpus
from hskcache.store.group import StoreData, StoreWriter


def movie_csv(path: Path, n: int) -> Path:
    """The first n fresh/rotten snippets of the packaged corpus as a sentence,label csv."""
    with bz2.open(movie_corpus(), "rt") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] != "plot"][:n]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        w.writerows([[r["text"], int(r["category"] == "fresh")] for r in rows])
    return path


def packaged_teacher(folder: Path) -> Path:
    """The packaged MiniLM with a seeded head: the head does not change any cost measured here."""
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(minilm_encoder(), num_labels=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_encoder()).save_pretrained(folder)
    return folder


def tiled_store(source: Path, dest: Path, rows: int) -> Path:
    """A synthetic store of `rows` rows made by repeating a real store's rows.

    Shapes, dtypes, chunking and attributes are exactly those of a real
    extraction of that size; only the content repeats.
    """
    src = StoreData(source)
    shape = src.shape
    names = [a.name for a in shape.arrays()]
    block = src.read(names, slice(0, src.num_examples))
    static = {a.name: src.arrays[a.name][:] for a in shape.static_arrays()}
    StoreWriter.create(dest, shape, rows, replace(src.meta, num_examples=rows), static, overwrite=True)
    writer = StoreWriter.attach(dest, shape, rows)  # as `hskcache extract` writes: create, attach, write
    done = 0
    while done < rows:
        n = min(src.num_examples, rows - done)
        part = {k: v[:n] for k, v in block.items()}
        part["example_id"] = np.arange(done, done + n, dtype=np.int64)
        writer.write(done, part)
        done += n
    writer.finish()
    assert zarr.open_group(str(dest), mode="r").attrs["complete"]
    return dest


def workspace(examples: int, teacher: str | None = None) -> tuple[Path, Path, Path]:
    """(scratch folder, teacher folder, csv of `examples` real reviews): the packaged
    teacher unless `teacher` is given; library chatter silenced."""
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="hsk-bench-"))
    return work, Path(teacher) if teacher else packaged_teacher(work / "teacher"), movie_csv(work / "movies.csv", examples)
