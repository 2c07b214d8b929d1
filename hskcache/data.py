"""Datasets for the teacher side and the trainer's eval.

A dataset is either a GLUE task (``glue/sst2``, fetched through ``datasets``)
or a local ``.csv``/``.tsv``/``.json``/``.jsonl``/``.parquet`` file, or a plain
``.txt`` corpus (one passage per line, column ``text``, blank lines skipped).
All end up as a :class:`TextData`: plain Python texts plus a numpy label array,
so the extractor and the trainer never touch ``datasets`` objects.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from datasets.exceptions import DatasetGenerationError

from hskcache.errors import UserError

GLUE_TEXT_COLS: dict[str, tuple[str, ...]] = {
    "cola": ("sentence",),
    "sst2": ("sentence",),
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
_GLUE_SPLITS = ("train", "validation", "test")
_MNLI_SPLITS = (
    "train",
    "validation_matched",
    "validation_mismatched",
    "test_matched",
    "test_mismatched",
)
# MNLI has no plain validation/test split; the matched one is the usual default.
_MNLI_ALIASES = {"validation": "validation_matched", "test": "test_matched"}

# Local file suffix -> (datasets builder, builder kwargs). TSV fields carry
# bare quotes (GLUE's own files do), so quoting is off for them.
_LOCAL_FORMATS: dict[str, tuple[str, dict]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),  # one passage per line, column "text" (blank lines are skipped: `_passages`)
}


@dataclass(frozen=True, eq=False)
class TextData:
    """Texts (single or pairs) and optional gold labels of one dataset split.

    ``eq=False``: comparing numpy label arrays element-wise is never what an
    ``==`` between datasets means; use :func:`fingerprint` instead.
    """

    texts_a: list[str]
    texts_b: list[str] | None
    labels: np.ndarray | None  # int64 (classes) or float32 (regression)
    text_cols: tuple[str, ...]
    label_col: str | None
    source: str  # what the user passed
    split: str
    task: str | None  # GLUE task name, else None
    is_regression: bool
    label_names: tuple[str, ...] | None = None  # class i is label_names[i]

    def __len__(self) -> int:
        return len(self.texts_a)

    @property
    def num_labels(self) -> int | None:
        """Output width a classifier head needs; None when unlabeled."""
        if self.is_regression:
            return 1
        if self.label_names is not None:
            return len(self.label_names)
        if self.labels is None:
            return None
        return int(self.labels.max()) + 1


def load_texts(
    data: str,
    split: str = "train",
    text_cols: Sequence[str] | None = None,
    label_col: str | None = None,
    label_names: Sequence[str] | None = None,
    unknown_labels: bool = False,
    unlabeled: bool = False,
) -> TextData:
    """Load ``glue/<task>`` (split as given) or a local file (split ignored).

    ``label_names`` fixes the class order of string labels, so that a dev or
    test file is numbered like the training data even when it lacks a class.
    ``unknown_labels`` accepts empty label cells (e.g. augmented rows) as
    unknown: class -1, or NaN for regression. ``unlabeled`` reads no labels at
    all (a task-agnostic corpus; the caller refuses a ``label_col``).
    """
    if data.lower().startswith("glue/"):
        task = data[len("glue/"):].lower()
        if task not in GLUE_TEXT_COLS:
            raise UserError(
                f"unknown GLUE task {data!r}; use glue/<task> with task one of "
                f"{', '.join(GLUE_TEXT_COLS)}"
            )
        split = _glue_split(task, split)
        try:
            ds = datasets.load_dataset("nyu-mll/glue", task, split=split)
        except ConnectionError as e:
            raise UserError(
                f"could not fetch {data} from the Hugging Face hub ({e}); run once "
                "with network access to cache it, or pass a local data file"
            ) from e
        # GLUE test splits carry no labels, only -1 placeholders.
        has_labels = "label" in ds.column_names and any(
            v != -1 for v in ds.with_format("arrow")["label"].to_pylist()
        )
        default_label = "label" if has_labels else None
        regression: bool | None = task == "stsb"
    else:
        task = None
        ds = _load_local(data)
        default_label = "label" if "label" in ds.column_names else None
        regression = None
    if ds.num_rows == 0:
        raise UserError(f"{data} ({split}) has no rows; pass a non-empty dataset")
    if text_cols:
        cols = tuple(text_cols)
    else:
        cols = GLUE_TEXT_COLS[task] if task else _default_text_cols(ds.column_names, data)
    if task is None:
        ds = _text_as_read(ds, data, cols)
    label_col = None if unlabeled else label_col if label_col is not None else default_label
    return _to_text_data(ds, data, split, task, cols, label_col, regression, label_names, unknown_labels)


def _glue_split(task: str, split: str) -> str:
    if task == "mnli":
        split = _MNLI_ALIASES.get(split, split)
    allowed = _MNLI_SPLITS if task == "mnli" else _GLUE_SPLITS
    if split not in allowed:
        raise UserError(
            f"GLUE task {task} has no split {split!r}; use one of {', '.join(allowed)}"
        )
    return split


@contextmanager
def _datasets_quiet() -> Iterator[None]:
    """`datasets` logs a file it cannot read before raising; the raised error is reported once, as one line."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _text_as_read(ds: datasets.Dataset, data: str, cols: Sequence[str]) -> datasets.Dataset:
    """A CSV/TSV is text: its text columns are read as written, even when every cell is digits
    (pandas would parse them as numbers). Typed formats (JSON, parquet) keep their types."""
    numeric = [c for c in cols if c in ds.column_names and not _is_string(ds.data.schema.field(c).type)]
    if not numeric or _LOCAL_FORMATS[Path(data).suffix.lower()][0] != "csv":
        return ds
    features = ds.features.copy()
    for col in numeric:
        features[col] = datasets.Value("string")
    return _load_local(data, features=features)


def _load_local(data: str, **more) -> datasets.Dataset:
    """A local file through `datasets` (`more`: builder options, e.g. `features`)."""
    path = Path(data)
    suffix = path.suffix.lower()
    if suffix not in _LOCAL_FORMATS:
        raise UserError(
            f"unsupported data {data!r}; pass glue/<task> or a file ending in "
            f"{', '.join(_LOCAL_FORMATS)}"
        )
    if not path.is_file():
        raise UserError(f"data file {data} does not exist; check the path")
    if path.stat().st_size == 0:
        raise UserError(f"data file {data} is empty; pass a file with rows")
    builder, kwargs = _LOCAL_FORMATS[suffix]
    try:
        with _datasets_quiet():
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs, **more)
        return _passages(ds, data) if builder == "text" else ds
    except (ValueError, StopIteration, DatasetGenerationError) as e:
        cause = e.__cause__ or e
        if isinstance(cause, UnicodeDecodeError):
            raise UserError(
                f"could not read {data}: it is not UTF-8 text (invalid byte "
                f"0x{cause.object[cause.start]:02x}); save it as UTF-8"
            ) from e
        raise UserError(
            f"could not read {data} as {suffix[1:]} ({type(cause).__name__}: "
            f"{str(cause).strip() or 'no rows'}); check the file's format and that it has rows"
        ) from e


def _passages(ds: datasets.Dataset, data: str) -> datasets.Dataset:
    """A text corpus's passages: its non-blank lines, in order."""
    lines = ds.with_format("arrow")["text"].to_pylist()
    kept = [i for i, line in enumerate(lines) if line.strip()]
    if not kept:
        raise UserError(f"data file {data} has no passages (every line is blank); "
                        "pass a text file with one passage per line")
    return ds if len(kept) == len(lines) else ds.select(kept)


def _default_text_cols(columns: list[str], data: str) -> tuple[str, ...]:
    for cols in (("sentence",), ("text",), ("sentence1", "sentence2")):
        if all(c in columns for c in cols):
            return cols
    raise UserError(
        f"{data} has no 'sentence', 'text' or 'sentence1'+'sentence2' column; "
        f"pass text columns from: {', '.join(columns)}"
    )


def _to_text_data(
    ds: datasets.Dataset,
    source: str,
    split: str,
    task: str | None,
    text_cols: tuple[str, ...],
    label_col: str | None,
    regression: bool | None,
    label_names: Sequence[str] | None,
    unknown_labels: bool = False,
) -> TextData:
    if not 1 <= len(text_cols) <= 2:
        raise UserError(
            f"got {len(text_cols)} text columns {list(text_cols)}; pass one column "
            "or two (a sentence pair)"
        )
    for col in (*text_cols, *([label_col] if label_col else [])):
        if col not in ds.column_names:
            raise UserError(
                f"{source} has no column {col!r}; available: {', '.join(ds.column_names)}"
            )
    table = ds.with_format("arrow")
    texts = [_texts(table[c], c, source) for c in text_cols]
    labels, names, is_regression = None, None, bool(regression)
    if label_col is not None:
        labels, names, is_regression = _labels(
            table[label_col], ds.features[label_col], label_col, source, regression, label_names, unknown_labels
        )
    return TextData(
        texts_a=texts[0],
        texts_b=texts[1] if len(texts) == 2 else None,
        labels=labels,
        text_cols=text_cols,
        label_col=label_col,
        source=source,
        split=split,
        task=task,
        is_regression=is_regression,
        label_names=names,
    )


def _texts(column: pa.ChunkedArray, col: str, source: str) -> list[str]:
    values = column.to_pylist()
    if not _is_string(column.type) or column.null_count:
        row = next(i for i, v in enumerate(values) if not isinstance(v, str))
        raise UserError(
            f"text column {col!r} of {source} has a non-string value {values[row]!r} at "
            f"row {row}; fix the data or pick another text column"
        )
    return values


def _labels(
    column: pa.ChunkedArray,
    feature: object,
    col: str,
    source: str,
    regression: bool | None,
    label_names: Sequence[str] | None,
    unknown_labels: bool = False,
) -> tuple[np.ndarray, tuple[str, ...] | None, bool]:
    """Labels as (array, class names, is_regression); regression=None infers it.
    With `unknown_labels`, empty cells become class -1 (NaN for regression)."""
    values = column.to_pylist()
    missing = np.asarray([v is None for v in values])
    if column.null_count and missing.all():
        raise UserError(f"label column {col!r} of {source} is empty; drop it for unlabeled data")
    if column.null_count and not unknown_labels:
        row = values.index(None)
        raise UserError(
            f"label column {col!r} of {source} is empty at row {row}; fill it in, "
            "or drop the column for unlabeled data"
        )
    kind = column.type
    if isinstance(feature, datasets.ClassLabel):
        return np.asarray(values, dtype=np.int64), tuple(feature.names), False
    if _is_string(kind):
        names = tuple(label_names) if label_names is not None else tuple(sorted(set(values) - {None}))
        index = {name: i for i, name in enumerate(names)} | {None: UNKNOWN_CLASS}
        unknown = sorted(set(values) - index.keys())
        if unknown:
            raise UserError(
                f"label column {col!r} of {source} has labels {unknown} outside the "
                f"expected {list(names)}; use the training data's label names"
            )
        return np.asarray([index[v] for v in values], dtype=np.int64), names, False
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise UserError(
            f"label column {col!r} of {source} has type {kind}; labels must be "
            "strings, integers or numbers"
        )
    array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    known = array[~missing]
    if regression is None:
        regression = bool(np.any(known != np.round(known)))
    if regression:
        return array.astype(np.float32), None, True
    array[missing] = UNKNOWN_CLASS
    if known.min() < 0:
        raise UserError(
            f"label column {col!r} of {source} has negative class {known.min():g}; "
            "classes must be 0..C-1 (or strings)"
        )
    return array.astype(np.int64), None, False


UNKNOWN_CLASS = -1  # a classifier's row without a gold label (augmented, unlabeled); a regression's is NaN


def no_labels(n: int, regression: bool) -> np.ndarray:
    """Labels of `n` rows that have none, as a store holds them: class -1, or NaN for a regression."""
    return np.full(n, np.nan if regression else UNKNOWN_CLASS)


def known_labels(labels, regression: bool):
    """Which rows carry a gold label (numpy or torch, elementwise): a class >= 0, or a regression
    target that is not NaN (NaN is the one value not equal to itself)."""
    return labels == labels if regression else labels >= 0


def check_labels(labels: np.ndarray | None, num_labels: int, regression: bool, where: str, role: str,
                 named: bool = False) -> None:
    """The one rule for gold labels against a model's head, shared by extract, build, train and eval.

    A classifier's labels are classes 0..num_labels-1, or -1 for a row without one (an augmented
    or unlabeled row); real-valued labels are a regression's. A regression head takes numbers
    (NaN: none), not class names (`named`)."""
    if labels is None:
        return
    if regression:
        if named:
            raise UserError(f"{where} has class-name labels but the {role} is a regression head; "
                            "check --label-col")
        return
    if labels.dtype.kind == "f":
        raise UserError(f"{where} has real-valued (regression) labels but the {role} is a classifier with "
                        f"{num_labels} classes; check --label-col")
    bad = np.flatnonzero((labels < -1) | (labels >= num_labels))
    if len(bad):
        row = int(bad[0])
        raise UserError(f"{where} has class {int(labels[row])} at row {row}, outside the {role}'s "
                        f"{num_labels} classes 0..{num_labels - 1}; use data labeled for this {role} "
                        "or another --label-col")


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def fingerprint(data: TextData) -> str:
    """Order-sensitive sha256 of texts, pairs and labels (resume guard)."""
    h = hashlib.sha256(b"hskcache-textdata-v1")
    for texts in (data.texts_a, data.texts_b):
        h.update(b"\x00none" if texts is None else len(texts).to_bytes(8, "little"))
        for text in texts or ():
            encoded = text.encode("utf-8")
            h.update(len(encoded).to_bytes(8, "little"))
            h.update(encoded)
    if data.labels is None:
        h.update(b"\x00none")
    else:
        labels = np.ascontiguousarray(data.labels)
        h.update(labels.dtype.str.encode())
        h.update(labels.tobytes())
    return h.hexdigest()


def tokenize_batch(
    tokenizer, texts_a: Sequence[str], texts_b: Sequence[str] | None, max_length: int
) -> dict[str, np.ndarray]:
    """Tokenize to fixed (B, max_length) arrays, right-padded, plus a [SEP] mask.

    Fixed width keeps every stored row the same shape; the sep mask feeds the
    ``att-nosep`` token rankings.
    """
    enc = tokenizer(
        list(texts_a),
        list(texts_b) if texts_b is not None else None,
        max_length=max_length,
        padding="max_length",
        truncation="longest_first",
        padding_side="right",
        return_tensors="np",
    )
    input_ids = enc["input_ids"].astype(np.int64, copy=False)
    token_type_ids = enc.get("token_type_ids")
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return {
        "input_ids": input_ids,
        "attention_mask": enc["attention_mask"].astype(np.int64, copy=False),
        "token_type_ids": (
            np.zeros_like(input_ids)
            if token_type_ids is None
            else token_type_ids.astype(np.int64, copy=False)
        ),
        "sep_mask": (
            input_ids == sep_id if sep_id is not None else np.zeros(input_ids.shape, dtype=bool)
        ),
    }
