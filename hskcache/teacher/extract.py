"""The extraction loop: data → teacher → selection → store, resumable and shardable.

A fine-tuned sequence classifier writes a task store (logits and labels); a bare
encoder writes a task-agnostic one (`StoreMeta.general`: no logits or labels), its
corpus's passages cut into full-length sequences first (`hskcache.corpus`), one
row per sequence.

Batches always start at multiples of the batch size, so a resumed run, and
every writer of a sharded one, feeds the teacher exactly the batches one
uninterrupted process would, and the finished store is identical. Writers
(torchrun ranks, or `--shard i/N` jobs) own contiguous ranges of chunks; a
batch that straddles two writers' ranges is run by both, each keeping its rows.
"""
from __future__ import annotations

import platform
import queue
import threading
from dataclasses import replace
from importlib import metadata

import numpy as np
import torch
from tqdm.auto import tqdm

from hskcache.teacher import hooks
from hskcache.teacher.config import ExtractConfig
from hskcache.distributed import Ranks, broadcast, rank_device
from hskcache.corpus import passages as corpus_passages, sequence_tokens, split_corpus
from hskcache.data import TextData, check_labels, fingerprint, load_texts, no_labels, tokenize_batch
from hskcache.errors import UserError
from hskcache.teacher.families import takes_token_types
from hskcache.kinds import KINDS, TeacherForward, TeacherInfo, chosen, stored_kinds
from hskcache.store.shape import StoreShape
from hskcache.store.meta import CorpusInfo, DataInfo, Settings, StoreMeta, TokenizerInfo
from hskcache.selection.hsk import SelectionPlan
from hskcache.store.group import StoreWriter, chunk_span
from hskcache.teacher.loading import Teacher, check_max_length, id_bound, load_teacher, named_labels, tokenizer_hash


def library_versions() -> dict[str, str]:
    names = ("hskcache", "torch", "transformers", "zarr", "numpy", "datasets")
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def store_meta(cfg: ExtractConfig, data: TextData, teacher: Teacher, plan: SelectionPlan,
               shape: StoreShape, teacher_layers: tuple[int, ...], corpus: CorpusInfo | None = None) -> StoreMeta:
    """Everything a student needs to know about the store, with no teacher at hand (`corpus`: how a
    bare encoder's corpus was cut into sequences)."""
    stored = {k: v for k, v in cfg.stored_settings().items() if k != "store"}
    settings = Settings(**stored | {
        "kinds": {name: cfg.kinds[name] for name in shape.kinds if name in cfg.kinds},  # the stored kinds' settings
        "teacher_layers": tuple(teacher_layers),
        "student_layers": len(teacher_layers) - 1,
        "text_cols": tuple(data.text_cols),
        "knowledge": tuple(cfg.knowledge),
        "label_col": data.label_col,
        "dtype": teacher.dtype,  # resolved: a GPU (bf16) store differs from a CPU (fp32) one
    })
    tok = teacher.tokenizer
    data_fp = fingerprint(data)
    # class names: the data's, else the teacher's head's (a task-agnostic store has none)
    names = None if shape.general else data.label_names or named_labels(teacher.model.config)
    return StoreMeta(
        config=settings,
        num_examples=len(data),
        teacher=teacher.name,
        teacher_hash=teacher.weights_hash,
        teacher_num_layers=teacher.num_layers,
        teacher_layers=tuple(teacher_layers),
        stored_layers=tuple(plan.stored_layers),
        rank_layers=tuple(plan.rank_layers),
        hidden_size=teacher.hidden,
        num_labels=teacher.num_labels,
        regression=teacher.regression,
        id2label={} if shape.general else {str(k): v for k, v in teacher.model.config.id2label.items()},
        task=None if shape.general else data.task,
        label_names=tuple(names) if names else None,
        tokenizer=TokenizerInfo(name=teacher.name, class_name=type(tok).__name__, vocab_size=id_bound(tok),
                                vocab_hash=tokenizer_hash(tok), cls_token_id=tok.cls_token_id,
                                sep_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id),
        data=DataInfo(source=data.source, split=data.split, fingerprint=data_fp),
        versions=library_versions(),
        kinds=dict(shape.kinds),
        general=shape.general,
        corpus=corpus,
    )


def batch_rows(teacher: Teacher, plan: SelectionPlan, shape: StoreShape, tokens: dict[str, np.ndarray],
               labels: np.ndarray, example_ids: np.ndarray) -> dict[str, np.ndarray]:
    """One batch of store rows, in the store's dtypes: every stored kind's (`kinds.KINDS`).

    Selection, the value format and bit packing run on the teacher's device;
    only the kept bytes are copied to the host. A family without token types stores none (zeros)."""
    if not takes_token_types(teacher.model.config) and "token_type_ids" in tokens:
        tokens = tokens | {"token_type_ids": np.zeros_like(tokens["token_type_ids"])}
    batch = {k: torch.from_numpy(v) for k, v in tokens.items()}
    kinds = stored_kinds(shape)
    captures = tuple(sorted({c for kind in kinds for c in kind.teacher_captures}))
    layers = sorted({layer for kind in kinds for layer in kind.capture_layers(shape)})
    with hooks.capture(teacher.model, layers, captures) as captured:
        out = teacher.forward(batch)
    masks = {k: batch[k].to(teacher.device) for k in ("attention_mask", "sep_mask")}
    forward = TeacherForward(out, captured, tokens, masks, labels, example_ids, plan, shape)
    return {name: value for kind in kinds for name, value in kind.encode(forward).items()}


class BackgroundWriter:
    """Compresses and writes rows in a thread while the teacher runs the next batch.

    At most `pending` batches wait, so memory stays bounded; the first write
    error is raised in the caller. Commits stay the writer's, so a killed
    run keeps every committed row as before."""

    def __init__(self, writer: StoreWriter, pending: int = 2):
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.writer.write(*item)
                except BaseException as exc:  # surfaced by write/close in the caller
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, start: int, rows: dict[str, np.ndarray]) -> None:
        """`StoreWriter.write`, in the background."""
        self._check()
        self._queue.put((start, rows))

    def close(self) -> None:
        """Wait for every queued write; raise the first error."""
        self._queue.put(None)
        self._thread.join()
        self._check()


def prepare(cfg: ExtractConfig, device: torch.device | None = None, progress: bool = False
            ) -> tuple[TextData, Teacher, SelectionPlan, StoreShape, tuple[int, ...], CorpusInfo | None]:
    """Load and check everything before the store is touched (the teacher on `device`, else `cfg.device`);
    a bare encoder's corpus is cut into sequences (its `CorpusInfo`; None for a task teacher)."""
    teacher = load_teacher(cfg.teacher, device or cfg.device, cfg.dtype, bare=True)
    check_max_length(cfg.max_length, teacher.model.config, "teacher")
    if not teacher.task and cfg.label_col is not None:
        raise UserError(f"--label-col {cfg.label_col}: teacher {cfg.teacher} is a bare encoder, whose store is "
                        "task-agnostic (no labels); drop --label-col, or pass a fine-tuned sequence classifier")
    # String labels are numbered like the teacher's head, even if a class is missing here.
    data = load_texts(cfg.data, cfg.split, cfg.text_cols, cfg.label_col,
                      named_labels(teacher.model.config) if teacher.task else None,
                      unknown_labels=True,  # e.g. augmented rows: the store keeps the teacher's logits
                      unlabeled=not teacher.task)
    if not teacher.task:
        data = corpus_passages(data)  # blank texts are not passages, so --limit counts passages
    if cfg.limit is not None and cfg.limit < len(data):  # a corpus's first passages
        n = cfg.limit
        data = replace(data, texts_a=data.texts_a[:n], texts_b=data.texts_b[:n] if data.texts_b else None,
                       labels=None if data.labels is None else data.labels[:n])
    opted = chosen(cfg.knowledge)
    readers = [kind.name for kind in opted if kind.needs_attentions]
    if not teacher.attentions and (cfg.token_strategy != "left" or readers):
        need = f"--token-strategy {cfg.token_strategy}" if cfg.token_strategy != "left" else f"--knowledge {readers[0]}"
        raise UserError(f"teacher {cfg.teacher} gives no post-softmax attention (no eager attention path), which "
                        f"{need} needs; pass --token-strategy left (and leave {','.join(readers) or 'those kinds'} "
                        "out of --knowledge)")
    teacher_layers = cfg.resolve_layers(teacher.num_layers)
    check_labels(data.labels, teacher.num_labels, teacher.regression, f"data {cfg.data}", "teacher",
                 named=data.label_names is not None)
    hsk_settings = cfg.kinds["hsk"]
    info = TeacherInfo(tuple(teacher_layers), teacher.num_layers, teacher.model.config.num_attention_heads,
                       teacher.hidden, cfg.max_length, hsk_settings.tokens, cfg.token_strategy)
    recorded = [kind for kind in KINDS.values() if kind in opted or not kind.opt_in and kind.settings is not None]
    records = {kind.name: kind.resolve(cfg.kinds.get(kind.name), info) for kind in recorded}
    hsk = records["hsk"]  # the selection plan is the HSK's
    plan = SelectionPlan.build(teacher_layers, teacher.num_layers, hsk.depth, hsk.tokens, cfg.token_strategy,
                               hsk.width, hsk.width_strategy, teacher.hidden, hsk.width_seed)
    if any(kind.teacher_captures for kind in opted):
        hooks.attention_modules(teacher.model)  # a family without known projections fails here, before writing
    corpus = None
    if not teacher.task:
        passages = len(data)
        data = split_corpus(data, teacher.tokenizer, cfg.max_length, progress)
        corpus = CorpusInfo(passages, len(data), sequence_tokens(teacher.tokenizer, cfg.max_length))
    shape = StoreShape(cfg.max_length, id_bound(teacher.tokenizer), teacher.num_labels, teacher.regression,
                       teacher.hidden, cfg.compress, records)
    return data, teacher, plan, shape, teacher_layers, corpus


def extract(cfg: ExtractConfig, progress: bool = True) -> str | None:
    """Write (or finish) this process's share of the store at cfg.store: all of it
    for one process, a rank's chunks under torchrun, `cfg.shard`'s with --shard.
    Returns the store's URL once it is complete, else None (other writers remain)."""
    if cfg.store is None:  # ExtractConfig without a store is the online baseline's
        raise UserError("--store is required (as a flag or in the --config file)")
    ranks = Ranks.current()
    together = ranks.world_size > 1  # torchrun: collectives order creation and completion
    if cfg.shard is not None and together:
        raise UserError("--shard is for schedulers without torchrun; under torchrun each rank takes its share itself")
    part, parts = cfg.shard or (ranks.rank, ranks.world_size)
    data, teacher, plan, shape, teacher_layers, corpus = prepare(cfg, rank_device(cfg.device, ranks.local_rank),
                                                                 progress and ranks.is_main)
    meta = store_meta(cfg, data, teacher, plan, shape, teacher_layers, corpus)
    n = len(data)
    create = (cfg.store, shape, n, meta, plan.static_arrays(), cfg.overwrite)
    if together:  # rank 0 creates the group; every rank learns whether it was refused
        refusal = None
        if ranks.is_main:
            try:
                StoreWriter.create(*create)
            except UserError as exc:
                refusal = str(exc)
        refusal = broadcast(refusal)
        if refusal is not None:
            raise UserError(refusal)
    else:  # one process, or independent --shard jobs: each creates what is missing, identically
        StoreWriter.create(*create)
    chunks = chunk_span(-(-n // shape.rows_per_chunk(n)), part, parts)
    writer = StoreWriter.attach(cfg.store, shape, n, chunks)
    labels = data.labels if data.labels is not None else no_labels(n, teacher.regression)
    bs = cfg.batch_size
    todo = writer.todo_rows()
    bar = tqdm(total=sum(hi - lo for lo, hi in todo), unit="ex", desc="extract" if parts == 1 else f"extract {part}/{parts}",
               disable=not progress or not ranks.is_main, dynamic_ncols=True)
    background = BackgroundWriter(writer)
    try:
        for lo, hi in todo:
            for start in range(lo // bs * bs, hi, bs):
                end = min(start + bs, n)
                tokens = tokenize_batch(teacher.tokenizer, data.texts_a[start:end],
                                        data.texts_b[start:end] if data.texts_b else None, cfg.max_length)
                background.write(start, batch_rows(teacher, plan, shape, tokens, labels[start:end],
                                                   np.arange(start, end)))
                bar.update(min(end, hi) - max(start, lo))
    finally:
        background.close()  # on an interrupt too: what was queued is written, commits stay whole
    bar.close()
    if together:  # every rank's chunks are committed before rank 0 looks
        torch.distributed.barrier()
        return cfg.store if ranks.is_main and writer.finish() else None
    return cfg.store if writer.finish() else None
