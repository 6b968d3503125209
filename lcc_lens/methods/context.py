"""What every method may draw on: the model pair, the fit data and the shared stages, computed once.

The stages are the fit's own (:mod:`lcc_lens.fit.stages`: lost components, head selection with its probe
items), run with the fit's configuration for this seed, so a method never re-implements them and ``lcc``
sees exactly what ``lcc fit`` would. Results are cached per context.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from lcc_lens.data import Encoded, FitData
from lcc_lens.models import HeadGeometry, ModelPair
from lcc_lens.training import TrainConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lcc_lens.components import LostComponents
    from lcc_lens.fit import FitConfig
    from lcc_lens.fit.stages import EncodedData, LostStage

logger = logging.getLogger(__name__)


@dataclass
class MethodContext:
    """Inputs shared by every method of one (setting, seed): the same data for all of them.

    ``fit``: the fit configuration whose stages run here (default: ``FitConfig(seed=seed)``);
    ``head_fraction`` / ``k`` override its head share and lost-component rank when given.
    """

    pair: ModelPair
    dense_source: str
    pruned_source: str
    data: FitData
    train_encoded: Sequence[Encoded]
    train_config: TrainConfig
    seed: int = 0
    head_fraction: float | None = None
    k: int | None = None
    fit: FitConfig | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from lcc_lens.fit import FitConfig

        fit = self.fit or FitConfig(seed=self.seed)
        select = dataclasses.replace(
            fit.select, fraction=self.head_fraction or fit.select.fraction, n_heads=None
        )
        compensation = dataclasses.replace(fit.compensation, k=self.k or fit.compensation.k)
        self.fit = dataclasses.replace(
            fit, seed=self.seed, select=select, compensation=compensation
        )

    @property
    def geometry(self) -> HeadGeometry:
        return self.pair.geometry

    @property
    def device(self) -> torch.device:
        return self.pair.device

    def _encoded(self) -> EncodedData:
        from lcc_lens.fit.stages import EncodedData

        return EncodedData(self.data, list(self.train_encoded), [])

    def lost(self) -> LostStage:
        """The fit's lost-component stage (on-disk cache shared with ``lcc fit``)."""
        if "lost" not in self._cache:
            from lcc_lens.fit.stages import find_lost_components

            assert self.fit is not None
            self._cache["lost"] = find_lost_components(
                self.pair, self._encoded(), self.fit.diff, self.fit.compensation.k
            )
        return self._cache["lost"]

    def components(self) -> LostComponents:
        """Rank-K lost components and directions of every head."""
        return self.lost().components

    def n_heads(self) -> int:
        """How many heads the head-level methods compensate (the fit's share of all heads)."""
        assert self.fit is not None
        return max(1, self.fit.select.count(self.geometry))

    def heads(self, method: str, probe_mode: str | None = None) -> list[tuple[int, int]]:
        """Heads chosen by the fit's selection stage with ``method`` (probe, random, all, ...).

        ``probe_mode`` overrides the fit's probe statistic ('paper' or 'aligned') for ``probe``.
        """
        mode = probe_mode or (self.fit.select.probe_mode if self.fit is not None else None)
        key = f"heads:{method}:{mode}"
        if key not in self._cache:
            from lcc_lens.fit.stages import select

            assert self.fit is not None
            scfg = dataclasses.replace(self.fit.select, method=method, probe_mode=mode)  # type: ignore[arg-type]
            if method != "all":
                scfg = dataclasses.replace(scfg, n_heads=self.n_heads())
            ranking = select(self.pair, self._encoded(), self.lost(), scfg, self.fit.probe)
            self._cache[key] = list(ranking.selected)
        return self._cache[key]

    def _clean(self, key: str, source: str, like: Any) -> PreTrainedModel:
        if key not in self._cache:
            from lcc_lens.models import load_causal_lm

            dtype = next(like.parameters()).dtype
            model, _ = load_causal_lm(source, dtype=dtype, device=self.device)
            for p in model.parameters():
                p.requires_grad_(False)
            self._cache[key] = model
        return self._cache[key]

    def pruned_model(self) -> PreTrainedModel:
        """A clean (never bridged) Hugging Face copy of the pruned model, loaded once; do not modify."""
        return self._clean("pruned_hf", self.pruned_source, self.pair.pruned)

    def dense_model(self) -> PreTrainedModel:
        """A clean Hugging Face copy of the dense model, loaded once; do not modify."""
        return self._clean("dense_hf", self.dense_source, self.pair.dense)
