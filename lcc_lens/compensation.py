"""The LCC compensation: one learned constant per selected head, added at hook_z.

For selected head (l, h): c = V^T beta + b, with V the fixed lost directions of that head (unit rows) and
beta, b trainable vectors of size d_head. Unselected heads contribute exactly zero. Parameters stay fp32
whatever the model's dtype; the offset is cast to the activation dtype inside the hook.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lcc_lens import __version__
from lcc_lens.atomic import atomic_file
from lcc_lens.errors import CompensationFileError, ConfigError, shown
from lcc_lens.hooks import HOOK_Z, per_layer_hooks, temporary_hooks
from lcc_lens.models import HeadGeometry
from lcc_lens.types import ZOffsets

logger = logging.getLogger(__name__)

Init = Literal["zeros", "lost_component"]
INITS: tuple[Init, ...] = ("zeros", "lost_component")
COMPONENTS: tuple[str, ...] = ("heads", "mlp", "norms", "scales")
"""The parts of the LCC family (:mod:`lcc_lens.family`); ``heads`` alone is the original LCC."""
COMPENSATION_FILE = "compensation.safetensors"


@dataclass(frozen=True)
class CompensationConfig:
    """The shape of a compensation: rank of the lost subspace, which parts train, how it starts."""

    k: int = field(
        default=1, metadata={"help": "rank K of each head's lost subspace V (directions per head)"}
    )
    use_directions: bool = field(
        default=True, metadata={"help": "train beta over the lost directions (c = V^T beta + b)"}
    )
    use_bias: bool = field(
        default=True, metadata={"help": "train the free per-head vector b (c = V^T beta + b)"}
    )
    init: Init = field(
        default="zeros",
        metadata={"help": "start from zero offsets or from the training-free lost components"},
    )
    compensate: tuple[str, ...] = field(
        default=("heads",),
        metadata={
            "help": "the LCC family components to train, comma-separated: heads (per-head offsets "
            "at hook_z), mlp (per-layer MLP output offsets), norms (norm gains), scales (per-head "
            "and per-MLP-channel output scales)"
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"k must be an integer >= 1, got {self.k!r}.")
        if self.init not in INITS:
            raise ConfigError(f"init {self.init!r}; choose one of {INITS}.")
        if not (self.use_directions or self.use_bias):
            raise ConfigError(
                "at least one of use_directions / use_bias must be true (nothing would train)."
            )
        if self.init == "lost_component" and not self.use_bias:
            raise ConfigError("init 'lost_component' sets b, so it needs use_bias=true.")
        names = tuple(self.compensate) if isinstance(self.compensate, (tuple, list)) else ()
        unknown = [c for c in names if c not in COMPONENTS]
        if not names or unknown or len(set(names)) != len(names):
            raise ConfigError(
                f"compensate {self.compensate!r}: give one or more distinct components of "
                f"{', '.join(COMPONENTS)} (e.g. --compensate heads,mlp)."
            )
        object.__setattr__(self, "compensate", names)


class Compensation(nn.Module):
    """Trainable per-head offsets over fixed lost directions.

    heads: the selected (layer, head) pairs. directions: [n_layers, n_heads, d_head, d_head] rows of V for
    every head (only the selected heads' rows are kept), or None to train b alone.
    """

    def __init__(
        self,
        geometry: HeadGeometry,
        heads: Sequence[tuple[int, int]],
        directions: Float[Tensor, "n_layers n_heads d_head d_head"] | None = None,
        *,
        use_directions: bool = True,
        use_bias: bool = True,
    ) -> None:
        super().__init__()
        self.geometry = geometry
        heads = [(int(lay), int(h)) for lay, h in heads]
        for lay, h in heads:
            geometry.flat_index(lay, h)  # raises a clear error when out of range
        if len(set(heads)) != len(heads):
            raise ConfigError(
                "the selected heads contain duplicates; pass each (layer, head) once."
            )
        if use_directions and directions is None:
            raise ConfigError("use_directions=True needs the lost directions V (directions=...).")
        if not (use_directions or use_bias):
            raise ConfigError("at least one of use_directions / use_bias must be enabled.")
        heads = sorted(heads)
        n, d = len(heads), geometry.d_head
        self.use_directions = use_directions
        self.use_bias = use_bias
        self.register_buffer("heads", torch.tensor(heads, dtype=torch.long).reshape(n, 2))
        if directions is not None:
            expected = (geometry.n_layers, geometry.n_heads, d, d)
            if tuple(directions.shape) != expected:
                raise ConfigError(f"directions shape {tuple(directions.shape)} != {expected}.")
            idx = self.heads
            v = directions[idx[:, 0], idx[:, 1]].float().clone() if n else torch.zeros(0, d, d)
        else:
            v = torch.zeros(n, d, d)
        self.register_buffer("directions", v)
        self.beta = nn.Parameter(torch.zeros(n, d), requires_grad=use_directions)
        self.bias = nn.Parameter(torch.zeros(n, d), requires_grad=use_bias)

    # ---- values -------------------------------------------------------------------------------
    @property
    def n_selected(self) -> int:
        return int(self.heads.shape[0])

    def head_offsets(self) -> Float[Tensor, "n_selected d_head"]:
        """c_learned per selected head: V^T beta + b."""
        out = torch.zeros_like(self.bias)
        if self.use_directions:
            out = out + torch.einsum("nk,nkd->nd", self.beta, self.directions)
        if self.use_bias:
            out = out + self.bias
        return out

    def z_offsets(self) -> ZOffsets:
        """Offsets for every head, zero where not selected: [n_layers, n_heads, d_head]."""
        g = self.geometry
        full = torch.zeros(g.n_layers, g.n_heads, g.d_head, device=self.bias.device)
        if self.n_selected:
            full = full.index_put((self.heads[:, 0], self.heads[:, 1]), self.head_offsets())
        return full

    def selected_heads(self) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in self.heads.tolist()]

    @torch.no_grad()
    def init_from(self, components: ZOffsets, *, scale: float = 1.0) -> Compensation:
        """Start from the (training-free) lost components: b = scale * c for the selected heads."""
        if not self.use_bias:
            raise ConfigError("init from lost components needs use_bias=True.")
        self.bias.copy_(scale * components[self.heads[:, 0], self.heads[:, 1]].to(self.bias))
        return self

    # ---- hooks --------------------------------------------------------------------------------
    def layer_offset(self, layer: int) -> Float[Tensor, "n_heads d_head"]:
        """One layer's offsets, zero for its unselected heads: the same ops in the same order as
        head_offsets / z_offsets (zeros + V^T beta + b, scattered into zeros) for that layer only."""
        idx = (self.heads[:, 0] == layer).nonzero().flatten()
        rows = torch.zeros(len(idx), self.geometry.d_head, device=self.bias.device)
        if self.use_directions:
            rows = rows + torch.einsum("nk,nkd->nd", self.beta[idx], self.directions[idx])
        if self.use_bias:
            rows = rows + self.bias[idx]
        return torch.zeros(
            self.geometry.n_heads, self.geometry.d_head, device=rows.device
        ).index_put((self.heads[idx, 1],), rows)

    def layers(self) -> list[int]:
        """The layers with at least one selected head."""
        return sorted({lay for lay, _ in self.selected_heads()})

    def fwd_hooks(self) -> list[tuple[str, Any]]:
        """(hook name, hook fn) pairs adding this compensation at hook_z of every affected layer."""

        def make(layer: int) -> Callable[..., Tensor]:
            def add_offset(z: Tensor, *, hook: Any) -> Tensor:
                return z + self.layer_offset(layer).to(device=z.device, dtype=z.dtype)

            return add_offset

        return per_layer_hooks(make, self.layers())

    def _check_model(self, bridge: Any) -> None:
        g = HeadGeometry.of(bridge)
        mine = self.geometry
        if (g.n_layers, g.n_heads, g.d_head) != (mine.n_layers, mine.n_heads, mine.d_head):
            raise ConfigError(
                f"compensation is for {mine.n_layers}x{mine.n_heads} heads of d_head {mine.d_head}, "
                f"the model has {g.n_layers}x{g.n_heads} of d_head {g.d_head}."
            )
        self.to(next(bridge.parameters()).device)

    @contextlib.contextmanager
    def attach(self, bridge) -> Iterator[Any]:
        """Add the offsets at hook_z for the duration of the block; the hooks are always removed."""
        self._check_model(bridge)
        with temporary_hooks(bridge, fwd_hooks=self.fwd_hooks()):
            yield bridge

    @contextlib.contextmanager
    def attach_for_training(self, bridge) -> Iterator[Any]:
        """Like :meth:`attach`, for the training loop's logits only: on the bridge's plain twin
        (:mod:`lcc_lens.twin`, shared weights) with the offsets added at each output projection's
        input, which is hook_z flattened; on the bridge itself when it has no twin."""
        from lcc_lens.twin import PlainLogits, output_pre_hooks, plain_twin

        twin = plain_twin(bridge)
        if twin is None:
            with self.attach(bridge) as model:
                yield model
            return
        self._check_model(bridge)
        offsets = {lay: (lambda lay=lay: self.layer_offset(lay).flatten()) for lay in self.layers()}
        with output_pre_hooks(twin, offsets):
            yield PlainLogits(twin)

    # ---- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> Path:
        """Write ``compensation.safetensors`` (z_offsets first, then beta, b, V, heads) atomically."""
        tensors, meta = self.payload(metadata)
        return write_compensation_file(path, tensors, meta)

    def payload(
        self, metadata: dict[str, Any] | None = None
    ) -> tuple[dict[str, Tensor], dict[str, str]]:
        """The tensors and string metadata :meth:`save` writes."""
        offsets = self.z_offsets().detach().float().cpu()
        check_finite(offsets)
        meta = {
            "format": "lcc_lens.compensation/1",
            "lcc_lens_version": __version__,
            "hook_name": HOOK_Z,
            "geometry": json.dumps(self.geometry.__dict__),
            "use_directions": str(self.use_directions),
            "use_bias": str(self.use_bias),
        }
        meta.update(
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
        )
        tensors = {
            "z_offsets": offsets.contiguous(),
            "beta": self.beta.detach().float().cpu().contiguous(),
            "bias": self.bias.detach().float().cpu().contiguous(),
            "directions": self.directions.detach().float().cpu().contiguous(),
            "heads": self.heads.cpu().contiguous(),
        }
        return tensors, meta

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Compensation:
        """Read a file written by :meth:`save`, validating shapes and values."""
        tensors, meta = read_compensation_file(path)
        if FAMILY_KEY in meta:
            raise CompensationFileError(
                f"{path}: it holds LCC family components ({meta[FAMILY_KEY]}) beyond the head "
                "offsets; load it with lcc_lens.family.load_compensation (or "
                "CompensationFamily.load) so that none of them is dropped."
            )
        return cls.from_tensors(tensors, meta, path)

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, Tensor], meta: dict[str, str], path: str | os.PathLike[str]
    ) -> Compensation:
        """The head offsets of a read compensation file (see :meth:`load`)."""
        recorded = recorded_geometry(meta, path)
        if recorded is None:
            raise CompensationFileError(
                f"{path}: its metadata records no 'geometry'; it holds offsets only. Load them with "
                "load_z_offsets, or re-export the compensation with lcc_lens."
            )
        g = recorded
        heads = _stored_heads(tensors["heads"], g, path)
        n, d = len(heads), g.d_head
        expect = {"beta": (n, d), "bias": (n, d), "directions": (n, d, d)}
        for name, shape in expect.items():
            if tuple(tensors[name].shape) != shape or not tensors[name].is_floating_point():
                raise CompensationFileError(
                    f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)} "
                    f"({tensors[name].dtype}), expected floats of shape {shape} for the "
                    "recorded geometry. The file is inconsistent; re-export it."
                )
        use_directions, use_bias = (_stored_flag(meta, key, path) for key in _FLAGS)
        if not (use_directions or use_bias):
            raise CompensationFileError(
                f"{path}: its metadata turns off both use_directions and use_bias; the file is "
                "corrupt. Re-export the compensation."
            )
        # V of every head of the model is only read at the selected heads: a zero-sized view, not
        # n_layers x n_heads x d_head x d_head floats (the stored rows are copied below)
        placeholder = torch.zeros(()).expand(g.n_layers, g.n_heads, d, d)
        comp = cls(g, heads, placeholder, use_directions=use_directions, use_bias=use_bias)
        with torch.no_grad():
            order = torch.tensor([g.flat_index(*h) for h in heads], dtype=torch.long)
            perm = torch.argsort(order)  # constructor sorts heads; align the stored rows
            comp.directions.copy_(tensors["directions"][perm])
            comp.beta.copy_(tensors["beta"][perm])
            comp.bias.copy_(tensors["bias"][perm])
        if not torch.allclose(comp.z_offsets(), tensors["z_offsets"], atol=1e-6, rtol=1e-5):
            raise CompensationFileError(
                f"{path}: z_offsets disagree with beta, b and the directions; the file is corrupt."
            )
        return comp


_FLAGS = ("use_directions", "use_bias")
FAMILY_KEY = "family_components"
"""Metadata key of a file that also holds LCC family components (:mod:`lcc_lens.family`)."""


def write_compensation_file(
    path: str | os.PathLike[str], tensors: dict[str, Tensor], meta: dict[str, str]
) -> Path:
    """Write a compensation's tensors and metadata as safetensors, atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _stored_heads(
    heads: Tensor, g: HeadGeometry, path: str | os.PathLike[str]
) -> list[tuple[int, int]]:
    """The (layer, head) pairs of a file's ``heads`` tensor: integers, [n, 2], in range, distinct."""
    problem = ""
    if heads.is_floating_point() or heads.is_complex() or heads.dtype == torch.bool:
        problem = f"holds {heads.dtype} values, not integers"
    elif heads.dim() != 2 or heads.shape[1] != 2:
        problem = f"has shape {tuple(heads.shape)}, not [n_selected, 2]"
    else:
        pairs = [(int(lay), int(h)) for lay, h in heads.tolist()]
        outside = [p for p in pairs if not (0 <= p[0] < g.n_layers and 0 <= p[1] < g.n_heads)]
        if outside:
            problem = (
                f"names head {outside[0]} outside the recorded {g.n_layers} layers x "
                f"{g.n_heads} heads"
            )
        elif len(set(pairs)) != len(pairs):
            problem = "names a head twice"
        else:
            return pairs
    raise CompensationFileError(
        f"{path}: tensor 'heads' {problem}; the file is corrupt or not written by lcc_lens. "
        "Re-export the compensation."
    )


def _stored_flag(meta: dict[str, str], key: str, path: str | os.PathLike[str]) -> bool:
    value = meta.get(key)
    if value not in ("True", "False"):
        raise CompensationFileError(
            f"{path}: metadata {key!r} is {shown(value)}, not 'True' or 'False'; the file is "
            "corrupt. Re-export the compensation."
        )
    return value == "True"


def check_finite(offsets: Tensor) -> None:
    """Refuse NaN/inf offsets (a diverged fit) before they reach a checkpoint."""
    bad = ~torch.isfinite(offsets)
    if bad.any():
        n_bad = int(bad.any(dim=-1).sum()) if offsets.dim() > 1 else int(bad.sum())
        raise CompensationFileError(
            f"compensation offsets contain NaN or inf in {n_bad} head(s): the fit diverged. "
            "Lower the learning rate or resume from an earlier checkpoint."
        )


def read_compensation_file(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Load and validate a compensation file: it exists, parses, and z_offsets is [L, H, d] finite fp32."""
    path = Path(path)
    if path.is_dir():
        path = path / COMPENSATION_FILE
    if not path.is_file():
        raise CompensationFileError(
            f"compensation file {path} does not exist. Pass the {COMPENSATION_FILE} written by a fit run."
        )
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CompensationFileError(f"{path} is not a readable safetensors file ({exc}).") from exc
    if "z_offsets" not in tensors:
        raise CompensationFileError(
            f"{path} has no 'z_offsets' tensor; it is not an lcc_lens compensation."
        )
    z = tensors["z_offsets"]
    g = recorded_geometry(meta, path)
    if g is not None:
        expected = (g.n_layers, g.n_heads, g.d_head)
        if tuple(z.shape) != expected:
            raise CompensationFileError(
                f"{path}: z_offsets has shape {tuple(z.shape)} but the recorded model has "
                f"[n_layers, n_heads, d_head] = {list(expected)}."
            )
    elif z.dim() != 3:
        raise CompensationFileError(
            f"{path}: z_offsets must be [n_layers, n_heads, d_head], got {tuple(z.shape)}."
        )
    if z.dtype != torch.float32:
        raise CompensationFileError(f"{path}: z_offsets must be float32, got {z.dtype}.")
    check_finite(z)
    for name in ("beta", "bias", "directions", "heads"):
        if name not in tensors and "geometry" in meta:
            raise CompensationFileError(
                f"{path} lacks tensor {name!r}; re-export it with lcc_lens."
            )
    return tensors, meta


def recorded_geometry(meta: dict[str, str], path: str | os.PathLike[str]) -> HeadGeometry | None:
    """The model geometry a compensation file's metadata records, or None when it records none."""
    if "geometry" not in meta:
        return None
    try:
        g = HeadGeometry(**json.loads(meta["geometry"]))
        shape = (g.n_layers, g.n_heads, g.n_kv_heads, g.d_head, g.d_model, g.d_vocab)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
            raise TypeError("sizes must be positive integers")
        if not isinstance(g.architecture, str):
            raise TypeError("architecture must be a string")
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise CompensationFileError(
            f"{path}: corrupt metadata: 'geometry' is not a valid model geometry ({exc}). The file "
            "was damaged or not written by lcc_lens; re-export the compensation."
        ) from None
    return g


def load_z_offsets(path: str | os.PathLike[str], geometry: HeadGeometry | None = None) -> ZOffsets:
    """Just the validated offsets of a compensation file, optionally checked against a model's geometry."""
    tensors, _ = read_compensation_file(path)
    z = tensors["z_offsets"]
    if geometry is not None:
        expected = (geometry.n_layers, geometry.n_heads, geometry.d_head)
        if tuple(z.shape) != expected:
            raise CompensationFileError(
                f"{path}: z_offsets {tuple(z.shape)} does not fit this model {list(expected)}."
            )
    return z
