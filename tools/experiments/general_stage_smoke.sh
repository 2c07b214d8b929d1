#!/usr/bin/env bash
# The general stage on the packaged MiniLM encoder, small: a general store of the first N passages of the
# packaged general corpus (tools/build_general_corpus.py), two tinybert-3s students (ETD-Impt of the bare
# encoder by the Gaussian expected score, and random), one --general epoch each; prints each step's wall time
# and the held-out distillation losses. A smoke of the real family and sizes, not a result (see docs/results.md).
# Usage: bash tools/experiments/general_stage_smoke.sh [OUT] [PASSAGES]   (default /tmp/general-smoke, 100)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/general-smoke}; PASSAGES=${2:-100}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python; BIN=.venv/bin
ENCODER=$($PY -c "from hskcache.embedded import minilm_encoder; print(minilm_encoder())")
rm -rf "$OUT"; mkdir -p "$OUT"
timed() { local name=$1; shift; local t0=$SECONDS; "$@"; echo "time $name: $((SECONDS - t0)) s"; }

$PY tools/build_general_corpus.py --out "$OUT/corpus.txt" > /dev/null
timed extract $BIN/hskcache extract --teacher "$ENCODER" --data "$OUT/corpus.txt" --limit "$PASSAGES" \
  --store "$OUT/store" --student-layers 3 --knowledge hsk,qq,kk --max-length 128 --quiet
timed build-etd-impt $BIN/students build tinybert --teacher "$ENCODER" --store "$OUT/store" --preset tinybert-3s \
  --importance-examples 256 --out "$OUT/etd" --threads 1
timed build-random $BIN/students build tinybert --teacher "$ENCODER" --init random --preset tinybert-3s --out "$OUT/random"
for init in etd random; do
  timed "general-$init" $BIN/students train --store "$OUT/store" --student "$OUT/$init" --general \
    --objective hsk,qq,kk --hsk-epochs 1 --out "$OUT/$init-run" --threads 1 --quiet
  $PY -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], 'held-out loss', m['best']['value'], \
'rows/s', round(m['stages']['hsk']['examples_per_second'], 1))" "$OUT/$init-run/metrics.json" "$init"
done
