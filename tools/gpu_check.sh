#!/usr/bin/env bash
# The CUDA cases of the test suite and the GPU benchmarks, printed as one table (tools/gpu_check.py);
# under 8 minutes on one H100. Without a CUDA device: says so, shows the CUDA cases skipped, exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python tools/gpu_check.py "$@"
