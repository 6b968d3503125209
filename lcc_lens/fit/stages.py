"""The stages of a fit, each with typed inputs and outputs; :func:`lcc_lens.fit.fit` composes them.

resolve the pair -> choose the data once -> activation differences and lost components -> head
selection -> compensation -> training -> evaluation (:mod:`lcc_lens.fit.evaluate`) -> the guards and
the export (:mod:`lcc_lens.fit.guards`, :mod:`lcc_lens.fit.exporting`) ->
writing the run directory (:mod:`lcc_lens.fit.run_dir`). Analysis scripts and notebooks call the same
stages; none of them reaches back up the chain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lcc_lens import distributed
from lcc_lens.compensation import Compensation, CompensationConfig
from lcc_lens.components import LostComponents, cached_lost_components, lost_components
from lcc_lens.data import Encoded, FitData, encode, fit_data
from lcc_lens.diff import DiffConfig, HeadDiff
from lcc_lens.errors import ConfigError
from lcc_lens.family import CompensationFamily, FamilyLayout
from lcc_lens.fit.clock import StageClock
from lcc_lens.fit.config import FitConfig
from lcc_lens.methods.base import RestorationMethod
from lcc_lens.models import ModelPair, resolve_device
from lcc_lens.placement import parse_device_map
from lcc_lens.probe_data import ProbeDataConfig, ProbeSample, fit_probe_items, probe_samples
from lcc_lens.pruning.config import PruneConfig
from lcc_lens.selection import HeadRanking, SelectConfig, select_heads
from lcc_lens.training import TrainConfig, evaluate_loss, train

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---- resolve the pair --------------------------------------------------------------------------


@dataclass
class ResolvedPair:
    """The loaded dense/pruned pair and where the pruned checkpoint came from."""

    pair: ModelPair
    pruned_source: str


def resolve_pruned(config: FitConfig) -> str:
    """The pruned checkpoint: the given one, or the cached prune of ``config.dense`` by ``config.prune``."""
    if config.pruned:
        return config.pruned
    from lcc_lens.pruning import cached_pruned_checkpoint

    return str(cached_pruned_checkpoint(config.dense, prune_config(config)))


def prune_config(config: FitConfig) -> PruneConfig:
    """The prune's settings, calibrated on the run's ``data.calibration_domains`` when it calibrates on
    the shipped corpora (the one data spec of the run chooses that text too)."""
    from lcc_lens.corpora import SOURCES

    prune, domains = config.prune, tuple(config.data.calibration_domains)
    if prune.calibration != "corpora" or domains == SOURCES:
        return prune  # the default domains keep the plain name (and the cached prune's key)
    return dataclasses.replace(prune, calibration="corpora:" + ",".join(domains))


def resolve_pair(config: FitConfig, clock: StageClock | None = None) -> ResolvedPair:
    """Prune if needed (cached), load both models and check the lengths fit the model's positions.

    Under torchrun each rank loads the pair on its own device; rank 0 fills the prune cache first.
    ``clock`` records the prune (with the dense model's conversion) and the load as two stages.
    """
    clock = clock or StageClock(torch.device("cpu"))
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    ctx = distributed.init_from_env(device)
    device = distributed.rank_device(device, ctx)
    with clock.stage("prune"), distributed.main_process_first():
        pruned_source = resolve_pruned(config)
    with clock.stage("load"):
        pair = ModelPair.load(
            config.dense,
            pruned_source,
            dtype=DTYPES[config.dtype],
            device=device,
            device_map=parse_device_map(config.device_map),
        )
    g = pair.geometry
    logger.info(
        "pair: %s, %d layers x %d heads (d_head %d)",
        g.architecture,
        g.n_layers,
        g.n_heads,
        g.d_head,
    )
    check_lengths(config, pair)
    return ResolvedPair(pair, pruned_source)


def check_lengths(config: FitConfig, pair: ModelPair) -> None:
    """Refuse sequence lengths beyond the model's positions before any stage runs."""
    from lcc_lens.evaluation.perplexity import model_max_positions

    limit = model_max_positions(pair.pruned)
    if limit is None:
        return
    for name, value in (
        ("max_length", config.max_length),
        ("diff.max_length", config.diff.max_length),
        ("eval.context_length", config.eval.context_length),
    ):
        if value > limit:
            raise ConfigError(
                f"{name}={value} exceeds the model's {limit} positions; choose {name} <= {limit}."
            )


# ---- choose the data once ----------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedData:
    """The chosen texts and the tokenised training / validation examples."""

    texts: FitData
    train: list[Encoded]
    validation: list[Encoded]


def choose_data(config: FitConfig, pair: ModelPair, texts: FitData | None = None) -> EncodedData:
    """Every text the run uses (``texts`` when given, else drawn from ``config.data``), tokenised.

    With ``data.fit_text`` 'self' or 'corpus_self' the training examples are (half) text the dense model
    writes itself (:mod:`lcc_lens.self_text`), every token scored; validation stays the fit domains'.
    """
    tokenizer = pair.tokenizer
    texts = texts if texts is not None else fit_data(config.data, seed=config.seed)
    targets = texts.config.targets
    train_enc = _training_examples(config, pair, texts)
    val_enc = (
        encode(tokenizer, texts.validation, config.max_length, targets=targets)
        if texts.validation
        else []
    )
    return EncodedData(texts, train_enc, val_enc)


def _training_examples(config: FitConfig, pair: ModelPair, texts: FitData) -> list[Encoded]:
    from lcc_lens.models import model_fingerprint
    from lcc_lens.self_text import sample_texts, self_examples

    dcfg = texts.config
    corpus = list(texts.train)
    if dcfg.fit_text == "corpus":
        return encode(pair.tokenizer, corpus, config.max_length, targets=dcfg.targets)
    # corpus_self: every other corpus example, the rest written by the dense model (only as many
    # samples as are used are drawn)
    kept = corpus if dcfg.fit_text == "self" else corpus[::2]
    n_self = len(corpus) if dcfg.fit_text == "self" else len(corpus) - len(kept)
    samples = sample_texts(
        pair.dense,
        pair.tokenizer,
        n_self,
        dcfg.self_tokens,
        seed=config.seed,
        model_key=model_fingerprint(pair.dense_source),
        source=pair.dense_source,
    )
    own = encode(
        pair.tokenizer, self_examples(pair.tokenizer, samples), config.max_length, targets="all"
    )
    if dcfg.fit_text == "self":
        return own
    return encode(pair.tokenizer, kept, config.max_length, targets=dcfg.targets) + own


# ---- activation differences and lost components ------------------------------------------------


@dataclass
class LostStage:
    """Lost components per head and the activation differences they came from (cached together)."""

    components: LostComponents
    diff: HeadDiff


def find_lost_components(pair: ModelPair, data: EncodedData, diff: DiffConfig, k: int) -> LostStage:
    """dz = z_dense - z_pruned on the diff prompts; rank-``k`` lost components per head (cached on disk)."""
    prompts = list(data.texts.diff_prompts)
    components, head_diff = cached_lost_components(pair, prompts, diff, k=k)
    return LostStage(components, head_diff)


def components_of_rank(lost: LostStage, k: int) -> LostComponents:
    """Lost components of another rank ``k`` from the same differences (no new forward pass)."""
    if k == lost.components.k:
        return lost.components
    return lost_components(lost.diff.samples, k)


# ---- head selection ----------------------------------------------------------------------------


def select(
    pair: ModelPair,
    data: EncodedData,
    lost: LostStage,
    scfg: SelectConfig,
    probe_cfg: ProbeDataConfig,
) -> HeadRanking:
    """Rank the heads by ``scfg.method`` and keep the configured number (``probe_cfg``: the contrastive
    pairs the probe selector builds from the fit domains)."""
    probe = None
    if scfg.method == "probe" and scfg.count(pair.geometry) > 0:
        probe = probe_items(data.texts, probe_cfg)
    ranking = select_heads(
        pair,
        scfg,
        components=lost.components,
        diff=lost.diff,
        probe_data=probe,
        kl_prompts=[e.prompt + e.response for e in data.texts.train[: scfg.n_kl_prompts]],
    )
    logger.info(
        "selected %d of %d heads by %s",
        len(ranking.selected),
        pair.geometry.n_total_heads,
        ranking.method,
    )
    return ranking


def probe_items(texts: FitData, probe_cfg: ProbeDataConfig) -> list[ProbeSample]:
    """Contrastive pairs: built from the fit domains' documents, or the task data's own negatives."""
    if texts.config.uses_corpora:
        return fit_probe_items(probe_cfg, sources=texts.config.fit_domains)
    return probe_samples(list(texts.probe))


# ---- compensation and training -----------------------------------------------------------------


def build_compensation(
    pair: ModelPair,
    heads: Sequence[tuple[int, int]],
    components: LostComponents,
    ccfg: CompensationConfig,
) -> Compensation | CompensationFamily:
    """A fresh compensation on ``heads`` (zero offsets, or the lost components with init); with
    ``compensate`` beyond ``heads``, the LCC family of those components (every other term zero)."""
    on_heads = "heads" in ccfg.compensate
    comp = Compensation(
        pair.geometry,
        heads if on_heads else [],
        components.directions,
        use_directions=ccfg.use_directions,
        use_bias=ccfg.use_bias,
    )
    if ccfg.init == "lost_component" and comp.n_selected:
        comp.init_from(components.components)
    if ccfg.compensate == ("heads",):
        return comp
    return CompensationFamily(comp, FamilyLayout.of(pair.pruned), ccfg.compensate)


def prepare_method(
    config: FitConfig, resolved: ResolvedPair, data: EncodedData
) -> RestorationMethod:
    """The zero-keeping peer method ``config.method``, prepared on the fit's pair and data."""
    from lcc_lens.methods import MethodContext, make_method

    ctx = MethodContext(
        resolved.pair,
        config.dense,
        resolved.pruned_source,
        data.texts,
        data.train,
        config.train,
        seed=config.seed,
        fit=config,
    )
    method = make_method(config.method)
    method.prepare(ctx)
    logger.info("%s: %d trainable parameters", method.name, method.n_trainable)
    return method


def no_heads(pair: ModelPair, method: str) -> HeadRanking:
    """The (empty) head ranking of a fit whose method compensates no head."""
    g = pair.geometry
    return HeadRanking(f"none ({method})", torch.zeros(g.n_layers, g.n_heads), [], [])


@dataclass
class Trained:
    """The training history and the validation objective of pruned and restored."""

    history: list[dict[str, Any]]
    val_loss_pruned: float
    val_loss_restored: float


def run_identity(config: FitConfig, pruned_source: str, heads: Sequence[tuple[int, int]]) -> str:
    """What a resumable checkpoint must agree on besides the optimisation settings."""
    keep = config.to_dict()
    for name in ("device", "allow_worse", "worse_margin", "eval"):
        keep.pop(name, None)
    keep["train"].pop("checkpoint_every", None)
    payload = json.dumps(
        {"config": keep, "pruned": pruned_source, "heads": [list(h) for h in heads]},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def train_compensation(
    pair: ModelPair,
    comp: Compensation | CompensationFamily | RestorationMethod,
    data: EncodedData,
    tcfg: TrainConfig,
    *,
    run_dir: Path | None = None,
    resume: bool = False,
    identity: str = "",
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    val_loss_pruned: float | None = None,
) -> Trained:
    """Train ``comp`` in place on the training examples; score pruned and restored on validation.

    ``val_loss_pruned``: the pruned model's validation loss when the caller has it already (it does not
    depend on the method, so the benchmark scores it once per seed).
    """
    val_before = (
        evaluate_loss(pair, None, data.validation, tcfg)
        if val_loss_pruned is None
        else val_loss_pruned
    )
    history = train(
        pair,
        comp,
        data.train,
        data.validation,
        tcfg,
        run_dir=run_dir,
        resume=resume,
        identity=identity,
        on_step=on_step,
    )
    last = history[-1] if history else {}
    if not data.validation:
        val_after = float("nan")
    elif "val_loss" in last and last["step"] == tcfg.total_steps(len(data.train)):
        val_after = float(last["val_loss"])  # the loop scored the final state already
    else:
        val_after = evaluate_loss(pair, comp, data.validation, tcfg)
    return Trained(history, val_before, val_after)
