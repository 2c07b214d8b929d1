#!/usr/bin/env bash
# Issue 20 item 6: does a cached general stage help the task stage, at equal task-stage compute?
# One general store from the packaged MiniLM encoder (bare, no head) over the packaged general corpus; two general
# students (tinybert-3s: ETD-Impt of the encoder by the Gaussian expected score, and random), each distilled once
# with --general; then, on each task, three task-stage starts with the same recipe and seeds:
#   etd             ETD-Impt of the fine-tuned task teacher (today's default; the teacher's head sliced)
#   general-etd-eN     the general stage (N = GENERAL_EPOCHS epochs) on top of ETD (the general student, a fresh
#                      seeded head)
#   general-random-eN  the general stage from random init (likewise)
# A rerun with another GENERAL_EPOCHS adds that general stage's students and their task runs beside the others.
# Task stage (all three): the default job's step 5 (HSK (1,9,0.1) 2 epochs, then soft + gold labels 2 epochs,
# the prediction epoch chosen on 10% of the training rows held out), both stages at 2e-4 for every start (the
# extracted students' measured rate; the general students' own defaults were never measured), test reported.
# Long CPU work; rerunning resumes.
#   bash tools/experiments/general_stage_results.sh [OUT]                     (default runs/general)
#   TASKS="movies convention" SEEDS="0 1 2" GENERAL_EPOCHS=3 IMPORTANCE=256 JOBS=2 MOVIES_RUN=runs/default \
#     bash tools/experiments/general_stage_results.sh
# PASSAGES / MAX_TRAIN: only the first N corpus passages / training rows per task (a smoke of the script; every
# figure in docs/results.md was made without them).
# MOVIES_RUN: a finished `tools/run_default.sh` run folder whose data, teacher, store and ETD init the movie task
# reuses (else they are made here the same way).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/general}
TASKS=${TASKS:-movies convention}
SEEDS=${SEEDS:-0 1 2}
GENERAL_EPOCHS=${GENERAL_EPOCHS:-3}
G=e$GENERAL_EPOCHS  # the general runs' and their task starts' tag
IMPORTANCE=${IMPORTANCE:-256}   # corpus rows scoring the encoder's ETD-Impt (8 backward passes each: ~3 s a row)
JOBS=${JOBS:-2}
LIMIT=(${PASSAGES:+--limit "$PASSAGES"})
CAP=${MAX_TRAIN:+--max-train $MAX_TRAIN}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
PY=.venv/bin/python
BIN=.venv/bin
ENCODER=$($PY -c "from hskcache.embedded import minilm_encoder; print(minilm_encoder())")
step() { printf '\n== %s ==  (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
timed() { local name=$1; shift; local t0=$SECONDS; "$@"; echo "$name $((SECONDS - t0))" >> "$OUT/seconds.txt"; }
mkdir -p "$OUT"

step "1 the general corpus and store (bare MiniLM encoder: hsk, qq, kk, val; no logits, no labels)"
$PY tools/build_general_corpus.py --out "$OUT/corpus.txt"
complete() { [ -f "$1/zarr.json" ] && grep -q '"complete": true' "$1/zarr.json"; }
complete "$OUT/general-store" || OMP_NUM_THREADS=2 timed extract-general $BIN/hskcache extract --teacher "$ENCODER" \
  --data "$OUT/corpus.txt" --store "$OUT/general-store" --student-layers 3 --knowledge hsk,qq,kk,val --max-length 128 "${LIMIT[@]}" --quiet
$BIN/hskcache budget --store "$OUT/general-store" > "$OUT/general-store-budget.txt"

general_students() {  # step 2: independent of step 3, so the two run side by side, a core each
step "2 the general students: ETD-Impt of the encoder and random, one --general run each"
[ -f "$OUT/general/etd-init/config.json" ] || timed build-general-etd $BIN/students build tinybert --teacher "$ENCODER" \
  --store "$OUT/general-store" --preset tinybert-3s --importance-examples "$IMPORTANCE" --out "$OUT/general/etd-init" --threads 1
[ -f "$OUT/general/random-init/config.json" ] || $BIN/students build tinybert --teacher "$ENCODER" --init random \
  --preset tinybert-3s --seed 0 --out "$OUT/general/random-init"
general() {  # init: one --general run (selection on 10% of the corpus's rows by the distillation loss)
  [ -f "$OUT/general/$1-$G/metrics.json" ] || timed "general-$1-$G" $BIN/students train --store "$OUT/general-store" \
    --student "$OUT/general/$1-init" --general --objective hsk,qq,kk,val --hsk-epochs "$GENERAL_EPOCHS" \
    --select-on train-holdout:0.1 --seed 0 --threads 1 --quiet --out "$OUT/general/$1-$G" > "$OUT/general/$1-$G.log" 2>&1
}
general etd & general random & wait
}

task_data() {  # task: its data, fine-tuned teacher, task store and ETD-Impt init under $OUT/$task
  local task=$1 dir=$OUT/$1 len
  if [ "$task" = movies ] && [ -n "${MOVIES_RUN:-}" ]; then
    mkdir -p "$dir"; for part in data teacher store tinybert-init; do ln -sfn "$(realpath "$MOVIES_RUN/$part")" "$dir/$part"; done
    return
  fi
  case "$task" in
    movies) len=64; $PY tools/build_movie_data.py --out "$dir/data" ${CAP:---max-train 3000}; NAMES=rotten,fresh; EPOCHS=1 ;;
    convention) len=128; $PY tools/build_convention_data.py --out "$dir/data" $CAP; NAMES=democrat,republican; EPOCHS=2 ;;
  esac
  # fine-tuned into a side folder, named teacher only when every epoch has run (a cut run starts again)
  [ -f "$dir/teacher/config.json" ] || { timed "finetune-$task" $BIN/hskcache finetune --teacher "$ENCODER" \
    --data "$dir/data/train.csv" --eval-data "$dir/data/dev.csv" --out "$dir/teacher.tmp" --epochs "$EPOCHS" \
    --max-length "$len" --batch-size 32 --lr 5e-5 --label-names "$NAMES" --overwrite && mv "$dir/teacher.tmp" "$dir/teacher"; }
  complete "$dir/store" || $BIN/hskcache extract --teacher "$dir/teacher" --data "$dir/data/train.csv" --store "$dir/store" \
      --student-layers 3 --depth 4 --tokens 16 --width 0.2 --max-length "$len" --quiet
  [ -f "$dir/tinybert-init/config.json" ] || $BIN/students build tinybert --init etd-impt --store "$dir/store" \
    --teacher "$dir/teacher" --preset tinybert-3s --out "$dir/tinybert-init"
}
general_students > "$OUT/general.log" 2>&1 &
GENERAL_PID=$!
for task in $TASKS; do step "3 $task: data, teacher, task store, ETD init"; task_data "$task"; done
wait "$GENERAL_PID" || { echo "step 2 failed: see $OUT/general.log" >&2; exit 1; }
cat "$OUT/general.log"
for task in $TASKS; do
  [ -f "$OUT/$task/teacher-test.json" ] || { $BIN/students eval --model "$OUT/$task/teacher" \
    --data "$OUT/$task/data/test.csv" --json > "$OUT/$task/teacher-test.json.tmp" &&
    mv "$OUT/$task/teacher-test.json.tmp" "$OUT/$task/teacher-test.json"; }
done

step "4 the task stage: tasks [$TASKS] x starts [etd general-etd-$G general-random-$G] x seeds [$SEEDS], $JOBS at a time"
task_run() {  # task start seed
  local task=$1 start=$2 seed=$3 dir=$OUT/$1 student out=$OUT/$1/runs/$2/seed$3
  case "$start" in etd) student=$dir/tinybert-init ;; general-*) student=$OUT/general/${start#general-}/student ;; esac
  mkdir -p "$(dirname "$out")"
  [ -f "$out/metrics.json" ] || $BIN/students train --store "$dir/store" --student "$student" --hsk 1,9,0.1 \
    --hsk-epochs 2 --pred-epochs 2 --pred-objective pred,label:0.5 --hsk-lr 2e-4 --pred-lr 2e-4 \
    --select-on train-holdout:0.1 --eval-data "$dir/data/dev.csv" --seed "$seed" --threads 1 --quiet --out "$out" \
    > "$out.log" 2>&1
  [ -f "$out/test.json" ] || { $BIN/students eval --model "$out/student" --data "$dir/data/test.csv" --json \
    > "$out/test.json.tmp" && mv "$out/test.json.tmp" "$out/test.json"; }
  echo "done $task $start seed$seed ($(date -u +%H:%M:%S))"
}
export -f task_run
export OUT BIN
for task in $TASKS; do for start in etd general-etd-$G general-random-$G; do for seed in $SEEDS; do
  echo "$task $start $seed"; done; done; done | xargs -P "$JOBS" -L 1 bash -c 'task_run "$0" "$1" "$2"'

step "5 summary (test mean ± std over the seeds run; docs/results.md)"
$PY - "$OUT" $TASKS <<'PY'
import json, statistics, sys
from pathlib import Path
out, tasks = Path(sys.argv[1]), sys.argv[2:]
sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else float("nan")
summary = {"seconds": dict(line.split() for line in (out / "seconds.txt").read_text().splitlines()), "tasks": {}}

from hskcache.kinds import stored_kinds
from hskcache.store.group import StoreData, describe
from hskcache.store.shape import StoreShape
store = str(out / "general-store")
meta, disk = StoreData(store).meta, describe(store)["bytes"]
per_kind = {kind.name: sum(disk[a.name] for a in kind.arrays(StoreShape.of_store(meta))) for kind in
            stored_kinds(StoreShape.of_store(meta))}  # an array two kinds share counts in each
summary["general_store"] = {"passages": meta.corpus.passages, "sequences": meta.num_examples, "bytes": sum(disk.values()),
                            "bytes_per_kind": per_kind}
print(f"general store: {meta.corpus.passages:,} passages, {meta.num_examples:,} sequences, {sum(disk.values()):,} B on disk")
for name, n in per_kind.items():
    print(f"  {name:8s} {n:>14,} B  {n / meta.corpus.passages:>10,.0f} B/passage  {n / meta.num_examples:>10,.0f} B/sequence")
generals = sorted(p.name for p in (out / "general").iterdir() if (p / "metrics.json").is_file())
for name in generals:  # etd-e3, random-e3, ...: each general run's selected epoch and held-out loss
    summary[f"general-{name}"] = json.loads((out / "general" / name / "metrics.json").read_text())["best"]
for task in tasks:
    teacher = json.loads((out / task / "teacher-test.json").read_text())["accuracy"]
    summary["tasks"][task] = {"teacher_test": teacher}
    print(f"{task}: teacher test {100 * teacher:.2f}")
    for start in ["etd", *(f"general-{name}" for name in generals)]:
        runs = sorted(p for p in (out / task / "runs" / start).glob("seed*") if (p / "test.json").is_file())
        if not runs:
            continue
        dev = [json.loads((p / "metrics.json").read_text())["eval"]["accuracy"] for p in runs]
        test = [json.loads((p / "test.json").read_text())["accuracy"] for p in runs]
        summary["tasks"][task][start] = {p.name: {"dev": d, "test": t} for p, d, t in zip(runs, dev, test)}
        etd = [r["test"] for r in summary["tasks"][task].get("etd", {}).values()]
        welch = "" if start == "etd" or min(len(etd), len(test)) < 2 else (  # test against ETD alone's seeds
            f"  vs etd {100 * (statistics.mean(test) - statistics.mean(etd)):+.2f}, Welch t "
            f"{(statistics.mean(test) - statistics.mean(etd)) / (statistics.variance(test) / len(test) + statistics.variance(etd) / len(etd)) ** 0.5:.1f}")
        print(f"  {start:18s} seeds {len(runs)}: dev {100 * statistics.mean(dev):.2f} ± {100 * sd(dev):.2f}  test "
              f"{100 * statistics.mean(test):.2f} ± {100 * sd(test):.2f}  per seed {[round(100 * t, 2) for t in test]}"
              + welch)
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.2 * (len(tasks) + 1), 3.8))
for ax, task in zip(axes, tasks):  # each seed's test accuracy per start, the teacher's as a line
    starts = [k for k in summary["tasks"][task] if k != "teacher_test"]
    for i, start in enumerate(starts):
        accs = [100 * r["test"] for r in summary["tasks"][task][start].values()]
        ax.plot([i] * len(accs), accs, "o", alpha=0.7, color=f"C{i}")
        ax.errorbar(i + 0.15, statistics.mean(accs), yerr=sd(accs) if len(accs) > 1 else 0, fmt="k_", capsize=4)
    ax.axhline(100 * summary["tasks"][task]["teacher_test"], color="grey", ls="--", label="teacher")
    ax.set_xticks(range(len(starts)), [s.replace("general-", "general\n") for s in starts], fontsize=8)
    ax.set_title(f"{task}: test accuracy by task-stage start"); ax.set_ylabel("%"); ax.legend(fontsize=8)
for name in generals:  # the general runs' selection score by epoch
    held = [r["holdout"]["loss"] for r in map(json.loads, (out / "general" / name / "log.jsonl").read_text().splitlines())
            if "holdout" in r]
    axes[-1].plot(range(1, len(held) + 1), held, "o-", label=name, color=f"C{1 + generals.index(name)}")  # its start's
axes[-1].set_title("general stage: held-out distillation loss"); axes[-1].set_xlabel("epoch"); axes[-1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(out / "general_stage.png", dpi=110)
print(f"wrote {out / 'summary.json'} and {out / 'general_stage.png'}")
PY
