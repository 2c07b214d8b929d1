"""One table and one accuracy-against-cost plot over several movie_results.py output folders.

Each folder is one setting (e.g. one learning rate, or an augmented transfer
set); its finished runs (`runs/STUDENT/CONFIG/seedN` with metrics.json and
test.json) are collected as they are, none is started, and every student is
labelled with its folder's name. The teacher is the first folder's (all must
share it). Writes OUT/summary.json, OUT/results.md and OUT/accuracy_vs_cost.png.

    python tools/experiments/report.py runs/lr2e-4 runs/lr5e-4 runs/lr5e-5 runs/aug --out docs/results_init
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from movie_results import train_tflop, write_report


def collect(folder: Path, max_length: int) -> dict:
    """{student @ folder: {config: [run, ...]}} of the finished runs under folder/runs."""
    runs: dict = {}
    for seed_dir in sorted((folder / "runs").glob("*/*/seed*")):
        if not (seed_dir / "test.json").is_file() or not (seed_dir / "metrics.json").is_file():
            continue
        metrics = json.loads((seed_dir / "metrics.json").read_text())
        student, config = seed_dir.parent.parent.name, seed_dir.parent.name
        runs.setdefault(f"{student} @{folder.name}", {}).setdefault(config, []).append(
            {"seed": int(seed_dir.name[len("seed"):]), "dev": metrics["eval"],
             "test": json.loads((seed_dir / "test.json").read_text()), "selected": metrics["best"],
             "train_seconds": sum(s["seconds"] for s in metrics["stages"].values()),
             "train_tflop": train_tflop(seed_dir, max_length),
             "lr": [metrics["config"]["hsk_lr"], metrics["config"]["pred_lr"]],
             "epochs": [metrics["config"]["hsk_epochs"], metrics["config"]["pred_epochs"]]})
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="movie_results.py --out folders")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--student-layers", type=int, default=3, help="L' of the folders' students")
    args = p.parse_args()
    teacher = {split: json.loads((args.folders[0] / f"teacher-{split}.json").read_text()) for split in ("dev", "test")}
    for folder in args.folders[1:]:
        for split in ("dev", "test"):
            other = folder / f"teacher-{split}.json"
            if other.is_file() and json.loads(other.read_text()) != teacher[split]:
                raise SystemExit(f"{folder} was run with another teacher than {args.folders[0]}; report them apart")
    results = {"teacher": teacher, "runs": {}, "folders": [str(f) for f in args.folders]}
    for folder in args.folders:
        results["runs"] |= collect(folder, args.max_length)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    write_report(results, args.out, args.max_length, args.student_layers)


if __name__ == "__main__":
    main()
