#!/usr/bin/env bash
# Installs everything, then runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest tests "$@"
