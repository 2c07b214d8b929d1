"""Which ONNX exporter: torch.onnx's torch.export path (dynamo=True) against its TorchScript path
(dynamo=False), on a tiny random classifier of every student kind (docs/design.md, "Deployment").

For each kind and exporter: did it export, the export's seconds, the graph's inputs, and the largest
|onnxruntime - PyTorch| logit difference on batches of other shapes than the traced one.

    OMP_NUM_THREADS=1 python tools/experiments/onnx_exporters.py
"""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from transformers import (BertConfig, BertForSequenceClassification, DebertaV2Config,
                          DebertaV2ForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification,
                          ElectraConfig, ElectraForSequenceClassification, ModernBertConfig,
                          ModernBertForSequenceClassification, MPNetConfig, MPNetForSequenceClassification,
                          RobertaConfig, RobertaForSequenceClassification)

from students.deploy.export import LogitsOnly, quiet
from students.models.rosita import RositaConfig, RositaForSequenceClassification

VOCAB = 100
SHAPE = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             num_labels=2, max_position_embeddings=66, pad_token_id=0)
KINDS = {
    "bert (TinyBERT-style)": lambda: BertForSequenceClassification(BertConfig(**SHAPE)),
    "rosita": lambda: RositaForSequenceClassification(RositaConfig(head_dim=8, embedding_rank=8,
                                                                   **{**SHAPE, "num_attention_heads": 3})),
    "roberta": lambda: RobertaForSequenceClassification(RobertaConfig(**SHAPE)),
    "electra": lambda: ElectraForSequenceClassification(ElectraConfig(embedding_size=16, **SHAPE)),
    "mpnet": lambda: MPNetForSequenceClassification(MPNetConfig(**SHAPE)),
    "deberta-v2": lambda: DebertaV2ForSequenceClassification(DebertaV2Config(**SHAPE)),
    "modernbert": lambda: ModernBertForSequenceClassification(ModernBertConfig(
        **SHAPE, cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3)),
    "distilbert": lambda: DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=64)),
}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def batch(rows: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (rows, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def export(model: torch.nn.Module, path: Path, dynamo: bool) -> None:
    example = batch(2, 9, 0)
    wrapper = LogitsOnly(model, INPUTS).eval()
    with quiet():
        if dynamo:
            b, s = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
            program = torch.onnx.export(wrapper, (), kwargs=example, dynamo=True, input_names=list(INPUTS),
                                        output_names=["logits"], dynamic_shapes={k: {0: b, 1: s} for k in INPUTS},
                                        verbose=False)
            program.save(path, external_data=False)
        else:
            torch.onnx.export(wrapper, tuple(example[k] for k in INPUTS), path, dynamo=False,
                              input_names=list(INPUTS), output_names=["logits"], opset_version=17,
                              dynamic_axes={k: {0: "batch_size", 1: "sequence_length"} for k in INPUTS})


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="onnx-exporters-"))
    print(f"{'kind':<24}{'exporter':<14}{'seconds':>8}  {'inputs':<42}{'max |diff|':>12}")
    for dynamo in (True, False):
        for name, make in KINDS.items():
            torch.manual_seed(0)
            model = make().eval()
            path = work / f"{name.split()[0]}-{dynamo}.onnx"
            start = time.perf_counter()
            try:
                export(model, path, dynamo)
            except Exception as exc:  # report and go on: which kinds export is the question
                print(f"{name:<24}{'dynamo' if dynamo else 'torchscript':<14}  FAILED {type(exc).__name__}")
                continue
            seconds = time.perf_counter() - start
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            errors = []
            for seed, (rows, length) in enumerate([(1, 5), (4, 23)], start=1):
                feed = batch(rows, length, seed)
                with torch.no_grad():
                    expected = model(**feed).logits.numpy()
                got = session.run(["logits"], {k: feed[k].numpy() for k in names})[0]
                errors.append(float(np.abs(expected - got).max()))
            print(f"{name:<24}{'dynamo' if dynamo else 'torchscript':<14}{seconds:>8.1f}  {','.join(names):<42}"
                  f"{max(errors):>12.1e}")


if __name__ == "__main__":
    main()
