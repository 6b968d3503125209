#!/usr/bin/env bash
# The test command: builds .venv (scripts/setup.sh), then runs the offline test suite:
# every unit and integration test on tiny random models, plus the CI-budgeted end-to-end runs on the real
# embedded SmolLM2-135M (tests/slow/test_ci_real.py: fit; tests/slow/test_eval_real.py: eval with --limit).
# `scripts/test.sh --all` runs every slow test too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${1:-}" = "--all" ]; then
  exec .venv/bin/python -m pytest -q
fi
.venv/bin/python -m pytest -q -m "not slow"
.venv/bin/python -m pytest -q tests/slow/test_ci_real.py tests/slow/test_eval_real.py
