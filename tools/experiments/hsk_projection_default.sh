#!/usr/bin/env bash
# Does --hsk-projection kept (W starts as the selection matrix of the teacher dimensions ETD kept) help the
# default job's 6-layer MiniLM student, as it did the 12-layer MPNet's (docs/results.md)? Issue 17 item 6.
# Needs runs/default/{store,tinybert-init,data} of tools/run_default.sh. Rerunning resumes (finished runs skipped).
#   bash tools/experiments/hsk_projection_default.sh [RUN_DIR]                  (default runs/default)
#   PROJECTIONS="random kept" SEEDS="0 1 2" JOBS=2 bash tools/experiments/hsk_projection_default.sh
# Each run: the default job's step-5 recipe (--hsk 1,9,0.1, 2+2 epochs, pred,label:0.5, default rates and
# selection), --threads 1, JOBS runs at a time; then students eval on test. The summary prints dev (the
# selected epoch's eval on dev) and test, mean ± std over seeds, per projection.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/default}
PROJECTIONS=${PROJECTIONS:-random kept}
SEEDS=${SEEDS:-0 1 2}
JOBS=${JOBS:-2}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
export RUN
one() {  # one() PROJECTION SEED: train (unless finished), then eval on test (unless done)
  local out="$RUN/hsk-projection/$1/seed$2"
  [ -f "$out/metrics.json" ] || .venv/bin/students train --store "$RUN/store" --student "$RUN/tinybert-init" \
      --hsk 1,9,0.1 --hsk-epochs 2 --pred-epochs 2 --pred-objective pred,label:0.5 --eval-data "$RUN/data/dev.csv" \
      --hsk-projection "$1" --seed "$2" --threads 1 --quiet --out "$out" > "$out.log" 2>&1
  [ -f "$out/test.json" ] || { .venv/bin/students eval --model "$out/student" --data "$RUN/data/test.csv" \
      --max-length 64 --json > "$out/test.json.tmp" && mv "$out/test.json.tmp" "$out/test.json"; }
  echo "done $1 seed $2"
}
export -f one
mkdir -p "$RUN/hsk-projection"
for p in $PROJECTIONS; do mkdir -p "$RUN/hsk-projection/$p"; for s in $SEEDS; do echo "$p $s"; done; done |
  xargs -P "$JOBS" -L 1 bash -c 'one "$0" "$1"'
.venv/bin/python - "$RUN" $PROJECTIONS <<'PY'
import json, statistics, sys
from pathlib import Path
root = Path(sys.argv[1]) / "hsk-projection"
summary = {}
for projection in sys.argv[2:]:
    runs = sorted(p for p in (root / projection).glob("seed*") if (p / "test.json").is_file())
    dev = [json.loads((p / "metrics.json").read_text())["eval"]["accuracy"] for p in runs]
    test = [json.loads((p / "test.json").read_text())["accuracy"] for p in runs]
    summary[projection] = {p.name: {"dev": d, "test": t} for p, d, t in zip(runs, dev, test)}
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else float("nan")
    print(f"W {projection} seeds {[p.name for p in runs]}: dev {[round(100 * d, 2) for d in dev]} mean "
          f"{100 * statistics.mean(dev):.2f} ± {100 * sd(dev):.2f}; test {[round(100 * t, 2) for t in test]} mean "
          f"{100 * statistics.mean(test):.2f} ± {100 * sd(test):.2f}")
(root / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
PY
