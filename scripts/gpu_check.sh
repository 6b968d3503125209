#!/usr/bin/env bash
# The GPU check (issue 26): one command that measures lcc_lens on one GPU in about 7.5 minutes and writes
# every figure as JSON under --out (default analysis/results/gpu), most valuable first:
#   fit.json        the default `lcc fit --device cuda --dtype bfloat16`, stage by stage, beside the
#                   committed CPU fp32 figures, with the export check;
#   bench.json      the restoration benchmark on Wanda 50 % at 16 / 256 / 2,048 steps of 8 x 128 tokens,
#                   each method at the learning rate it chose on the validation domain;
#   gemma_fit.json  Gemma 3 270M's default fit in bf16 (needs LCC_EXTRAS=gemma), if time remains.
# Then `python -m analysis.gpu.report` renders the README table and the budget curve from them.
#
#   bash scripts/gpu_check.sh                    # on a GPU machine
#   bash scripts/gpu_check.sh --smoke --out DIR  # CPU smoke size (tests/slow/test_gpu_check_smoke.py runs it)
#   bash scripts/gpu_check.sh --help             # every flag (budget, budgets, device, dtypes, ...)
#
# Python: $LCC_PYTHON if set (an interpreter that already has a CUDA build of torch and lcc_lens's
# dependencies), else .venv/bin/python, built by scripts/setup.sh when missing. This script installs
# nothing itself: setup.sh installs the CPU build of torch unless LCC_TORCH_SPEC names another, e.g.
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cu128 LCC_TORCH_SPEC="torch==2.13.0+cu128" \
#     bash scripts/setup.sh
# (run that on the GPU machine before this script, with network access; never needed for --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${LCC_PYTHON:-.venv/bin/python}
if [ -z "${LCC_PYTHON:-}" ] && [ ! -x "$PY" ]; then
  bash scripts/setup.sh
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m analysis.gpu.check "$@"
