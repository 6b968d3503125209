"""LCC and its head-offset relatives: one constant vector per head at hook_z, folded into o_proj's bias.

* ``lcc``: c = V^T beta + b on the heads chosen by contrastive probing (the default LCC configuration);
* ``lcc_random_heads``: the same on as many randomly chosen heads;
* ``bias_all_heads``: b only, on every head (the naive offset);
* ``lost_component``: the rank-K lost component itself on every head, injected without training;
* ``lcc_family``: ``lcc``'s heads plus every other exact-merge term of the LCC family (MLP-output offsets
  where the class can hold a down_proj bias, norm gains, per-head and per-channel output scales), the
  compensation ``lcc fit --compensate heads,mlp,norms,scales`` trains.

All of them use :class:`lcc_lens.compensation.Compensation` and :func:`lcc_lens.export.merge`, so the
export keeps the pruned weights (and their zeros) untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from lcc_lens.compensation import Compensation
from lcc_lens.methods.base import RestorationMethod, clean_copy

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.family import CompensationFamily
    from lcc_lens.methods.context import MethodContext

logger = logging.getLogger(__name__)


class HeadOffsetMethod(RestorationMethod):
    """A Compensation on heads chosen by ``selection``; subclasses fix the variant."""

    selection: ClassVar[str] = "probe"
    probe_mode: ClassVar[str | None] = None  # None: the fit's probe statistic
    use_directions: ClassVar[bool] = True
    use_bias: ClassVar[bool] = True
    init_lost_component: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.compensation: Compensation | None = None

    def prepare(self, ctx: MethodContext) -> None:
        heads = ctx.heads(self.selection, self.probe_mode)
        comps = ctx.components() if (self.use_directions or self.init_lost_component) else None
        comp = Compensation(
            ctx.geometry,
            heads,
            comps.directions if (comps is not None and self.use_directions) else None,
            use_directions=self.use_directions,
            use_bias=self.use_bias,
        )
        if self.init_lost_component and comps is not None:
            comp.init_from(comps.components)
        if not self.trains:
            for p in comp.parameters():
                p.requires_grad_(False)
        self.compensation = comp.to(ctx.device)
        self._prepared = True

    def planned_trainable(self, ctx: MethodContext) -> int:
        """The trainable count ``prepare(ctx)`` gives, without running the stages (for matched sizes)."""
        if not self.trains:
            return 0
        g = ctx.geometry
        heads = g.n_total_heads if self.selection == "all" else ctx.n_heads()
        return heads * g.d_head * (int(self.use_directions) + int(self.use_bias))

    @contextlib.contextmanager
    def attach(self, bridge: Any) -> Iterator[Any]:
        self.check_prepared()
        assert self.compensation is not None
        with self.compensation.attach(bridge) as hooked:
            yield hooked

    @contextlib.contextmanager
    def attach_for_training(self, bridge: Any) -> Iterator[Any]:
        """The training loop's path, as in ``lcc fit``: the offsets on the bridge's plain twin."""
        self.check_prepared()
        assert self.compensation is not None
        with self.compensation.attach_for_training(bridge) as model:
            yield model

    def export(self, model: PreTrainedModel) -> PreTrainedModel:
        from lcc_lens.export import merge

        self.check_prepared()
        assert self.compensation is not None
        offsets = self.compensation.z_offsets().detach().float().cpu()
        merged, _route = merge(clean_copy(model), offsets)
        return merged

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            selection=self.selection,
            probe_mode=self.probe_mode,
            use_directions=self.use_directions,
            use_bias=self.use_bias,
            n_heads=self.compensation.n_selected if self.compensation is not None else None,
        )
        return out


class LCC(HeadOffsetMethod):
    """LCC in the fit's default configuration (today: a free offset on every head, lr 5e-3)."""

    name = "lcc"

    def __init__(self) -> None:
        from lcc_lens.fit import FitConfig

        super().__init__()
        fit = FitConfig()
        self.selection = fit.select.method  # type: ignore[misc]
        self.use_directions = fit.compensation.use_directions  # type: ignore[misc]
        self.use_bias = fit.compensation.use_bias  # type: ignore[misc]
        self.init_lost_component = fit.compensation.init == "lost_component"  # type: ignore[misc]
        self.default_lr = fit.train.lr  # type: ignore[misc]


class LCCPaper(HeadOffsetMethod):
    """LCC as the paper has it: heads by the paper's probe statistic (the selector's fraction), c = V^T beta + b."""

    name = "lcc_paper"
    selection = "probe"
    probe_mode = "paper"
    use_directions = True


class LCCRandomHeads(HeadOffsetMethod):
    """LCC on seeded random heads (the paper's ablation)."""

    name = "lcc_random_heads"
    selection = "random"


class BiasAllHeads(HeadOffsetMethod):
    """A trained constant offset b on every head, no lost directions."""

    name = "bias_all_heads"
    selection = "all"
    use_directions = False


class LostComponent(HeadOffsetMethod):
    """The rank-K lost component added to every head, training-free."""

    name = "lost_component"
    trains = False
    selection = "all"
    use_directions = False
    init_lost_component = True


class LCCFamily(LCC):
    """``lcc`` plus the family's other terms, built by the fit's own ``build_compensation`` stage."""

    name = "lcc_family"
    family: ClassVar[tuple[str, ...]] = ("heads", "mlp", "norms", "scales")

    def __init__(self) -> None:
        super().__init__()
        self.compensation: CompensationFamily | None = None  # type: ignore[assignment]

    def prepare(self, ctx: MethodContext) -> None:
        from lcc_lens.family_layout import FamilyLayout
        from lcc_lens.fit.stages import build_compensation

        assert ctx.fit is not None
        parts = self.family
        if not FamilyLayout.of(ctx.pair.pruned).mlp_bias:
            parts = tuple(p for p in parts if p != "mlp")
            logger.warning(
                "%s: this architecture holds no down_proj bias; no MLP offsets", self.name
            )
        ccfg = dataclasses.replace(ctx.fit.compensation, compensate=parts)
        heads = ctx.heads(self.selection, self.probe_mode)
        family = build_compensation(ctx.pair, heads, ctx.components(), ccfg)
        self.compensation = family.to(ctx.device)  # type: ignore[assignment]
        self._prepared = True

    def export(self, model: PreTrainedModel) -> PreTrainedModel:
        self.check_prepared()
        assert self.compensation is not None
        merged, _route = self.compensation.merge(model)
        return merged

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.compensation is not None:
            out["components"] = list(self.compensation.components)
        return out
