"""Out-of-domain restoration experiments (issue 11): one fit setting x one seed per invocation.

Loads the embedded SmolLM2-135M and its cached Wanda-50 % prune, chooses every text with
:func:`lcc_lens.data.fit_data` (leave-one-domain-out: calibration and fitting on python_docs +
shakespeare, defaults chosen on dialogue, headline on speeches), trains one compensation setting and scores
dense / pruned / restored with the one evaluation protocol on every domain (the same windows for every
setting and seed), plus the held-out task suite (next-passage choice, last word) of the test domain.
With ``--control-seeds`` it also fits the same compensation on the dense model (teacher = dense) and
scores it, so domain adaptation can be told apart from restoration.

Run under the shared lock, one job at a time::

    flock /tmp/lcc_real.lock .venv/bin/python -m analysis.ood_sweep --setting kl_all_free --seeds 0 1 2

It writes ``analysis/results/ood/records/<setting>_seed<seed>.json``; ``python -m analysis.ood_report``
aggregates those files into the tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from lcc_lens.compensation import Compensation
from lcc_lens.data import DataConfig, Encoded, FitData, encode, fit_data
from lcc_lens.evaluation.heldout_tasks import score_suite
from lcc_lens.evaluation.protocol import ProtocolConfig, ProtocolResult, evaluate
from lcc_lens.models import ModelPair

OUT = Path(__file__).resolve().parent / "results" / "ood" / "records"
logger = logging.getLogger("analysis.ood_sweep")


@dataclass(frozen=True)
class Setting:
    """One compensation fit: objective, positions scored, heads, offset form and optimisation."""

    objective: str = "kl"  # "kl", "lm" or "mix"
    positions: str = (
        "all"  # "all": every next-token position of a passage; "response": continuation
    )
    heads: str = "all"  # "all" heads, or "probe" (the default selector, 25 %)
    use_directions: bool = False  # offsets along the lost directions V (True) or free constants
    lr: float = 1e-2
    steps: int = 48
    batch_size: int = 8
    max_length: int = 128
    kl_weight: float = 0.5
    init: str = (
        "zeros"  # "zeros", or "mean_dz": b = mean(z_dense - z_pruned) over every position of
    )
    # the fit passages (training-free when steps == 0)
    text: str = "corpus"  # "corpus": fit passages; "generated": the dense model's own continuations
    # of the fit passages' first words; "both": half and half; "self": the dense model's unconditional
    # samples (started from its BOS token alone: no domain at all); "corpus_self": half corpus, half self


SETTINGS: dict[str, Setting] = {
    # the landed default: LM on continuations, probed heads, offsets over lost directions
    "default_lm_probe": Setting(
        objective="lm", positions="response", heads="probe", use_directions=True
    ),
    # KL to the dense model at every position, a free constant offset on every head
    "kl_all_free": Setting(),
    "kl_all_free_lr3e-2": Setting(lr=3e-2),
    "kl_all_free_len256": Setting(max_length=256),
    "mix_all_free": Setting(objective="mix"),
    # the same at a quarter of the compute (24 steps of 8 x 64 tokens): what a contended 2-core
    # machine can run for 3 seeds
    "kl_all_free_short": Setting(steps=24, max_length=64, lr=2e-2),
    "kl_gen_free": Setting(text="generated"),
    "kl_both_free": Setting(text="both"),
    # the short budget with other training text (no new data: the dense model writes it)
    "kl_gen_free_short": Setting(steps=24, max_length=64, lr=2e-2, text="generated"),
    "kl_self_free_short": Setting(steps=24, max_length=64, lr=2e-2, text="self"),
    "kl_corpus_self_free_short": Setting(steps=24, max_length=64, lr=2e-2, text="corpus_self"),
    "kl_self_free_short_lr5e-3": Setting(steps=24, max_length=64, lr=5e-3, text="self"),
    "kl_self_probe_short": Setting(steps=24, max_length=64, lr=2e-2, text="self", heads="probe"),
    # training-free: every head's offset is its mean activation difference (FLAP-style mean correction)
    "mean_dz_all": Setting(steps=0, init="mean_dz"),
    "kl_all_free_short_meaninit": Setting(steps=24, max_length=64, lr=2e-2, init="mean_dz"),
    "kl_all_free_short_lr5e-3": Setting(steps=24, max_length=64, lr=5e-3),
}


def _mean_dz(pair: ModelPair, data: FitData, s: Setting) -> torch.Tensor:
    """Mean z_dense - z_pruned per head over every position of the fit passages, [layers, heads, d]."""
    from lcc_lens.components import cached_lost_components
    from lcc_lens.diff import DiffConfig

    texts = [e.prompt + e.response for e in data.train]
    _, diff = cached_lost_components(
        pair, texts, DiffConfig(positions="all", max_length=s.max_length, seed=0), k=1
    )
    return diff.mean_dz


def _generated(pair: ModelPair, data: FitData, seed: int, n_new: int = 96) -> list[str]:
    """The dense model's own sampled continuations of the first 12 tokens of each fit passage.

    Cached under cache_root()/ood_generated (generation is the slow part on CPU).
    """
    import hashlib

    from lcc_lens.cache import cache_root

    key = hashlib.sha256(
        json.dumps([data.describe()["train_sha256"], seed, n_new]).encode()
    ).hexdigest()[:16]
    path = cache_root() / "ood_generated" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from lcc_lens.models import load_causal_lm

    tok = pair.tokenizer
    # a clean Hugging Face copy: the model a TransformerBridge wraps samples garbage with a KV cache
    model, _ = load_causal_lm(pair.dense_source)
    prompts = [
        tok.decode(tok(e.prompt + e.response, add_special_tokens=False)["input_ids"][:12])
        for e in data.train
    ]
    side = tok.padding_side
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(seed)
    out: list[str] = []
    try:
        for i in range(0, len(prompts), 32):
            enc = tok(prompts[i : i + 32], return_tensors="pt", padding=True)
            with torch.no_grad():
                gen = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=1.0,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=n_new,
                    pad_token_id=tok.pad_token_id,
                )
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            logger.info("generated %d / %d", len(out), len(prompts))
    finally:
        tok.padding_side = side
    texts = [p + g for p, g in zip(prompts, out, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(texts))
    return texts


def _encoded(
    pair: ModelPair, data: FitData, s: Setting, seed: int
) -> tuple[list[Encoded], list[Encoded]]:
    if s.positions == "response":
        if s.text != "corpus":
            raise ValueError("generated text is scored at every position; use positions='all'.")
        return (
            encode(pair.tokenizer, list(data.train), s.max_length),
            encode(pair.tokenizer, list(data.validation), s.max_length),
        )

    def whole(texts: list[str]) -> list[Encoded]:
        out = []
        for t in texts:
            ids = pair.tokenizer(t, add_special_tokens=True)["input_ids"][: s.max_length]
            if len(ids) > 1:
                out.append(Encoded(list(ids), [0] + [1] * (len(ids) - 1)))
        return out

    corpus = [e.prompt + e.response for e in data.train]
    if s.text == "corpus":
        texts = corpus
    elif s.text in ("self", "corpus_self"):  # the library's self-written text (lcc_lens.self_text)
        from lcc_lens.models import model_fingerprint
        from lcc_lens.self_text import sample_texts, self_examples

        samples = sample_texts(
            pair.dense,
            pair.tokenizer,
            len(corpus),
            s.max_length,
            seed=seed,
            model_key=model_fingerprint(pair.dense_source),
        )
        generated = [e.prompt + e.response for e in self_examples(pair.tokenizer, samples)]
        texts = generated if s.text == "self" else corpus[::2] + generated[1::2]
    else:
        generated = _generated(pair, data, seed)
        texts = generated if s.text == "generated" else corpus[::2] + generated[1::2]
    return whole(texts), whole([e.prompt + e.response for e in data.validation])


def _heads(pair: ModelPair, data: FitData, s: Setting, seed: int) -> tuple[list, Any]:
    g = pair.geometry
    if s.heads == "all" and not s.use_directions:
        return [(lay, h) for lay in range(g.n_layers) for h in range(g.n_heads)], None
    from lcc_lens.components import cached_lost_components
    from lcc_lens.diff import DiffConfig
    from lcc_lens.probing import probe_samples
    from lcc_lens.selection import SelectConfig, select_heads

    comps, diff = cached_lost_components(
        pair, list(data.diff_prompts), DiffConfig(positions="last", max_length=128, seed=seed), k=1
    )
    if s.heads == "all":
        return [(lay, h) for lay in range(g.n_layers) for h in range(g.n_heads)], comps.directions
    ranking = select_heads(
        pair,
        SelectConfig(method="probe", seed=seed),
        components=comps,
        diff=diff,
        probe_data=probe_samples(list(data.probe)),
        kl_prompts=[e.prompt + e.response for e in data.train[:16]],
    )
    return ranking.selected, comps.directions


def _train_config(s: Setting, seed: int) -> Any:
    from lcc_lens.training import TrainConfig

    return TrainConfig(
        objective=s.objective,  # type: ignore[arg-type]
        kl_weight=s.kl_weight,
        lr=s.lr,
        steps=s.steps,
        batch_size=s.batch_size,
        seed=seed,
        checkpoint_every=10_000,
    )


def _train(pair: ModelPair, comp: Compensation, train, val, s: Setting, seed: int) -> list:
    from lcc_lens.training import train as run_train

    return run_train(pair, comp, train, val, _train_config(s, seed))


def _references(pair: ModelPair, data: FitData, pcfg: ProtocolConfig, items: int, key: str):
    """Dense and pruned scores on the protocol windows and the task items, cached on disk.

    They do not depend on the fit setting or seed, so every run reuses them.
    """
    import hashlib

    from lcc_lens.cache import cache_root

    digest = hashlib.sha256(
        json.dumps([key, asdict(pcfg), items, data.describe()["eval_chars"]]).encode()
    ).hexdigest()[:16]
    path = cache_root() / "ood_refs" / f"{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())
    models = {"dense": pair.dense, "pruned": pair.pruned}
    res = evaluate(models, pair.tokenizer, data.eval_texts, pcfg, roles=data.eval_roles)
    tasks = score_suite(
        models, pair.tokenizer, domain=data.config.test_domain, n_items=items, seed=0
    )
    ref = {"sums": {d: dict(v.nll_sums) for d, v in res.domains.items()}, "tasks": tasks}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ref))
    return ref


def _merged(result: ProtocolResult, ref: dict[str, Any]) -> ProtocolResult:
    domains = {
        name: replace(d, nll_sums={**ref["sums"][name], **d.nll_sums})
        for name, d in result.domains.items()
    }
    return ProtocolResult(result.config, domains)


FIT_DEFAULT = "fit_default"
"""The setting that is the library's default fit (``FitConfig()`` with the run's seed), through the
fit's own stages on the already loaded pair, scored like every other setting."""


def _fit_default(pair: ModelPair, pruned_dir: Path, seed: int, control: bool) -> dict[str, Any]:
    """The default fit's stages (data, lost components, selection, compensation, training)."""
    from lcc_lens.evaluation.control import fit_dense_control
    from lcc_lens.fit import FitConfig
    from lcc_lens.fit import stages as st

    config = replace(FitConfig(), seed=seed, pruned=str(pruned_dir))
    data = st.choose_data(config, pair)
    lost = st.find_lost_components(pair, data, config.diff, config.compensation.k)
    ranking = st.select(pair, data, lost, config.select, config.probe)

    def make() -> Compensation:
        return st.build_compensation(pair, ranking.selected, lost.components, config.compensation)

    comp = make()
    t_fit = time.perf_counter()
    trained = st.train_compensation(pair, comp, data, config.train)
    out: dict[str, Any] = {
        "comp": comp,
        "history": trained.history,
        "fit_seconds": time.perf_counter() - t_fit,
        "data": data.texts,
        "config": config.to_dict(),
        "control": None,
        "control_history": None,
    }
    if control:
        out["control"], out["control_history"] = fit_dense_control(
            pair, make, data.train, data.validation, config.train
        )
    return out


def _record_command(setting: str, seed: int, control: bool, windows: int, items: int) -> str:
    return (
        f"python -m analysis.ood_sweep --setting {setting} --seeds {seed}"
        + (f" --control-seeds {seed}" if control else "")
        + f" --windows {windows} --suite-items {items}"
    )


def run(
    setting: str,
    seeds: list[int],
    control_seeds: list[int],
    windows: int,
    suite_items: int,
    *,
    skip_done: bool = False,
    deadline: str = "",
) -> list[Path]:
    from lcc_lens.pruning import PruneConfig, cached_pruned_checkpoint

    s = SETTINGS.get(setting, Setting())
    pruned_dir = cached_pruned_checkpoint("embedded", PruneConfig())
    pair = ModelPair.load("embedded", pruned_dir, device="cpu")
    # the protocol's windows depend on its own seed (0), never on the fit seed: every setting and
    # seed is scored on the same windows and items
    pcfg = ProtocolConfig(context_length=256, windows=windows, seed=0, batch_size=8)
    paths = []
    for seed in seeds:
        if skip_done and (OUT / f"{setting}_seed{seed}.json").is_file():
            logger.info("seed %d of %s already written; skipped", seed, setting)
            continue
        if deadline and time.strftime("%H:%M", time.gmtime()) >= deadline:
            logger.info("past %s UTC: seed %d not started", deadline, seed)
            break
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        dense_control = seed in control_seeds
        if setting == FIT_DEFAULT:
            done = _fit_default(pair, pruned_dir, seed, dense_control)
            data = done["data"]
            ref = _references(pair, data, pcfg, suite_items, str(pruned_dir))
            models: dict[str, Any] = {"restored": (pair.pruned, done["comp"])}
            if done["control"] is not None:
                models["dense_control"] = (pair.dense, done["control"])
            paths.append(
                _score_and_write(
                    pair,
                    data,
                    pcfg,
                    ref,
                    models,
                    suite_items,
                    pruned_dir,
                    {
                        "setting": setting,
                        "settings": done["config"],
                        "seed": seed,
                        "n_heads": done["comp"].n_selected,
                        "history": done["history"],
                        "dense_control_history": done["control_history"],
                        "fit_seconds": done["fit_seconds"],
                        "command": _record_command(
                            setting, seed, dense_control, windows, suite_items
                        ),
                    },
                    t0,
                )
            )
            continue
        data = fit_data(DataConfig(), seed=seed)
        ref = _references(pair, data, pcfg, suite_items, str(pruned_dir))
        train, val = _encoded(pair, data, s, seed)
        heads, directions = _heads(pair, data, s, seed)

        def make(heads=heads, directions=directions) -> Compensation:
            return Compensation(
                pair.geometry, heads, directions, use_directions=s.use_directions, use_bias=True
            )

        comp = make()
        t_fit = time.perf_counter()
        if s.init == "mean_dz":
            mean = _mean_dz(pair, data, s)
            with torch.no_grad():
                comp.bias.copy_(mean[comp.heads[:, 0], comp.heads[:, 1]])
        history = _train(pair, comp, train, val, s, seed) if s.steps > 0 else []
        fit_s = time.perf_counter() - t_fit
        models: dict[str, Any] = {"restored": (pair.pruned, comp)}
        control_history = None
        if dense_control:
            from lcc_lens.evaluation.control import fit_dense_control

            ctrl, control_history = fit_dense_control(
                pair, make, train, val, _train_config(s, seed)
            )
            models["dense_control"] = (pair.dense, ctrl)
        record = {
            "setting": setting,
            "settings": asdict(s),
            "seed": seed,
            "n_heads": comp.n_selected,
            "history": history,
            "dense_control_history": control_history,
            "fit_seconds": fit_s,
            "command": _record_command(setting, seed, dense_control, windows, suite_items),
        }
        paths.append(
            _score_and_write(pair, data, pcfg, ref, models, suite_items, pruned_dir, record, t0)
        )
    return paths


def _score_and_write(
    pair: ModelPair,
    data: FitData,
    pcfg: ProtocolConfig,
    ref: dict[str, Any],
    models: dict[str, Any],
    suite_items: int,
    pruned_dir: Path,
    record: dict[str, Any],
    t0: float,
) -> Path:
    """Score the fitted models on every domain and the test domain's tasks; write the record."""
    result = _merged(
        evaluate(models, pair.tokenizer, data.eval_texts, pcfg, roles=data.eval_roles), ref
    )
    tasks = score_suite(
        {"restored": models["restored"]},
        pair.tokenizer,
        domain=data.config.test_domain,
        n_items=suite_items,
        seed=0,
    )
    for task in ("next_passage", "last_word"):
        tasks[task] = {**ref["tasks"][task], **tasks[task]}
    record = {
        **record,
        "data": data.describe(),
        "pruned": str(pruned_dir),
        "protocol": result.to_dict(),
        "tasks": tasks,
        "wall_seconds": time.perf_counter() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{record['setting']}_seed{record['seed']}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    logger.info("wrote %s", path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=sorted([*SETTINGS, FIT_DEFAULT]), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--control-seeds",
        type=int,
        nargs="*",
        default=[],
        help="seeds for which the dense control is also fitted (it doubles the fit time)",
    )
    ap.add_argument("--windows", type=int, default=16, help="protocol windows per domain")
    ap.add_argument("--suite-items", type=int, default=100, help="items per held-out task")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--skip-done", action="store_true", help="skip seeds whose JSON exists")
    ap.add_argument("--deadline", default="", help="HH:MM UTC after which no new seed starts")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    run(
        args.setting,
        args.seeds,
        args.control_seeds,
        args.windows,
        args.suite_items,
        skip_done=args.skip_done,
        deadline=args.deadline,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
