#!/usr/bin/env bash
# Why HSK collapses the MPNet ETD students, and one fix measured (docs/results.md, "A 12-layer teacher").
# Needs the store and student of tools/experiments/mpnet_results.sh. Rerunning resumes.
#   bash tools/experiments/mpnet_hsk_kept.sh [RUN_DIR]                       (default runs/mpnet)
#   RECIPES="1,9,0.1 stored" SEEDS="0 1 2" bash tools/experiments/mpnet_hsk_kept.sh
# 1. the diagnosis: teacher vs student hidden-state scale, outlier dimensions, the HSK MSE through a random
#    and a selection W; the student right after one full-HSK epoch with each W (stage 1 only).
# 2. the recipes of mpnet_results.sh with --hsk-projection kept (W = the selection matrix of the teacher
#    dimensions ETD kept) instead of the trainer's random W; dev at the end, then test.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/mpnet}
RECIPES=${RECIPES:-1,9,0.1 stored}
SEEDS=${SEEDS:-0 1 2}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
PY=.venv/bin/python
if [ "${DIAGNOSE:-1}" = 1 ]; then
  $PY tools/experiments/mpnet_hsk_diagnosis.py "$RUN" 64
  for w in random kept; do
    $PY tools/experiments/mpnet_hsk_probe.py stored "$w" 2e-4 1 "$(mktemp -d)/probe" --run "$RUN" 2>/dev/null | grep -E "^(before|after)"
  done
fi
S=(--store "$RUN/results/store-compressed" --student "$RUN/results/students/tinybert-4-etd-impt" --hsk-epochs 2
   --pred-epochs 2 --hsk-lr 2e-4 --pred-lr 2e-4 --select-on train-holdout:0.1 --eval-data "$RUN/data/dev.csv"
   --threads 1 --quiet --pred-objective pred,label:0.5 --hsk-projection kept)
for recipe in $RECIPES; do
  for seed in $SEEDS; do
    out="$RUN/hsk-kept/$([ "$recipe" = stored ] && echo full || echo "$recipe")+label:0.5/seed$seed"
    [ -f "$out/metrics.json" ] || .venv/bin/students train "${S[@]}" --hsk "$recipe" --seed "$seed" --out "$out"
    [ -f "$out/test.json" ] || { .venv/bin/students eval --model "$out/student" --data "$RUN/data/test.csv" \
        --max-length 64 --json > "$out/test.json.tmp" && mv "$out/test.json.tmp" "$out/test.json"; }
  done
done
$PY - "$RUN" <<'PY'
import json, statistics, sys
from pathlib import Path
summary = {}
for recipe in sorted((Path(sys.argv[1]) / "hsk-kept").glob("*+label:0.5")):
    runs = sorted(p for p in recipe.glob("seed*") if (p / "test.json").is_file())
    dev = [json.loads((p / "metrics.json").read_text())["eval"]["accuracy"] for p in runs]
    test = [json.loads((p / "test.json").read_text())["accuracy"] for p in runs]
    after_hsk = [[r["eval"]["accuracy"] for r in map(json.loads, (p / "log.jsonl").read_text().splitlines())
                  if r["stage"] == "hsk" and "eval" in r] for p in runs]
    summary[recipe.name] = {p.name: {"dev": d, "test": t, "dev_after_each_hsk_epoch": a}
                            for p, d, t, a in zip(runs, dev, test, after_hsk)}
    sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else float("nan"))
    print(f"{recipe.name} (W kept) seeds {[p.name for p in runs]}: dev {[round(100 * d, 2) for d in dev]} mean "
          f"{100 * statistics.mean(dev):.2f} ± {100 * sd(dev):.2f}; test {[round(100 * t, 2) for t in test]} mean "
          f"{100 * statistics.mean(test):.2f} ± {100 * sd(test):.2f}")
(Path(sys.argv[1]) / "hsk-kept" / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
PY
