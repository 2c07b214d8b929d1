#!/usr/bin/env bash
# The levers left after mpnet_hsk_kept.sh (docs/results.md, "A 12-layer teacher"): how far each moves the
# 4-layer ETD student of the 12-layer MPNet towards 97% of its teacher. Every lever starts from the best recipe
# measured there (full HSK, W kept, gold labels at 0.5, 2 + 2 epochs at 2e-4) and changes one thing:
#   baseline      nothing: the recipe again on a store re-extracted at schema 5 (chunk bytes are unchanged)
#   importance    ETD-Impt scored on all 1,350 scorable training reviews instead of 320
#   pred4         4 prediction epochs instead of 2
#   transfer      the teacher's soft labels on UNLABELED more training-pool reviews (no gold labels; the
#                 teacher still saw only its 1,500): 2 + 2 epochs over the larger store
#   transfer-pred prediction-only KD on that store (2 epochs), to split what the HSK adds from what data adds
# Needs the teacher and data of tools/experiments/mpnet_results.sh. Long CPU work; rerunning resumes.
#   bash tools/experiments/mpnet_levers.sh [RUN_DIR]                       (default runs/mpnet)
#   LEVERS="baseline pred4" SEEDS="0 1 2" UNLABELED=8700 JOBS=2 bash tools/experiments/mpnet_levers.sh
#   RUNS="transfer:0 transfer:1 pred4:0" bash tools/experiments/mpnet_levers.sh   (these runs, in this order)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/mpnet}
LEVERS=${LEVERS:-baseline importance pred4 transfer transfer-pred}
SEEDS=${SEEDS:-0 1 2}
UNLABELED=${UNLABELED:-8700}   # every training-pool review beyond the teacher's 1,500 (the pool holds 10,200)
JOBS=${JOBS:-2}                # student runs at once, one thread each
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
OUT=$RUN/levers
STORE_FLAGS=(--student-layers 4 --max-length 64 --batch-size 64 --tokens 64 --width 1.0 --quiet)  # movie_results.py --one-store
step() { printf '\n== %s ==  (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
wants() { [[ " $LEVERS " == *" $1 "* ]]; }
mkdir -p "$OUT"

step "1 the 1,500-review store at schema 5 (the flags of mpnet_results.sh)"
.venv/bin/hskcache extract --teacher "$RUN/teacher" --data "$RUN/data/train.csv" --store "$OUT/store" "${STORE_FLAGS[@]}"

if wants transfer || wants transfer-pred; then
  step "2 the transfer set: the 1,500 training reviews, then $UNLABELED more of the training pool without labels"
  $PY tools/build_movie_data.py --out "$OUT/data-transfer" --max-train 1500 --unlabeled "$UNLABELED"
  cmp -s <(cut -c1-200 "$RUN/data/train.csv") <(head -n 1501 "$OUT/data-transfer/transfer.csv" | cut -c1-200) || {
    echo "the transfer set does not start with the teacher's training reviews" >&2; exit 1; }
  OMP_NUM_THREADS=2 .venv/bin/hskcache extract --teacher "$RUN/teacher" --data "$OUT/data-transfer/transfer.csv" \
      --store "$OUT/store-transfer" "${STORE_FLAGS[@]}"
fi

STUDENT=$RUN/results/students/tinybert-4-etd-impt
if wants importance; then
  step "3 ETD-Impt scored on all 1,350 scorable reviews (the 150 held out for selection are never scored)"
  [ -f "$OUT/student-importance1350/config.json" ] || {  # built aside, moved when done: a cut build is no student
    OMP_NUM_THREADS=2 .venv/bin/students build tinybert --teacher "$RUN/teacher" --preset tinybert-4 --init etd-impt \
        --store "$OUT/store" --select-on train-holdout:0.1 --importance-examples 1350 --threads 2 \
        --out "$OUT/student-importance1350.tmp" --overwrite &&
      rm -rf "$OUT/student-importance1350" && mv "$OUT/student-importance1350.tmp" "$OUT/student-importance1350"; }
fi

step "4 the student runs: levers [$LEVERS] x seeds [$SEEDS], $JOBS at a time"
train() {  # lever seed: one run and its test evaluation, skipped when done
  local lever=$1 seed=$2 store=$OUT/store student=$STUDENT out=$OUT/$1/seed$2
  local flags=(--hsk stored --hsk-epochs 2 --pred-epochs 2 --hsk-projection kept)
  case "$lever" in
    baseline) ;;
    importance) student=$OUT/student-importance1350 ;;
    pred4) flags=(--hsk stored --hsk-epochs 2 --pred-epochs 4 --hsk-projection kept) ;;
    transfer) store=$OUT/store-transfer ;;
    transfer-pred) store=$OUT/store-transfer; flags=(--hsk none --pred-epochs 2) ;;
    *) echo "unknown lever $lever" >&2; return 1 ;;
  esac
  [ -f "$out/metrics.json" ] || OMP_NUM_THREADS=1 .venv/bin/students train --store "$store" --student "$student" \
      "${flags[@]}" --hsk-lr 2e-4 --pred-lr 2e-4 --select-on train-holdout:0.1 --eval-data "$RUN/data/dev.csv" \
      --pred-objective pred,label:0.5 --seed "$seed" --threads 1 --quiet --out "$out" > "$out.log" 2>&1
  [ -f "$out/test.json" ] || { OMP_NUM_THREADS=1 .venv/bin/students eval --model "$out/student" \
      --data "$RUN/data/test.csv" --max-length 64 --json > "$out/test.json.tmp" && mv "$out/test.json.tmp" "$out/test.json"; }
  echo "done $lever seed$seed ($(date -u +%H:%M:%S))"
}
export -f train
export OUT STUDENT RUN
queue() {  # "lever seed" lines: RUNS when given (lever:seed words), else every lever x seed
  if [ -n "${RUNS:-}" ]; then for run in $RUNS; do echo "${run%%:*} ${run##*:}"; done
  else for lever in $LEVERS; do for seed in $SEEDS; do echo "$lever $seed"; done; done; fi
}
queue | while read -r lever seed; do mkdir -p "$OUT/$lever"; echo "$lever $seed"; done \
  | xargs -P "$JOBS" -L 1 bash -c 'train "$0" "$1"'

step "5 summary (test mean ± std over the seeds; % of the teacher's test accuracy, 86.82)"
$PY - "$RUN" <<'PY'
import json, statistics, sys
from pathlib import Path
run = Path(sys.argv[1])
teacher = json.loads((run / "results" / "teacher-test.json").read_text())["accuracy"]
summary = {}
for lever in sorted(p for p in (run / "levers").iterdir() if p.is_dir() and list(p.glob("seed*/test.json"))):
    runs = sorted(p for p in lever.glob("seed*") if (p / "test.json").is_file())
    dev = [json.loads((p / "metrics.json").read_text())["eval"]["accuracy"] for p in runs]
    test = [json.loads((p / "test.json").read_text())["accuracy"] for p in runs]
    sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else float("nan"))
    summary[lever.name] = {p.name: {"dev": d, "test": t} for p, d, t in zip(runs, dev, test)}
    print(f"{lever.name:14s} seeds {len(runs)}: dev {100 * statistics.mean(dev):.2f} ± {100 * sd(dev):.2f}  test "
          f"{100 * statistics.mean(test):.2f} ± {100 * sd(test):.2f}  ({100 * statistics.mean(test) / teacher:.1f}% of "
          f"the teacher)  per seed test {[round(100 * t, 2) for t in test]}")
(run / "levers" / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
PY
