"""The terminal summary of a fit: held-out perplexities, the gap closed, the export check."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lcc_lens.fit import FitResult


def summary_table(result: FitResult) -> str:
    """Dense, pruned and restored perplexity on the held-out (out-of-domain) text, then the gap closed."""
    m = result.metrics.to_dict()
    rows = [
        ("dense", m.get("ppl_dense")),
        ("pruned", m.get("ppl_pruned")),
        (_restored_label(result.config.method), m.get("ppl_restored")),
    ]
    domain = m.get("eval_domain", "held-out")
    lines = ["", f"model            held-out PPL ({domain})", "---------------  ------------"]
    lines += [f"{name:<15}  {val:>12.3f}" for name, val in rows if val is not None]
    gap = m.get("gap_closed", float("nan"))
    gap_nll = m.get("gap_closed_nll", float("nan"))
    low, high = m.get("gap_closed_nll_ci", [None, None])
    ci = f" (95 % CI {low * 100:.1f} .. {high * 100:.1f})" if low is not None else ""
    lines.append(
        f"gap closed on {domain} (out of domain): {gap_nll * 100:.1f} %{ci} in log-perplexity "
        f"(NLL); {gap * 100:.1f} % on the perplexity scale"
        if not math.isnan(gap_nll)
        else f"gap closed on {domain}: n/a (the pruned model is not worse than the dense one)"
    )
    for name, row in m.get("evaluation", {}).get("domains", {}).items():
        if name == domain or "restored" not in row["ppl"]:
            continue
        gap_row = row.get("gap_closed", {}).get("restored", {}).get("nll")
        gap_text = f"{gap_row * 100:.1f} %" if gap_row is not None else "n/a"
        ppl = row["ppl"]
        lines.append(
            f"  {name} ({row['role']}): PPL {ppl['dense']:.3f} / {ppl['pruned']:.3f} / "
            f"{ppl['restored']:.3f}, NLL gap closed {gap_text}"
        )
    lines.append(
        f"heads compensated: {m.get('n_selected_heads')} ({result.ranking.method}); trainable "
        f"parameters: {m.get('n_trainable_parameters')}; eval tokens: {m.get('eval_tokens')}"
    )
    if "export_max_abs_logit_diff" in m:
        lines.append(
            "export check: max |logit(hooked) - logit(exported)| = "
            f"{m['export_max_abs_logit_diff']:.2e}"
        )
    if "wall_time_s" in m:
        stages = ", ".join(
            f"{name} {s['seconds']:.0f} s" for name, s in m.get("stages", {}).items()
        )
        lines.append(f"wall time: {m['wall_time_s']:.0f} s" + (f" ({stages})" if stages else ""))
    if result.out_dir is not None:
        lines.append(f"run directory: {result.out_dir}")
    return "\n".join(lines)


def _restored_label(method: str) -> str:
    return "restored (LCC)" if method == "lcc" else f"restored ({method})"
