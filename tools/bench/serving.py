"""Serving cost: the PyTorch teacher against the student in PyTorch, ONNX Runtime fp32 and ORT int8.

Batch 1 (latency p50/p99 over single requests) and batch 32 (throughput: the median over repeats
of a pass over dev), each at every --threads
count, on dev texts at their real lengths (batch 1: no padding; batch 32: padded to the batch's
longest, up to --max-length). One run, the variants interleaved in every repeat so that load drifts
hit all of them alike. Also: weights on disk, accuracy of each variant on dev and test, and the
int8 model's agreement with the fp32 one.

    python tools/bench/serving.py --teacher runs/default/teacher --student runs/default/tinybert/student \\
        --onnx runs/default/onnx --dev runs/default/data/dev.csv --test runs/default/data/test.csv \\
        --json docs/serving.json --plot docs/serving.png
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from hskcache.options import quiet_libraries
from hskcache.data import load_texts
from students.evaluation.evaluate import evaluate, open_for_eval, predict
from students.deploy.export import QUANTIZERS
from students.models.student import load_student
from students.deploy.serving import exported_location, open_exported, weights_bytes

CPU = torch.device("cpu")


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path  # what `students eval` / weights_bytes take


def variants(args: argparse.Namespace) -> list[Variant]:
    onnx = Path(args.onnx)
    return [Variant("teacher (PyTorch)", Path(args.teacher)), Variant("student (PyTorch)", Path(args.student)),
            Variant("student (ORT fp32)", onnx), Variant("student (ORT int8)", onnx / QUANTIZERS["int8"].file)]


def open_model(variant: Variant, threads: int):
    model = open_exported(variant.path, threads)
    return load_student(variant.path).eval() if model is None else model


def requests(tokenizer, texts: list[str], max_length: int) -> list[dict[str, torch.Tensor]]:
    """One request per text, tokenized at its own length (what a server answering one review sees)."""
    return [{k: torch.as_tensor(v)[None] for k, v in tokenizer(t, truncation=True, max_length=max_length).items()}
            for t in texts]


def batches(tokenizer, texts: list[str], max_length: int, size: int) -> list[dict[str, torch.Tensor]]:
    return [dict(tokenizer(texts[i:i + size], truncation=True, max_length=max_length, padding=True,
                           return_tensors="pt")) for i in range(0, len(texts), size)]


@torch.no_grad()
def timed(model, inputs: list[dict[str, torch.Tensor]]) -> list[float]:
    """Seconds per call, after one untimed warm-up call."""
    model(**inputs[0])
    seconds = []
    for batch in inputs:
        start = time.perf_counter()
        model(**batch)
        seconds.append(time.perf_counter() - start)
    return seconds


def accuracy(variant: Variant, data: str, max_length: int) -> float:
    model, eval_set = open_for_eval(str(variant.path), data, max_length, CPU)
    return evaluate(model, eval_set, 64, CPU)["accuracy"]


def int8_agreement(args: argparse.Namespace, fp32: Variant, int8: Variant) -> dict[str, float]:
    """Argmax agreement and largest logit difference of the int8 model against fp32 on dev."""
    logits = []
    for variant in (fp32, int8):
        model, eval_set = open_for_eval(str(variant.path), args.dev, args.max_length, CPU)
        logits.append(predict(model, eval_set.inputs, 64, CPU))
    return {"argmax_agreement": float((logits[0].argmax(1) == logits[1].argmax(1)).mean()),
            "max_logit_error": float(np.abs(logits[0] - logits[1]).max())}


def plot(results: dict, threads: list[int], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["variants"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(threads)
    for panel, (key, title) in zip(axes, [("latency_ratio", "batch 1: teacher p50 latency / variant's"),
                                          ("throughput_ratio", "batch 32: variant's examples/s / teacher's")]):
        for j, t in enumerate(threads):
            values = [results["variants"][n]["threads"][str(t)][key] for n in names]
            bars = panel.bar(np.arange(len(names)) + j * width, values, width, label=f"{t} thread{'s' * (t > 1)}")
            panel.bar_label(bars, fmt="%.1f×", fontsize=8)
        panel.set_xticks(np.arange(len(names)) + width * (len(threads) - 1) / 2,
                         [n.replace(" (", "\n(") for n in names], fontsize=8)
        panel.set_title(title, fontsize=10)
        panel.set_ylabel("× the PyTorch teacher (log scale)")
        panel.set_yscale("log")
        panel.legend(fontsize=8)
    fig.suptitle(f"Serving the default job's student ({results['machine']}, load {results['load'][0]:.1f}"
                 f"–{results['load'][1]:.1f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="the PyTorch teacher folder")
    p.add_argument("--student", required=True, help="the PyTorch student folder")
    p.add_argument("--onnx", required=True, help="the student's `students export --quantize int8` folder")
    p.add_argument("--dev", required=True, help="dev csv: texts for timing, and accuracy")
    p.add_argument("--test", help="test csv: accuracy only")
    p.add_argument("--max-length", type=int, default=64, help="truncation (the default job's 64)")
    p.add_argument("--requests", type=int, default=256, help="batch-1 requests per repeat (dev texts, evenly spaced)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batched", type=int, help="dev texts in the batch-32 pass (default: all, in file order)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--measure", choices=("both", "speed", "accuracy"), default="both",
                   help="speed: timings and disk only; accuracy: dev/test accuracy and int8 agreement only")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--plot", help="write the ratio plot (png) here")
    args = p.parse_args(argv)
    quiet_libraries()
    threads = [int(t) for t in args.threads.split(",")]
    kinds = variants(args)
    texts = load_texts(args.dev, "validation", None, None, None).texts_a
    sample = [texts[i] for i in np.linspace(0, len(texts) - 1, min(args.requests, len(texts))).astype(int)]
    inputs = {}
    for variant in kinds:  # each model's own tokenizer (all share the teacher's vocabulary here)
        folder = (exported_location(variant.path) or (variant.path,))[0]
        tok = AutoTokenizer.from_pretrained(folder)
        inputs[variant.name] = (requests(tok, sample, args.max_length),
                                batches(tok, texts[:args.batched], args.max_length, args.batch_size))
    repeats = 0 if args.measure == "accuracy" else args.repeats
    models = {(v.name, t): open_model(v, t) for v in kinds for t in threads} if repeats else {}
    latency = {key: [] for key in models}
    throughput = {key: [] for key in models}  # examples/s of each repeat
    load = [os.getloadavg()[0]]
    for repeat in range(repeats):
        for t in threads:
            torch.set_num_threads(t)
            for v in kinds:
                single, batched = inputs[v.name]
                latency[v.name, t] += timed(models[v.name, t], single)
                seconds = timed(models[v.name, t], batched)
                throughput[v.name, t].append(sum(len(b["input_ids"]) for b in batched) / sum(seconds))
                print(f"repeat {repeat + 1}/{repeats}, {t} threads, {v.name}: "
                      f"p50 {1e3 * np.median(latency[v.name, t]):.1f} ms", flush=True)
    load.append(os.getloadavg()[0])
    results = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "torch": torch.__version__,
               "load": load, "dev": args.dev, "requests": len(sample), "dev_texts": len(texts[:args.batched]),
               "batch_size": args.batch_size, "max_length": args.max_length, "repeats": repeats, "variants": {}}
    teacher = kinds[0].name
    scored = args.measure != "speed"
    for v in kinds:
        row = {"path": str(v.path), "disk_mb": weights_bytes(v.path) / 1e6,
               "dev_accuracy": accuracy(v, args.dev, args.max_length) if scored else None,
               "test_accuracy": accuracy(v, args.test, args.max_length) if scored and args.test else None,
               "threads": {}}
        for t in threads if repeats else ():
            ms = 1e3 * np.asarray(latency[v.name, t])
            base_ms = 1e3 * np.asarray(latency[teacher, t])
            ex_s, base_ex_s = float(np.median(throughput[v.name, t])), float(np.median(throughput[teacher, t]))
            row["threads"][str(t)] = {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
                                      "examples_per_s": ex_s,
                                      "latency_ratio": float(np.median(base_ms) / np.median(ms)),
                                      "throughput_ratio": ex_s / base_ex_s}
        results["variants"][v.name] = row
    results["int8_vs_fp32_on_dev"] = int8_agreement(args, kinds[2], kinds[3]) if scored else None
    report(results, threads if repeats else [])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.plot and repeats:
        plot(results, threads, args.plot)
    return 0


def report(results: dict, threads: list[int]) -> None:
    print(f"machine: {results['machine']}, torch {results['torch']}, load average {results['load'][0]:.1f} "
          f"at start, {results['load'][1]:.1f} at end")
    print(f"{results['requests']} batch-1 requests and {results['dev_texts']} dev texts in batches of "
          f"{results['batch_size']} per repeat, max length {results['max_length']}, {results['repeats']} repeats")
    def score(value: float | None) -> str:
        return f"{'-':>8}" if value is None else f"{value:>8.4f}"

    print(f"{'variant':<20}{'thr':>4}{'p50 ms':>9}{'p99 ms':>9}{'b1 ×':>7}{'ex/s':>9}{'b32 ×':>7}"
          f"{'MB':>7}{'dev':>8}{'test':>8}")
    for name, row in results["variants"].items():
        accuracies = f"{row['disk_mb']:>7.1f}{score(row['dev_accuracy'])}{score(row['test_accuracy'])}"
        for t in threads:
            r = row["threads"][str(t)]
            print(f"{name:<20}{t:>4}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['latency_ratio']:>6.1f}x"
                  f"{r['examples_per_s']:>9.0f}{r['throughput_ratio']:>6.1f}x{accuracies}")
        if not threads:
            print(f"{name:<20}{'-':>4}{'':>41}{accuracies}")
    agreement = results["int8_vs_fp32_on_dev"]
    if agreement is not None:
        print(f"int8 against fp32 on dev: argmax agreement {agreement['argmax_agreement']:.4f}, "
              f"max logit error {agreement['max_logit_error']:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
