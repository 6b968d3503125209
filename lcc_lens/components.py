"""Lost components: per-head SVD of the activation differences dZ.

For head (l, h) with dZ = U S V^T (N x d_head), the rank-K lost component is the mean of the rank-K
reconstruction, c = sum_{i<K} mean_n(U[n, i]) S[i] V[i] (sign-invariant), and the rows of V are the unit
directions the pruned head lost, zero-padded to d_head rows when N < d_head.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from lcc_lens import __version__
from lcc_lens.atomic import atomic_file
from lcc_lens.cache import cache_root
from lcc_lens.diff import DiffConfig, HeadDiff, head_diffs, prompts_fingerprint
from lcc_lens.errors import ConfigError
from lcc_lens.models import HeadGeometry, ModelPair
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


CACHE_FORMAT = "lcc_lens.components/2"
"""Tag of a components cache entry: lost components and the whole HeadDiff, in one safetensors file."""


def components_cache_key(
    pair: ModelPair,
    prompts: Sequence[str],
    config: DiffConfig,
    k: int,
    masks: Sequence[Sequence[int]] | None = None,
) -> str:
    """Content key: both models' weights, the prompts (and masks), the diff config, K and the format."""
    payload = {
        "format": CACHE_FORMAT,
        "dense": weights_fingerprint(pair.dense),
        "pruned": weights_fingerprint(pair.pruned),
        "prompts": prompts_fingerprint(prompts, masks),
        "config": asdict(config),
        "k": k,
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Hash of every parameter's bytes, dtype and shape (by name): identifies a model by content.

    Always computed from the current content (no memo keyed on the module's identity or version counter,
    which in-place edits through ``.data`` do not bump); blake2b reads CPU bytes without a copy.
    A bridge hashes as the HF model it wraps; parameters offloaded by an accelerate device map (``meta``
    placeholders) are brought to the CPU one module at a time.
    """
    module = getattr(module, "original_model", module)  # a bridge: hash the HF model it wraps
    digests: dict[str, str] = {}
    for module_name, sub in module.named_modules():
        own = list(sub.named_parameters(recurse=False))
        if not own:
            continue
        with _on_cpu_if_offloaded(sub, own):
            for name, p in sub.named_parameters(recurse=False):
                t = p.detach().contiguous()
                if t.device.type != "cpu":
                    t = t.cpu()
                h = hashlib.blake2b(f"{t.dtype}|{tuple(t.shape)}".encode(), digest_size=16)
                h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
                digests[f"{module_name}.{name}" if module_name else name] = h.hexdigest()
    total = hashlib.blake2b(digest_size=16)
    for name in sorted(digests):
        total.update(f"{name}|{digests[name]}".encode())
    return total.hexdigest()[:20]


def _on_cpu_if_offloaded(
    sub: torch.nn.Module, params: Sequence[tuple[str, torch.nn.Parameter]]
) -> contextlib.AbstractContextManager[object]:
    if not any(p.device.type == "meta" for _, p in params):
        return contextlib.nullcontext()
    from accelerate.utils import align_module_device

    return align_module_device(sub, torch.device("cpu"))


_DIFF_TENSORS = ("samples", "dz_norm", "dense_norm", "cosine", "mean_dz")


def _save_entry(path: Path, lc: LostComponents, diff: HeadDiff) -> None:
    tensors = {
        "components": lc.components,
        "directions": lc.directions,
        "singular_values": lc.singular_values,
        **{f"diff.{name}": getattr(diff, name) for name in _DIFF_TENSORS},
    }
    meta = {
        "format": CACHE_FORMAT,
        "k": lc.k,
        "n_samples": lc.n_samples,
        "n_positions": diff.n_positions,
        "geometry": asdict(diff.geometry),
        "config": asdict(diff.config),
    }
    with atomic_file(path) as tmp:
        save_file(
            {name: t.contiguous() for name, t in tensors.items()},
            str(tmp),
            metadata={"lcc_lens": json.dumps(meta)},
        )


def _load_entry(path: Path) -> tuple[LostComponents, HeadDiff]:
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {})["lcc_lens"])
        t = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
    if meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"format {meta.get('format')!r}")
    lc = LostComponents(
        t["components"], t["directions"], t["singular_values"], meta["k"], meta["n_samples"]
    )
    diff = HeadDiff(
        **{name: t[f"diff.{name}"] for name in _DIFF_TENSORS},
        n_positions=int(meta["n_positions"]),
        geometry=HeadGeometry(**meta["geometry"]),
        config=DiffConfig(**meta["config"]),
    )
    return lc, diff


def cached_lost_components(
    pair: ModelPair,
    prompts: Sequence[str],
    config: DiffConfig = DiffConfig(),
    k: int = 1,
    *,
    masks: Sequence[Sequence[int]] | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[LostComponents, HeadDiff]:
    """Lost components and the head diffs they came from: read from the on-disk cache when the content
    key matches, else computed and stored (both together, so a cache hit loses nothing).
    """
    key = components_cache_key(pair, prompts, config, k, masks)
    root = Path(cache_dir) if cache_dir else cache_root() / "components"
    path = root / f"{key}.safetensors"
    if path.is_file():
        try:
            lc, diff = _load_entry(path)
            logger.info("lost components and head diffs read from cache %s", path)
            return lc, diff
        except Exception as exc:  # a corrupt cache entry is recomputed, not trusted
            logger.warning("ignoring unreadable cache entry %s: %s", path, exc)
    diff = head_diffs(pair, prompts, config, masks=masks)
    lc = lost_components(diff.samples, k)
    from lcc_lens.distributed import context

    if context().is_main:  # every rank computed the same result; one writes it
        root.mkdir(parents=True, exist_ok=True)
        _save_entry(path, lc, diff)
    return lc, diff
