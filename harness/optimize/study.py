"""The over-optimization studies of one job (SPEC §7): Best-of-N and PPO against the job's fitted proxy RM,
both read in Gao et al. units and both scored by the world's gold reward.

``run_studies`` is what ``harness.job`` calls. Units (``bon.reward_units``, which cites what Gao et al. and
Coste et al. did): proxy and gold are each re-centred on their mean over initial-policy samples -- BoN's N
samples per prompt, the n=1 distribution -- and divided by their pooled within-prompt s.d. there (the part of
a reward that selection acts on; ``reward_scale: total`` divides by the total s.d. instead). PPO takes its units
from BoN's samples when BoN ran in the same job, otherwise from its own step-0 samples. The units go into
metrics.json (``bon.units``, ``ppo.units``), with both s.d.s and the within-prompt share of the variance.

Matched comparisons (``fits.summarize``): every run's gold and proxy at the study's ``sqrt_kl_grid``, and
final gold / gap and the area under the gold curve at one ``common_sqrt_kl`` shared by all archs.

BoN samples depend on the policy only, so they are generated once per (policy, data, seed, prompts, N) and
cached with their gold scores; every architecture of a sweep then only scores them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..cache import ArtifactCache
from ..data.schema import encode_sequences
from ..device import CPU, Compute, place
from ..gold import gold_scores
from ..length_bias import sample_length_bias
from ..progress import config_name
from ..seeds import Stream
from .bon import bon_curve, reward_units, standardize
from .capability import CapabilityConfig, capability_study
from .fits import summarize
from .policy import Policy
from .ppo import PPOConfig, check_matched, run_ppo

log = logging.getLogger(__name__)

# The studies `opt=[...]` may select; "capability" measures the policy with lm-eval before/after the others.
STUDIES = ("bon", "ppo", "capability")
# The studies read in gold units: a job without a gold reward skips them (harness.job).
GOLD_STUDIES = ("bon", "ppo")


@dataclass
class BoNConfig:
    n_prompts: int
    n_samples: int
    ns: list[int] = field(default_factory=list)
    # Reward units (bon.reward_units): "within_prompt" (default) or "total".
    reward_scale: str = "within_prompt"
    # sqrt(KL) values at which gold and proxy are read (metrics.json bon.gold@sqrt_kl=x).
    sqrt_kl_grid: list[float] = field(default_factory=list)
    # The sqrt(KL) of final_gold / final_gap / gold_auc; None: the largest n's (the same for every arch).
    common_sqrt_kl: float | None = None

    def validate(self) -> None:
        if self.n_prompts < 1 or self.n_samples < 1:
            raise ValueError(f"opt.bon.n_prompts={self.n_prompts} and opt.bon.n_samples={self.n_samples} "
                             "must be >= 1")
        bad = [n for n in self.ns if not 1 <= n <= self.n_samples]
        if not self.ns or bad:
            raise ValueError(f"opt.bon.ns={self.ns}: need at least one n, each in [1, n_samples="
                             f"{self.n_samples}]")
        if len(set(self.ns)) < 2:
            raise ValueError(f"opt.bon.ns={self.ns}: the Gao fit needs at least 2 distinct n > 1")
        check_matched("opt.bon", self.reward_scale, self.sqrt_kl_grid, self.common_sqrt_kl)


def _config(node, cls, where: str):
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    try:
        cfg = cls(**plain)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from e
    cfg.validate()
    return cfg


def proxy_scores(arch, backbone, data, prompts: list[str], responses: list[str], domains: list[str],
                 batch_size: int, study: str | None = None) -> np.ndarray:
    """The proxy RM's raw rewards of (prompt, response) texts, as the job's backbone encodes them; with ``study``,
    the reward that study optimises (``RewardModel.study_scorer``: e.g. UWO's λ is set per study)."""
    seqs = encode_sequences(backbone.tokenizer, backbone.join, prompts, responses, domains,
                            {d: i for i, d in enumerate(data.domains)}, backbone.max_length)
    scorer = arch.study_scorer(study) if study is not None else None
    return arch.score(seqs, batch_size, scorer).numpy().astype(float)


def gold_units(data, initial: np.ndarray, scale: str) -> dict:
    """Gold's units from its initial-policy scores: ``reward_units``, unless the data's gold is a pass rate
    (gold=verifier, ``gold_scale_kind``): then the pass rate less the initial policy's, unscaled, so a curve's gold
    is the pass-rate gain of the proxy's pick and ``mean`` the initial pass rate; the s.d.s and the within-prompt
    share of ``reward_units`` come beside it (``scale``'s, for comparison; NaN when every sample has the same
    verdict)."""
    if getattr(data, "gold_scale_kind", None) != "pass_rate":
        return reward_units(initial, scale)
    initial = np.asarray(initial, dtype=float)
    try:
        spread = reward_units(initial, scale)
    except ValueError:
        spread = {"sd_within": float("nan"), "sd_total": float("nan"), "within_share": float("nan")}
    return {**spread, "scale_kind": "pass_rate", "mean": float(initial.mean()), "scale": 1.0}


def bon_samples(policy: Policy, data, cache: ArtifactCache, seed: int, n_prompts: int, n_samples: int) -> dict:
    """N initial-policy samples for each of ``n_prompts`` held-out prompts (cached), with their gold rewards.

    Returns ``{"prompts": [P], "domains": [P], "responses": [P][N], "gold": [P][N]}``. Only the texts are
    cached: gold is recomputed on every call (about 1 s for 12,800 samples), so it always is the gold of the
    world code that runs — a cache key holds the world's config, not its code.
    """
    spec = {"policy": policy.cache_spec(), "n_prompts": n_prompts, "n_samples": n_samples, "seed": seed}

    def build(out: Path) -> None:
        held_out = data.eval_prompts(n_prompts, seed)
        flat = [p for p, _ in held_out for _ in range(n_samples)]  # prompt-major: row i = prompt i // N
        texts = policy.sample(flat, seed, Stream.BON_SAMPLES)
        responses = [texts[i * n_samples : (i + 1) * n_samples] for i in range(n_prompts)]
        doc = {"prompts": [p for p, _ in held_out], "domains": [d for _, d in held_out], "responses": responses}
        (out / "samples.json").write_text(json.dumps(doc), encoding="utf-8")

    entry = cache.directory("bon_samples", spec, build)
    samples = json.loads((entry / "samples.json").read_text(encoding="utf-8"))
    samples["gold"] = [gold_scores(data, [p] * n_samples, rs, [d] * n_samples).tolist()
                       for p, d, rs in zip(samples["prompts"], samples["domains"], samples["responses"], strict=True)]
    return samples


def bon_study(cfg: BoNConfig, score, data, policy: Policy, cache: ArtifactCache, seed: int):
    """Best-of-N curve and fit. ``score(prompts, responses, domains)`` gives raw proxy rewards.

    Returns (metrics block, curve rows, the raw initial-policy scores ``{"proxy": (P, N), "gold": (P, N)}``
    from which PPO takes its units, with the samples themselves, ``"texts"``: (prompts, responses, domains)).
    """
    t0 = time.perf_counter()
    samples = bon_samples(policy, data, cache, seed, cfg.n_prompts, cfg.n_samples)
    t_samples = time.perf_counter() - t0
    P, N = cfg.n_prompts, cfg.n_samples
    flat_prompts = [p for p in samples["prompts"] for _ in range(N)]
    flat_domains = [d for d in samples["domains"] for _ in range(N)]
    flat_responses = [r for rs in samples["responses"] for r in rs]
    t0 = time.perf_counter()
    proxy_raw = score(flat_prompts, flat_responses, flat_domains).reshape(P, N)
    t_score = time.perf_counter() - t0
    gold_raw = np.asarray(samples["gold"], dtype=float)  # (P, N)
    # All P x N samples are the initial policy's (the n=1 distribution): each RM in its own units.
    units = {"proxy": reward_units(proxy_raw, cfg.reward_scale), "gold": gold_units(data, gold_raw, cfg.reward_scale)}
    proxy, gold = standardize(proxy_raw, units["proxy"]), standardize(gold_raw, units["gold"])
    rows = [{"opt": "bon", **r} for r in bon_curve(proxy, gold, cfg.ns)]
    # How well the proxy ranks samples of one prompt, on average: what BoN selection acts on.
    corr = np.nanmean([np.corrcoef(p, g)[0, 1] if p.std() > 0 and g.std() > 0 else np.nan
                       for p, g in zip(proxy_raw, gold_raw, strict=True)])
    block = {**summarize("bon", rows, cfg.sqrt_kl_grid, cfg.common_sqrt_kl), "n_prompts": P, "n_samples": N,
             "units": units,
             "within_prompt_corr": float(corr), "seconds_samples": t_samples, "seconds_score": t_score}
    if units["gold"].get("scale_kind") == "pass_rate":
        block["pass_rate"] = pass_rate_curve(rows, units["gold"]["mean"])
    for r in rows:
        log.debug("bon n=%d d=%.3f proxy=%.3f gold=%.3f", r["n"], r["sqrt_kl"], r["proxy"], r["gold"])
    last = rows[-1]
    log.info("best-of-n: at n=%d (d=√KL %.2f) gold %.3f, proxy %.3f (%s s.d. of the initial policy); %d x %d "
             "samples", last["n"], last["sqrt_kl"], last["gold"], last["proxy"], cfg.reward_scale, P, N)
    return block, rows, {"proxy": proxy_raw, "gold": gold_raw, "texts": (flat_prompts, flat_responses, flat_domains)}


def pass_rate_curve(rows: list[dict], initial: float) -> dict:
    """gold=verifier: the pass rate of the proxy's pick at each n (the initial policy's, ``initial``, plus the
    curve's gold, which curves.csv keeps as the pass-rate gain), its peak, and the over-optimisation after it:
    ``drop`` (the peak less the rate at the largest n, >= 0) while the proxy rose by ``proxy_rise_after_peak`` (in
    its within-prompt s.d.); ``overoptimized``: both positive."""
    rates = np.array([initial + r["gold"] for r in rows])
    best, last = int(np.argmax(rates)), len(rows) - 1
    rise = rows[last]["proxy"] - rows[best]["proxy"]
    return {"initial": initial, "at_n": {str(r["n"]): float(rate) for r, rate in zip(rows, rates, strict=True)},
            "peak": float(rates[best]), "peak_n": int(rows[best]["n"]), "peak_se": float(rows[best]["gold_se"]),
            "at_max_n": float(rates[last]), "max_n": int(rows[last]["n"]), "drop": float(rates[best] - rates[last]),
            "proxy_rise_after_peak": float(rise), "overoptimized": bool(rates[best] > rates[last] and rise > 0)}


def check_studies(studies: dict, policy_cfg, has_gold: bool, data_name: str) -> tuple[tuple, Policy]:
    """The studies' settings and the policy, checked without preparing anything (the job calls this before
    training, so a bad study option costs no trained RM). ``has_gold``: the job will have a gold reward (the
    world's, or gold=rm's). Returns ((bon, ppo, capability configs or None), the unprepared policy)."""
    unknown = sorted(set(studies) - set(STUDIES))
    if unknown:
        raise ValueError(f"opt: unknown studies {unknown}; valid: {list(STUDIES)} (or opt=none)")
    if not has_gold:
        # BoN and PPO are read in gold units (the world's, or gold=rm's).
        raise ValueError(f"opt={sorted(studies)} needs a gold reward: data=synthetic has one, or give a gold RM "
                         f"(gold=rm gold.path=...); data={data_name} has none: run it with opt=none")
    bon_cfg = _config(studies["bon"], BoNConfig, "opt.bon") if "bon" in studies else None
    ppo_cfg = _config(studies["ppo"], PPOConfig, "opt.ppo") if "ppo" in studies else None
    cap_cfg = _config(studies["capability"], CapabilityConfig, "opt.capability") if "capability" in studies else None
    try:
        policy = instantiate(policy_cfg, _convert_="all")
    except Exception as e:  # noqa: BLE001 - name the group, as job.build does
        raise ValueError(f"policy: {e.__cause__ or e}") from e
    return (bon_cfg, ppo_cfg, cap_cfg), policy


def run_studies(studies: dict, arch, data, backbone, policy_cfg, cache: ArtifactCache, seed: int,
                eval_batch_size: int, metric_logger=None, stages=None,
                compute: Compute = CPU) -> tuple[dict, list[dict]]:
    """Run the selected studies (``{"bon": cfg, "ppo": cfg, "capability": cfg}``, any may be absent) against ``arch``.
    ``metric_logger`` (harness.loggers) receives each PPO evaluation step as it happens; ``stages``
    (harness.progress.Stages) names the policy and each study as it starts; ``compute`` is where the policy runs
    (SFT, sampling, PPO, lm-eval).

    Returns ``({"bon": block, "ppo": block, "ppo_log": [...], "capability": block}, curve rows)``.
    """
    (bon_cfg, ppo_cfg, cap_cfg), policy = check_studies(studies, policy_cfg, hasattr(data, "gold"),
                                                        getattr(data, "name", type(data).__name__))
    stage = stages.next if stages is not None else (lambda what: None)
    stage(f"policy: {config_name(policy_cfg)} (SFT-trained or loaded once, then cached)")
    place(compute, policy)
    # The data may fix the seed of its policy samples across job seeds (gold=verifier: one set of samples shared by
    # every seed of a sweep); BoN's samples and the policy's cache key then use it. Otherwise: the job seed.
    sample_seed = getattr(data, "sample_seed", seed)
    policy.prepare(cache, data, sample_seed)

    def scorer(study: str):
        def score(prompts, responses, domains):
            return proxy_scores(arch, backbone, data, prompts, responses, domains, eval_batch_size, study)

        return score

    def gold(prompts, responses, domains):
        return gold_scores(data, prompts, responses, domains)

    results: dict = {}
    curves: list[dict] = []
    initial = None  # BoN's raw initial-policy scores, when it ran
    ppo_model = None
    if bon_cfg is not None:  # first: its samples give PPO its units
        stage(f"best-of-n: {bon_cfg.n_samples} samples for each of {bon_cfg.n_prompts} prompts (sampled once, cached), "
              "scored by the reward model")
        results["bon"], rows, initial = bon_study(bon_cfg, scorer("bon"), data, policy, cache, sample_seed)
        # The RM's and its views' length bias on the same samples, gold's beside it.
        results["bon"]["length_corr"] = sample_length_bias(arch, backbone, data, initial["texts"], initial["proxy"],
                                                           initial["gold"], eval_batch_size)
        curves += rows
    if ppo_cfg is not None:
        n_eval = ppo_cfg.eval_prompts
        prompts = data.eval_prompts(n_eval + ppo_cfg.train_prompts, seed)
        # The first prompts of the held-out stream are PPO's eval prompts (also BoN's first ones); the
        # rest are its training prompts, never evaluated on.
        stage(f"PPO against the reward model: {ppo_cfg.steps} steps x {ppo_cfg.rollout_batch} rollouts")
        units = None
        if initial is not None:
            proxy_raw = initial["proxy"]
            if arch.study_scorer("ppo") is not None:  # PPO optimises another reward than BoN's: its own units
                proxy_raw = scorer("ppo")(*initial["texts"]).reshape(proxy_raw.shape)
            units = {"proxy": reward_units(proxy_raw, ppo_cfg.reward_scale),
                     "gold": gold_units(data, initial["gold"], ppo_cfg.reward_scale)}
        out = run_ppo(ppo_cfg, policy, scorer("ppo"), gold, train_prompts=prompts[n_eval:],
                      eval_prompts=prompts[:n_eval], seed=seed, units=units,
                      on_eval=metric_logger.ppo_eval if metric_logger else None)
        rows = [{"opt": "ppo", **r} for r in out["rows"]]
        results["ppo"] = {**summarize("ppo", rows, ppo_cfg.sqrt_kl_grid, ppo_cfg.common_sqrt_kl),
                          "kl_coef": ppo_cfg.kl_coef, "units": out["units"],
                          "units_from": "bon" if initial is not None else "ppo_step0",
                          "seconds": out["seconds"]}
        results["ppo_log"] = out["log"]
        ppo_model = out["model"]
        curves += rows
    if cap_cfg is not None:
        # Last, so lm-eval's seeding cannot touch BoN/PPO. "before" = the initial policy (BoN's: selection among
        # its samples leaves its weights unchanged); "after_ppo" = the PPO-trained model, when PPO ran.
        stage("capability of the policy (lm-eval) before / after PPO")
        results["capability"] = capability_study(cap_cfg, policy, data, cache, seed, after_ppo=ppo_model)
    return results, curves
