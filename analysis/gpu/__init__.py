"""The GPU check (issue 26): one command that measures lcc_lens on a GPU, most valuable figures first.

``bash scripts/gpu_check.sh [--smoke] [--out DIR]`` runs :mod:`analysis.gpu.check`, which runs each
section in its own process under one time budget and writes one JSON file per section under ``--out``
as soon as that section ends (:mod:`analysis.gpu.record`):

1. ``fit.json`` (:mod:`analysis.gpu.fit_section`): the default ``lcc fit --device cuda --dtype
   bfloat16`` on the embedded model, stage by stage, beside the committed CPU fp32 figures;
2. ``bench.json`` (:mod:`analysis.gpu.bench_section`): the restoration benchmark on Wanda 50 % at three
   training budgets, each method at the learning rate it chose on the validation domain;
3. ``gemma_fit.json``: Gemma 3 270M's default fit in bf16, when the extra is installed and time remains.

``python -m analysis.gpu.report`` renders the README table and the budget curve from those files.
"""
