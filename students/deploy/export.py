"""`students export`: a student folder as an ONNX Runtime folder, optionally with a dynamic-int8 copy.

The exporter is torch's own (`torch.onnx.export`, the torch.export-based path);
optimum-onnx cannot install beside transformers>=5 (docs/design.md, "Deployment").
The folder is laid out as optimum expects (`model.onnx`, `model_quantized.onnx`,
`config.json` with the labels, the tokenizer), so a plain
`onnxruntime.InferenceSession`, this package's `students eval`/`tools/compare.py`
and optimum's `ORTModelForSequenceClassification` open it. Every export is checked
against the PyTorch forward before the command succeeds.
"""
from __future__ import annotations

import inspect
import json
import logging
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from hskcache.errors import UserError
from hskcache.teacher.loading import usable_positions

FP32_FILE = "model.onnx"
EXPORT_FILE = "export.json"
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
# Largest |ONNX - PyTorch| logit difference an fp32 export may show on the check batch.
FP32_TOLERANCE = 1e-4
DEPLOY_HINT = "pip install 'hskcache[deploy]'"


@contextmanager
def quiet():
    """The exporter's and quantiser's warnings (unused torchvision ops, axis renames, "consider
    pre-processing") say nothing actionable to a user; the export is verified instead."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def require_onnx() -> None:
    """One line naming the install when the optional deployment packages are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx.export's translator)
    except ImportError as exc:
        raise UserError(f"ONNX export and serving need onnx, onnxscript and onnxruntime ({exc.name} is missing); "
                        f"install them with {DEPLOY_HINT}") from None


# --------------------------------------------------------------------------- quantisers


def _quantize_int8(fp32: Path, out: Path) -> None:
    """onnxruntime's dynamic quantisation: int8 weights of MatMul/Gemm, activations quantised per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32, out, weight_type=QuantType.QInt8)


@dataclass(frozen=True)
class Quantizer:
    file: str  # file name beside model.onnx (optimum's name for a quantised model)
    make: Callable[[Path, Path], None]


QUANTIZERS: dict[str, Quantizer] = {"int8": Quantizer("model_quantized.onnx", _quantize_int8)}
FORMATS = ("onnx",)


# --------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportInfo:
    """What `export.json` records: where the model came from and how close the export is to it."""

    source: str
    format: str
    inputs: list[str]
    files: dict[str, str]  # precision -> file in the folder ("fp32", "int8")
    parameters: int
    opset: int
    fp32_max_abs_error: float  # on the check batch, against the PyTorch forward
    torch: str
    onnxruntime: str

    @classmethod
    def read(cls, folder: Path) -> ExportInfo:
        return cls(**json.loads((folder / EXPORT_FILE).read_text()))


class LogitsOnly(nn.Module):
    """The classifier with named tensor inputs and the logits as the only output (the graph's signature)."""

    def __init__(self, model: nn.Module, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.inputs = model, inputs

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(**{name: given[name] for name in self.inputs}).logits


def model_inputs(model: nn.Module, tokenizer) -> tuple[str, ...]:
    """The tokenizer's outputs that the model's forward takes (no token_type_ids for RoBERTa-like models)."""
    accepted = inspect.signature(model.forward).parameters
    return tuple(name for name in INPUT_ORDER if name in tokenizer.model_input_names and name in accepted)


def check_batch(config, inputs: tuple[str, ...], batch: int, length: int, seed: int) -> dict[str, Tensor]:
    """Random token ids with right padding in the first row (what a tokenizer's padded batch looks like)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {name: feed[name] for name in inputs}


def export_onnx(model: nn.Module, tokenizer, out: Path, source: str) -> ExportInfo:
    """Write `out/model.onnx` (dynamic batch and sequence axes), checked against `model` on random
    batches of other shapes than the traced one. Raises UserError when the architecture cannot export."""
    import onnxruntime

    from students.models.student import count_parameters

    model = model.eval()
    inputs = model_inputs(model, tokenizer)
    limit = usable_positions(model.config)
    example = check_batch(model.config, inputs, 2, min(16, limit), seed=0)
    batch, sequence = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length", max=limit)
    try:
        with quiet():
            program = torch.onnx.export(
                LogitsOnly(model, inputs).eval(), (), kwargs=example, dynamo=True, external_data=False,
                input_names=list(inputs), output_names=["logits"],
                dynamic_shapes={name: {0: batch, 1: sequence} for name in inputs}, verbose=False)
            program.save(out / FP32_FILE, external_data=False)
    except Exception as exc:  # torch.export / onnxscript raise many types; all mean "cannot export"
        raise UserError(f"{model.config.model_type} model {source} cannot be exported to ONNX "
                        f"({_reason(exc)}); export a supported student kind") from None
    session = open_session(out / FP32_FILE, threads=1)
    error = max(_max_error(model, session, check_batch(model.config, inputs, rows, min(length, limit), seed))
                for seed, (rows, length) in enumerate([(3, 7), (1, 29)], start=1))
    if not error <= FP32_TOLERANCE:
        raise UserError(f"the ONNX export of {source} differs from PyTorch by {error:.2e} in the logits "
                        f"(more than {FP32_TOLERANCE:g}); this architecture does not export faithfully")
    import onnx

    opset = next(o.version for o in onnx.load(out / FP32_FILE, load_external_data=False).opset_import
                 if o.domain in ("", "ai.onnx"))
    return ExportInfo(source=source, format="onnx", inputs=list(inputs), files={"fp32": FP32_FILE},
                      parameters=count_parameters(model), opset=opset,
                      fp32_max_abs_error=error, torch=torch.__version__, onnxruntime=onnxruntime.__version__)


def _max_error(model: nn.Module, session, batch: dict[str, Tensor]) -> float:
    with torch.no_grad():
        expected = model(**batch).logits.numpy()
    got = session.run(["logits"], {k: v.numpy() for k, v in batch.items()})[0]
    return float(np.abs(expected - got).max())


def open_session(path: Path, threads: int):
    """An onnxruntime CPU session with `threads` intra-op threads (inter-op: one, sequential graph)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_student(model_dir: str, out_dir: str, fmt: str, quantize: str | None, overwrite: bool) -> ExportInfo:
    """`students export`: checks first, exports into a scratch folder, then moves it to `out_dir`
    (an interrupted or refused export leaves `out_dir` as it was)."""
    from hskcache.outputs import check_out_folder
    from hskcache.teacher.loading import load_tokenizer
    from students.models.student import STUDENT_FILE, load_student

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZERS:
        raise UserError(f"unknown --quantize {quantize!r}; use one of {', '.join(QUANTIZERS)}")
    require_onnx()
    check_out_folder(out_dir, "--out", overwrite)
    if Path(out_dir).resolve() in (Path(model_dir).resolve(), *Path(model_dir).resolve().parents):
        raise UserError(f"--out {out_dir} holds --model {model_dir}; replacing it would delete the student, "
                        "so choose another folder")
    if (Path(model_dir) / EXPORT_FILE).is_file():
        raise UserError(f"--model {model_dir} is already an exported folder; pass the PyTorch student folder")
    model = load_student(model_dir)
    tokenizer = load_tokenizer(model_dir, model.config, "model")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as scratch:
        work = Path(scratch)
        info = export_onnx(model, tokenizer, work, str(model_dir))
        if quantize is not None:
            quantizer = QUANTIZERS[quantize]
            with quiet():
                quantizer.make(work / FP32_FILE, work / quantizer.file)
            info = ExportInfo(**{**asdict(info), "files": {**info.files, quantize: quantizer.file}})
        model.config.save_pretrained(work)
        tokenizer.save_pretrained(work)
        if (Path(model_dir) / STUDENT_FILE).is_file():  # the task it was distilled for picks `students eval`'s metrics
            shutil.copy(Path(model_dir) / STUDENT_FILE, work / STUDENT_FILE)
        (work / EXPORT_FILE).write_text(json.dumps(asdict(info), indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
        work.mkdir()  # TemporaryDirectory removes its (now empty) folder
    return info


def _reason(exc: BaseException) -> str:
    """The cause in one line: torch.onnx wraps it in a multi-line report whose summary line
    starts with the original exception's class."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    summary = [line for line in lines if line.startswith("<class ")]
    return (summary or [line for line in lines if line] or [type(exc).__name__])[0][:300]
