"""Regression students against their teacher: which recipe keeps the teacher's Pearson.

Each recipe is a student init and `students train` flags (RECIPES); every run is made by the
project's own command lines (as a user would run them), finished runs are skipped, so the script
can be interrupted and rerun. Dev and test Pearson of every run go to OUT/summary.json and a
table OUT/results.md (mean ± std over the seeds run, ratio of the mean to the teacher's).

    python tools/experiments/regression_results.py --teacher runs/valence/teacher --data data/valence4k \\
        --out runs/valence --recipes soft soft+label --seeds 0 1 2
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from movie_results import BIN, evaluate, run, run_parser

from hskcache.teacher.loading import is_model_folder

PRESET, STUDENT_LAYERS = "tinybert-3s", 3  # the preset and its depth, which the store is extracted for
# student init -> `students build tinybert` flags ({store}, {train} are filled in)
INITS: dict[str, tuple[str, ...]] = {
    "impt": ("--init", "etd-impt", "--store", "{store}"),  # importance: task loss on the store's labelled rows
    "rand": ("--init", "etd-rand"),  # dimensions drawn at random (seeded)
}
# recipe -> (student init, `students train` flags); the schedule and rates come from the command line.
# `as-is` leaves a regression student's output bias as extracted (what `students train` did before
# --regression-head); `+recentre` shifts it to the teacher's mean output before the prediction stage.
AS_IS = ("--regression-head", "as-is")
SOFT, LABEL = ("--pred-objective", "pred"), ("--pred-objective", "pred,label:0.5")
RECIPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "soft": ("impt", ("--hsk", "1,9,0.1", *SOFT, *AS_IS)),
    "soft+label": ("impt", ("--hsk", "1,9,0.1", *LABEL, *AS_IS)),
    "pred-only+label": ("impt", ("--hsk", "none", *LABEL, *AS_IS)),
    "rand:soft+label": ("rand", ("--hsk", "1,9,0.1", *LABEL, *AS_IS)),
    "soft+recentre": ("impt", ("--hsk", "1,9,0.1", *SOFT)),
    "soft+label+recentre": ("impt", ("--hsk", "1,9,0.1", *LABEL)),
    "pred-only+label+recentre": ("impt", ("--hsk", "none", *LABEL)),
    "stored+label+recentre": ("impt", ("--hsk", "stored", *LABEL)),
    "soft+label:1+recentre": ("impt", ("--hsk", "1,9,0.1", "--pred-objective", "pred,label:1")),
    # the soft and gold MSE both ×10: the loss's scale alone (AdamW normalises each parameter's step)
    "soft+label+recentre x10": ("impt", ("--hsk", "1,9,0.1", "--pred-objective", "pred:10,label:5")),
}


def main() -> None:
    p = run_parser(__doc__)
    p.set_defaults(max_length=16)
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=["soft", "soft+label"])
    p.add_argument("--hsk-lr", type=float, help="both stages' rate (default: students train's, by init)")
    p.add_argument("--pred-lr", type=float)
    p.add_argument("--tag", default="", help="suffix of the run folders (e.g. the rate), for several settings")
    args = p.parse_args()
    out, data, ml = args.out, args.data, args.max_length
    out.mkdir(parents=True, exist_ok=True)
    store = out / "store"
    if not (store / "zarr.json").exists():
        run(BIN / "hskcache", "extract", "--teacher", args.teacher, "--data", data / "train.csv", "--store", store,
            "--student-layers", STUDENT_LAYERS, "--tokens", 16, "--width", 1.0, "--max-length", ml,
            "--batch-size", 64, "--quiet")
    rates = [*(["--hsk-lr", args.hsk_lr] if args.hsk_lr else []), *(["--pred-lr", args.pred_lr] if args.pred_lr else [])]
    summary_file = out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {"runs": {}}
    summary["teacher"] = {split: evaluate(args.teacher, data / f"{split}.csv", out / f"teacher-{split}.json", ml)
                          for split in ("dev", "test")}
    for recipe in args.recipes:
        init, flags = RECIPES[recipe]
        name = recipe + args.tag
        for seed in args.seeds:
            seeded = init == "rand"
            init_dir = out / "students" / (f"{init}-seed{seed}" if seeded else init)
            if not is_model_folder(init_dir):
                build = [f.format(store=store, train=data / "train.csv") for f in INITS[init]]
                run(BIN / "students", "build", "tinybert", "--teacher", args.teacher, "--preset", PRESET,
                    "--seed", seed, "--threads", args.threads, "--out", init_dir, *build)
            run_dir = out / "runs" / name.replace(":", "-") / f"seed{seed}"
            if not (run_dir / "metrics.json").exists():
                start = time.time()
                run_dir.parent.mkdir(parents=True, exist_ok=True)
                run(BIN / "students", "train", "--store", store, "--student", init_dir, *flags, *rates,
                    "--hsk-epochs", args.hsk_epochs, "--pred-epochs", args.pred_epochs, "--seed", seed,
                    "--eval-data", data / "dev.csv", "--out", run_dir, "--threads", args.threads, "--quiet",
                    log=run_dir.parent / f"seed{seed}.log")
                print(f"  {time.time() - start:.0f} s", flush=True)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            test = evaluate(run_dir / "student", data / "test.csv", run_dir / "test.json", ml)
            runs = [r for r in summary["runs"].get(name, []) if r["seed"] != seed]
            summary["runs"][name] = sorted(runs + [{
                "seed": seed, "dev": metrics["eval"], "test": test, "selected": metrics["best"],
                "rates": [metrics["config"]["hsk_lr"], metrics["config"]["pred_lr"]],
                "train_seconds": sum(s["seconds"] for s in metrics["stages"].values())}], key=lambda r: r["seed"])
    summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    table = report(summary)
    (out / "results.md").write_text(table)
    print(table)


def mean_std(values: list[float]) -> str:
    return f"{values[0]:.4f}" if len(values) < 2 else f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def report(summary: dict) -> str:
    """One row per recipe (in RECIPES order): dev and test Pearson (mean ± std), their means over the teacher's."""
    t = summary["teacher"]
    lines = ["| recipe | dev Pearson | test Pearson | test Spearman | dev / teacher | test / teacher | seeds |",
             "|---|---|---|---|---|---|---|",
             f"| teacher | {t['dev']['pearson']:.4f} | {t['test']['pearson']:.4f} | {t['test']['spearman']:.4f} "
             "| – | – | – |"]
    order = list(RECIPES)
    for name, runs in sorted(summary["runs"].items(), key=lambda item: (order.index(item[0]) if item[0] in order
                                                                         else len(order), item[0])):
        dev = [r["dev"]["pearson"] for r in runs]
        test = [r["test"]["pearson"] for r in runs]
        lines.append(f"| {name} | {mean_std(dev)} | {mean_std(test)} | "
                     f"{mean_std([r['test']['spearman'] for r in runs])} | "
                     f"{100 * statistics.mean(dev) / t['dev']['pearson']:.1f}% | "
                     f"{100 * statistics.mean(test) / t['test']['pearson']:.1f}% | {len(runs)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
