#!/usr/bin/env bash
# The test command: builds .venv (scripts/setup.sh), checks lint and format (ruff), then runs the offline
# test suite:
# every unit and integration test on tiny random models, plus the CI-budgeted end-to-end runs on the real
# embedded SmolLM2-135M (tests/slow/test_ci_real.py: fit; tests/slow/test_eval_real.py: eval with --limit;
# tests/slow/test_notebooks_real.py: both notebooks, about 5 min; tests/slow/test_gpu_check_smoke.py:
# scripts/gpu_check.sh --smoke, about 1.5 min once test_ci_real has cached the prune).
# `scripts/test.sh --all` runs every slow test too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ "${1:-}" = "--all" ]; then
  exec .venv/bin/python -m pytest -q
fi
.venv/bin/python -m pytest -q -m "not slow"
.venv/bin/python -m pytest -q tests/slow/test_ci_real.py tests/slow/test_eval_real.py \
  tests/slow/test_notebooks_real.py tests/slow/test_gpu_check_smoke.py
