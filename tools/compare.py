"""Teacher and students side by side: dev metrics, parameters, weights on disk, inference speed,
and each student's gap to the first model (the teacher) in points of the first metric.

    python tools/compare.py --model teacher=runs/teacher --model student=RUN/student --data DEV \
        --model int8=RUN/onnx/model_quantized.onnx

A model is a PyTorch folder, a folder written by `students export` (its model.onnx), or an .onnx
file in one: exported models run in onnxruntime with as many threads as torch uses.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from hskcache.options import quiet_libraries
from hskcache.device import pick_device
from students.evaluation.evaluate import evaluate, open_for_eval, predict
from students.deploy.serving import weights_bytes


def measure(path: str, data: str, max_length: int, batch_size: int, device: torch.device) -> dict:
    model, eval_set = open_for_eval(path, data, max_length, device)
    metrics = evaluate(model, eval_set, batch_size, device)
    start = time.perf_counter()  # a second pass, warm, for speed
    predict(model, eval_set.inputs, batch_size, device)
    seconds = time.perf_counter() - start
    return {"path": path, "parameters": model.num_parameters(), "disk_bytes": weights_bytes(path),
            "examples_per_s": len(eval_set) / seconds, "eval": metrics}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True,
                   help="NAME=PATH (a model folder, an exported folder or its .onnx file), repeatable")
    p.add_argument("--data", required=True, help="labeled dev/test data")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the table to this JSON file")
    args = p.parse_args(argv)
    quiet_libraries()
    device = pick_device(args.device)
    rows = {}
    for item in args.model:
        name, _, path = item.partition("=")
        rows[name] = measure(path, args.data, args.max_length, args.batch_size, device)
    metric_names = list(next(iter(rows.values()))["eval"])
    base = next(iter(rows.values()))
    print(f"{args.data}: {platform.machine()} {device.type}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"{'model':<12}" + "".join(f"{m:>10}" for m in metric_names)
          + f"{'params':>12}{'size':>8}{'disk MB':>9}{'ex/s':>9}{'speed-up':>10}")
    for name, r in rows.items():
        print(f"{name:<12}" + "".join(f"{r['eval'][m]:>10.4f}" for m in metric_names)
              + f"{r['parameters'] / 1e6:>11.2f}M{r['parameters'] / base['parameters']:>8.2f}"
              + f"{r['disk_bytes'] / 1e6:>9.1f}"
              + f"{r['examples_per_s']:>9.0f}{r['examples_per_s'] / base['examples_per_s']:>9.1f}x")
    first, metric = next(iter(rows)), metric_names[0]
    for name, r in list(rows.items())[1:]:
        r["gap_points"] = 100 * (base["eval"][metric] - r["eval"][metric])
        print(f"{name}-{first} gap: {r['gap_points']:.2f} points of {metric}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
