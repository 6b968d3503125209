"""Does lcc_lens's perplexity agree with lm-eval's own loglikelihood_rolling on the real model?

    HF_HUB_OFFLINE=1 .venv/bin/python -m analysis.perplexity_agreement

Scores the same held-out text (passages of ``lcc_lens.corpora`` split "test") with
``lcc_lens.evaluation.perplexity`` and with lm-eval's ``HFLM.loglikelihood_rolling`` at the same window
length, on the embedded SmolLM2-135M (dense) and, with ``--pruned``, a pruned checkpoint. Prints the
token counts, the summed negative log-likelihoods and their relative difference; exits 1 when they
disagree (token counts differ, or the NLLs by more than ``--tolerance`` relative).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lcc_lens.corpora import passages  # noqa: E402
from lcc_lens.evaluation.perplexity import perplexity  # noqa: E402
from lcc_lens.models import load_causal_lm  # noqa: E402

logger = logging.getLogger("analysis.perplexity_agreement")


def compare(source: str, text: str, context: int, batch_size: int) -> dict[str, float]:
    """Token count and summed NLL from both implementations for one model."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tok = load_causal_lm(source)
    ours = perplexity(model, tok, text, context_length=context, batch_size=batch_size)
    lm = HFLM(pretrained=model, tokenizer=tok, max_length=context, batch_size=batch_size)
    request = Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    (loglik,) = lm.loglikelihood_rolling([request], disable_tqdm=True)
    n_lm_eval = len(lm.tok_encode(text))
    return {
        "n_tokens_ours": ours.n_tokens,
        "n_tokens_lm_eval": n_lm_eval,
        "nll_ours": ours.nll_sum,
        "nll_lm_eval": -loglik,
        "rel_diff": abs(ours.nll_sum + loglik) / abs(loglik),
        "ppl_ours": ours.ppl,
        "windows": ours.n_windows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--pruned", default=None, help="also check this pruned checkpoint directory")
    p.add_argument("--context", type=int, default=2048, help="window length (default 2048)")
    p.add_argument("--n-passages", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    text = "\n\n".join(passages("test", args.n_passages, min_chars=600, max_chars=2400, seed=1))
    sha = hashlib.sha256(text.encode()).hexdigest()[:16]
    ok = True
    for label, source in (("dense", args.model), ("pruned", args.pruned)):
        if source is None:
            continue
        r = compare(source, text, args.context, args.batch_size)
        agree = r["n_tokens_ours"] == r["n_tokens_lm_eval"] and r["rel_diff"] <= args.tolerance
        ok &= agree
        print(
            f"{label}: text sha256 {sha}, {r['n_tokens_ours']} tokens (lm-eval {r['n_tokens_lm_eval']}) "
            f"in {r['windows']} windows of {args.context}; NLL ours {r['nll_ours']:.4f}, lm-eval "
            f"{r['nll_lm_eval']:.4f}, relative difference {r['rel_diff']:.2e}; ppl {r['ppl_ours']:.4f} "
            f"-> {'agree' if agree else 'DISAGREE'}",
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
