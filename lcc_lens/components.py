"""Lost components: per-head SVD of the activation differences dZ.

For head (l, h) with dZ = U S V^T (N x d_head), the rank-K lost component is the mean of the rank-K
reconstruction, c = sum_{i<K} mean_n(U[n, i]) S[i] V[i] (sign-invariant), and the rows of V are the unit
directions the pruned head lost, zero-padded to d_head rows when N < d_head.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from lcc_lens import __version__
from lcc_lens.atomic import atomic_file
from lcc_lens.diff import DiffConfig, HeadDiff, head_diffs, prompts_fingerprint
from lcc_lens.errors import ConfigError
from lcc_lens.models import ModelPair, cache_root
from lcc_lens.types import ZOffsets

logger = logging.getLogger(__name__)


@dataclass
class LostComponents:
    """Per-head lost components, directions and spectra, indexed [layer, head, ...]."""

    components: ZOffsets
    directions: Float[Tensor, "n_layers n_heads d_head d_head"]
    singular_values: Float[Tensor, "n_layers n_heads d_head"]
    k: int
    n_samples: int

    @property
    def norms(self) -> Float[Tensor, "n_layers n_heads"]:
        return self.components.norm(dim=-1)

    def explained(self, k: int | None = None) -> Float[Tensor, "n_layers n_heads"]:
        """Share of ||dZ||_F^2 in the top ``k`` singular values (default: this object's K)."""
        s2 = self.singular_values.square()
        k = self.k if k is None else k
        return s2[..., :k].sum(-1) / s2.sum(-1).clamp_min(1e-30)


def lost_components(
    dz: Float[Tensor, "n_layers n_heads n_samples d_head"], k: int = 1
) -> LostComponents:
    """SVD each head's dZ and form the rank-``k`` lost component (correct for any layer/head counts)."""
    if dz.dim() != 4:
        raise ConfigError(
            f"dz must be [n_layers, n_heads, n_samples, d_head], got {tuple(dz.shape)}."
        )
    n_layers, n_heads, n, d_head = dz.shape
    if not 1 <= k <= d_head:
        raise ConfigError(f"k must be in [1, d_head={d_head}], got {k}.")
    if n < 1:
        raise ConfigError("dz holds no samples.")
    u, s, vh = torch.linalg.svd(
        dz.double(), full_matrices=False
    )  # u [..,N,r], s [..,r], vh [..,r,D]
    r = s.shape[-1]
    kk = min(k, r)
    coef = u[..., :, :kk].mean(dim=-2) * s[..., :kk]  # [L, H, kk]
    comp = torch.einsum("lhk,lhkd->lhd", coef, vh[..., :kk, :])
    directions = torch.zeros(n_layers, n_heads, d_head, d_head, dtype=torch.float64)
    directions[..., :r, :] = vh
    spectrum = torch.zeros(n_layers, n_heads, d_head, dtype=torch.float64)
    spectrum[..., :r] = s
    return LostComponents(comp.float(), directions.float(), spectrum.float(), k, n)


def components_cache_key(
    pair: ModelPair, prompts: Sequence[str], config: DiffConfig, k: int, masks=None
) -> str:
    """Content key: both models' weights, the prompts (and masks), the diff config, K and the version."""
    payload = {
        "dense": weights_fingerprint(pair.dense),
        "pruned": weights_fingerprint(pair.pruned),
        "prompts": prompts_fingerprint(prompts, masks),
        "config": asdict(config),
        "k": k,
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


_WEIGHT_FP: dict[int, tuple[int, str]] = {}


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Hash of every parameter's bytes (deduplicated, by name): identifies a pruned model by content."""
    version = sum(p._version for p in module.parameters())
    cached = _WEIGHT_FP.get(id(module))
    if cached is not None and cached[0] == version:
        return cached[1]
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    fp = h.hexdigest()[:20]
    _WEIGHT_FP[id(module)] = (version, fp)
    return fp


def cached_lost_components(
    pair: ModelPair,
    prompts: Sequence[str],
    config: DiffConfig = DiffConfig(),
    k: int = 1,
    *,
    masks: Sequence[Sequence[int]] | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[LostComponents, HeadDiff | None]:
    """Lost components from the on-disk cache when the content key matches, else computed and stored.

    Returns the components and the HeadDiff (None when read from the cache).
    """
    key = components_cache_key(pair, prompts, config, k, masks)
    root = Path(cache_dir) if cache_dir else cache_root() / "components"
    path = root / f"{key}.safetensors"
    if path.is_file():
        try:
            t = load_file(str(path))
            logger.info("lost components read from cache %s", path)
            meta = json.loads((root / f"{key}.json").read_text())
            return (
                LostComponents(
                    t["components"], t["directions"], t["singular_values"], k, meta["n_samples"]
                ),
                None,
            )
        except Exception as exc:  # a corrupt cache entry is recomputed, not trusted
            logger.warning("ignoring unreadable cache entry %s: %s", path, exc)
    diff = head_diffs(pair, prompts, config, masks=masks)
    lc = lost_components(diff.samples, k)
    root.mkdir(parents=True, exist_ok=True)
    with atomic_file(root / f"{key}.json") as tmp:
        tmp.write_text(json.dumps({"n_samples": lc.n_samples, "k": k, "config": asdict(config)}))
    with atomic_file(path) as tmp:
        save_file(
            {
                "components": lc.components.contiguous(),
                "directions": lc.directions.contiguous(),
                "singular_values": lc.singular_values.contiguous(),
            },
            str(tmp),
        )
    return lc, diff
