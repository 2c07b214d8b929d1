"""Does `--values int8` cost accuracy? tinybert-3s distilled at HSK (1,9,0.1) from an
fp16 store and from an int8 store of the same extraction, over several seeds.

Same protocol as movie_results.py (its helpers run the project's command lines
as subprocesses and skip finished runs): the student is `--student` (an
extracted init, the same for every seed) or a random-init TinyBERT per seed;
HSK stage then prediction stage; the checkpoint kept is chosen by
`--select-on` (default: 10% of the training rows held out); dev and test
accuracy are reported. Writes RESULTS/int8.json and RESULTS/int8.md, and
prints the table with each store's bytes on disk.

    python tools/experiments/int8_values.py --teacher runs/teacher --data data/movies3k --out runs/int8 \
        [--student runs/etd-impt --hsk-lr 2e-4 --pred-lr 2e-4]
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from movie_results import BIN, LR, evaluate, mean_std, run, run_parser

from hskcache.errors import UserError
from hskcache.store.group import on_disk_bytes
from hskcache.teacher.loading import check_model_source, is_model_folder

HSK = (1, 9, 0.1)
STUDENT = "tinybert-3s"


def main() -> None:
    p = run_parser(__doc__)
    p.add_argument("--student", type=Path, help="an initialised student folder used for every seed "
                   "(default: a random-init TinyBERT per seed)")
    p.add_argument("--hsk-lr", type=float, default=LR)
    p.add_argument("--pred-lr", type=float, default=LR)
    p.add_argument("--select-on", default="train-holdout:0.1", help="students train --select-on")
    args = p.parse_args()
    if args.student:
        try:
            check_model_source(str(args.student), "--student")
        except UserError as exc:
            raise SystemExit(str(exc)) from None
    out, data, ml = args.out, args.data, args.max_length
    out.mkdir(parents=True, exist_ok=True)
    stores = {fmt: out / f"store-{fmt}" for fmt in ("fp16", "int8")}
    for fmt, store in stores.items():
        run(BIN / "hskcache", "extract", "--teacher", args.teacher, "--data", data / "train.csv",
            "--student-layers", args.student_layers, "--depth", HSK[0], "--tokens", HSK[1], "--width", HSK[2],
            "--values", fmt, "--max-length", ml, "--batch-size", 64, "--store", store, "--quiet")
    results: dict = {"settings": {k: str(v) for k, v in vars(args).items()}, "hsk": HSK, "stores": {}, "runs": {}}
    for fmt, store in stores.items():
        disk = on_disk_bytes(store)
        hsk_arrays = [n for n in disk if n in ("values", "value_scale", "width_code", "positions")]
        results["stores"][fmt] = {"total_bytes": sum(disk.values()), "hsk_bytes": sum(disk[n] for n in hsk_arrays)}
    for seed in args.seeds:
        init = args.student or out / "students" / f"{STUDENT}-seed{seed}"
        if not is_model_folder(init):
            run(BIN / "students", "build", "tinybert", "--init", "random", "--teacher", args.teacher,
                "--preset", STUDENT, "--seed", seed, "--out", init)
        for fmt, store in stores.items():
            run_dir = out / "runs" / fmt / f"seed{seed}"
            if not (run_dir / "metrics.json").exists():
                start = time.time()
                run_dir.parent.mkdir(parents=True, exist_ok=True)
                run(BIN / "students", "train", "--store", store, "--student", init, "--hsk", "stored",
                    "--hsk-epochs", args.hsk_epochs, "--pred-epochs", args.pred_epochs, "--hsk-lr", args.hsk_lr,
                    "--pred-lr", args.pred_lr, "--seed", seed, "--select-on", args.select_on,
                    "--eval-data", data / "dev.csv", "--out", run_dir,
                    "--threads", args.threads, "--quiet", log=run_dir.parent / f"seed{seed}.log")
                print(f"  {time.time() - start:.0f} s", flush=True)
            dev = json.loads((run_dir / "metrics.json").read_text())["eval"]
            test = evaluate(run_dir / "student", data / "test.csv", run_dir / "test.json", ml)
            results["runs"].setdefault(fmt, []).append({"seed": seed, "dev": dev, "test": test})
    (out / "int8.json").write_text(json.dumps(results, indent=2))
    lines = ["| values | HSK store on disk (values, scales, width code, positions) | store on disk | dev accuracy | test accuracy | seeds |",
             "|---|---|---|---|---|---|"]
    for fmt, runs in results["runs"].items():
        sizes = results["stores"][fmt]
        lines.append(f"| {fmt} | {sizes['hsk_bytes']:,} B | {sizes['total_bytes']:,} B "
                     f"| {mean_std([r['dev']['accuracy'] for r in runs])} "
                     f"| {mean_std([r['test']['accuracy'] for r in runs])} | {len(runs)} |")
    diffs = [b["test"]["accuracy"] - a["test"]["accuracy"] for a, b in zip(results["runs"]["fp16"], results["runs"]["int8"])]
    lines.append(f"\nint8 - fp16 test accuracy per seed: {', '.join(f'{100 * d:+.2f}' for d in diffs)} points"
                 f" (mean {100 * statistics.mean(diffs):+.2f})")
    (out / "int8.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
