"""An exported (ONNX) student behind the PyTorch classifier's interface, so that evaluation,
`tools/compare.py` and the serving benchmark measure the served model with the same code.

`students eval --model DIR` opens DIR/model.onnx when DIR was written by `students export`;
`--model DIR/model_quantized.onnx` picks another file of that folder.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoConfig
from transformers.modeling_outputs import SequenceClassifierOutput

from hskcache.errors import UserError
from students.deploy.export import EXPORT_FILE, FP32_FILE, ExportInfo, open_session, require_onnx

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx.data")


def exported_location(path: str | Path) -> tuple[Path, str] | None:
    """(folder, ONNX file name) when `path` is an exported folder or an .onnx file in one; else None."""
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise UserError(f"--model {path} does not exist; pass a .onnx file written by `students export`")
        if not (path.parent / EXPORT_FILE).is_file():
            raise UserError(f"--model {path} is not in a folder written by `students export` (no {EXPORT_FILE}); "
                            "export the student with `students export`")
        return path.parent, path.name
    if (path / EXPORT_FILE).is_file():
        return path, FP32_FILE
    return None


class OnnxClassifier(nn.Module):
    """An onnxruntime session answering like `AutoModelForSequenceClassification` (`.config`,
    `model(**inputs).logits`). CPU only: inputs are brought to the CPU and logits stay there."""

    def __init__(self, folder: Path, file: str = FP32_FILE, threads: int | None = None) -> None:
        super().__init__()
        require_onnx()
        self.folder, self.file = folder, file
        self.config = AutoConfig.from_pretrained(folder)
        self.info = ExportInfo.read(folder)
        self.session = open_session(folder / file, threads or torch.get_num_threads())
        self.inputs = [i.name for i in self.session.get_inputs()]

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, **_) -> SequenceClassifierOutput:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if attention_mask is None:
            given["attention_mask"] = torch.ones_like(input_ids)
        if token_type_ids is None:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        feed = {name: given[name].cpu().numpy() for name in self.inputs}
        return SequenceClassifierOutput(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))

    def num_parameters(self) -> int:
        """The PyTorch model's parameter count (an int8 file holds the same parameters, smaller)."""
        return self.info.parameters


def open_exported(path: str | Path, threads: int | None = None) -> OnnxClassifier | None:
    """The exported model at `path` (a folder from `students export` or an .onnx file in one), else None."""
    location = exported_location(path)
    return None if location is None else OnnxClassifier(*location, threads=threads)


def weights_bytes(path: str | Path) -> int:
    """Bytes of a model's weights on disk: the .onnx file itself, or a PyTorch folder's weight files."""
    location = exported_location(path)
    if location is not None:
        folder, file = location
        return sum((folder / name).stat().st_size for name in (file, file + ".data") if (folder / name).is_file())
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.name.endswith(WEIGHT_SUFFIXES))
