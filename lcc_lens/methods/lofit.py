"""LoFiT: a per-head scale and bias at hook_z, z <- (1 + A) * z + v, on heads it selects itself.

Head selection is LoFiT's own first stage: a scale A on every head is trained with an L1 penalty on A,
and the heads with the largest ||A||_1 are kept (as many as LCC compensates). The second stage trains A
and v on those heads only, with the benchmark's shared training loop and objective.

Export: W_O concat((1 + A) z + v) = (W_O diag(1 + A)) concat(z) + W_O concat(v). The bias term goes
through :func:`lcc_lens.export.merge`; the scale multiplies W_O's input columns of the head, so zeros stay
zero and the export keeps the pruned sparsity.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from lcc_lens.errors import ConfigError
from lcc_lens.hooks import hook_z_name, per_layer_hooks, temporary_hooks
from lcc_lens.methods.base import RestorationMethod, clean_copy

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.methods.context import MethodContext
    from lcc_lens.models import HeadGeometry

logger = logging.getLogger(__name__)


class HeadScaleShift(nn.Module):
    """Trainable (A, v) per listed head; ``scales()`` / ``shifts()`` give full [L, H, d_head] tensors."""

    def __init__(self, geometry: HeadGeometry, heads: list[tuple[int, int]]) -> None:
        super().__init__()
        self.geometry = geometry
        heads = sorted((int(a), int(b)) for a, b in heads)
        for lay, h in heads:
            geometry.flat_index(lay, h)
        n, d = len(heads), geometry.d_head
        self.register_buffer("heads", torch.tensor(heads, dtype=torch.long).reshape(n, 2))
        self.scale = nn.Parameter(torch.zeros(n, d))
        self.shift = nn.Parameter(torch.zeros(n, d))

    def _full(self, values: Tensor, fill: float) -> Float[Tensor, "n_layers n_heads d_head"]:
        g = self.geometry
        full = torch.full((g.n_layers, g.n_heads, g.d_head), fill, device=values.device)
        if self.heads.shape[0]:
            full = full.index_put((self.heads[:, 0], self.heads[:, 1]), values + fill)
        return full

    def scales(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        """1 + A for every head (1 where not selected)."""
        return self._full(self.scale, 1.0)

    def shifts(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        """v for every head (0 where not selected)."""
        return self._full(self.shift, 0.0)

    def fwd_hooks(self) -> list[tuple[str, Any]]:
        layers = sorted({int(lay) for lay in self.heads[:, 0].tolist()})

        def make(layer: int) -> Any:
            def scale_shift(z: Tensor, *, hook: Any) -> Tensor:
                a = self.scales()[layer].to(device=z.device, dtype=z.dtype)
                v = self.shifts()[layer].to(device=z.device, dtype=z.dtype)
                return z * a + v

            return scale_shift

        return per_layer_hooks(make, layers, hook_z_name)


class LoFiT(RestorationMethod):
    """LoFiT with its L1 head-selection stage; ``select_steps`` (default: the training steps) and ``l1``
    set that stage."""

    name = "lofit"
    default_lr = 1e-2

    def __init__(
        self, *, select_steps: int | None = None, l1: float = 1e-3, select_lr: float = 1e-2
    ) -> None:
        super().__init__()
        if select_steps is not None and select_steps < 1:
            raise ConfigError(f"LoFiT select_steps must be >= 1, got {select_steps}.")
        if l1 < 0:
            raise ConfigError(f"LoFiT l1 must be >= 0, got {l1}.")
        self.select_steps = select_steps
        self.l1 = l1
        self.select_lr = select_lr
        self.adapter: HeadScaleShift | None = None
        self.selection_scores: Tensor | None = None

    def prepare(self, ctx: MethodContext) -> None:
        scores = self._selection_stage(ctx)
        g = ctx.geometry
        order = torch.argsort(scores.flatten(), descending=True, stable=True)[: ctx.n_heads()]
        heads = [divmod(int(i), g.n_heads) for i in order]
        self.selection_scores = scores
        self.adapter = HeadScaleShift(g, heads).to(ctx.device)
        self._prepared = True

    def _selection_stage(self, ctx: MethodContext) -> Float[Tensor, "n_layers n_heads"]:
        """Train A on every head with an L1 penalty; score = ||A_head||_1 (LoFiT's first stage)."""
        from lcc_lens.data import collate
        from lcc_lens.objectives import needs_teacher, objective_loss

        g = ctx.geometry
        every = [(lay, h) for lay in range(g.n_layers) for h in range(g.n_heads)]
        probe = HeadScaleShift(g, every).to(ctx.device)
        probe.shift.requires_grad_(False)
        opt = torch.optim.AdamW([probe.scale], lr=self.select_lr, weight_decay=0.0)
        cfg = ctx.train_config
        n_steps = self.select_steps or cfg.total_steps(len(ctx.train_encoded))
        data = list(ctx.train_encoded)
        gen = torch.Generator().manual_seed(ctx.seed * 7919 + 17)
        perm = torch.randperm(len(data), generator=gen).tolist()
        pad = ctx.pair.tokenizer.pad_token_id or 0
        bridge = ctx.pair.pruned
        for step in range(n_steps):
            batch = [
                data[perm[(step * cfg.batch_size + j) % len(data)]] for j in range(cfg.batch_size)
            ]
            ids, attn, resp = (t.to(ctx.device) for t in collate(batch, pad))
            teacher = None
            if needs_teacher(cfg.objective):
                with torch.no_grad():
                    teacher = ctx.pair.dense(ids, attention_mask=attn, return_type="logits")
            with temporary_hooks(bridge, probe.fwd_hooks()):
                student = bridge(ids, attention_mask=attn, return_type="logits")
            loss = objective_loss(cfg.objective, student, ids, resp, teacher, cfg.kl_weight)
            loss = loss + self.l1 * probe.scale.abs().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        scores = probe.scale.detach().abs().sum(-1).reshape(g.n_layers, g.n_heads).cpu()
        logger.info("LoFiT selection stage: %d steps, max |A|_1 %.4g", n_steps, scores.max())
        return scores

    @contextlib.contextmanager
    def attach(self, bridge: Any) -> Iterator[Any]:
        self.check_prepared()
        assert self.adapter is not None
        self.adapter.to(next(bridge.parameters()).device)
        with temporary_hooks(bridge, self.adapter.fwd_hooks()):
            yield bridge

    @torch.no_grad()
    def export(self, model: PreTrainedModel) -> PreTrainedModel:
        from lcc_lens.export import merge, output_projections

        self.check_prepared()
        assert self.adapter is not None
        merged, _route = merge(clean_copy(model), self.adapter.shifts().detach().float().cpu())
        scales = self.adapter.scales().detach().cpu()
        for layer, proj in enumerate(output_projections(merged)):
            col = scales[layer].reshape(-1).to(proj.module.weight)
            if proj.layout == "linear":
                proj.module.weight.mul_(col[None, :])
            else:  # conv1d: weight [in, out]
                proj.module.weight.mul_(col[:, None])
        return merged

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(select_steps=self.select_steps, l1=self.l1, select_lr=self.select_lr)
        if self.adapter is not None:
            out["heads"] = [list(h) for h in self.adapter.heads.tolist()]
        return out
