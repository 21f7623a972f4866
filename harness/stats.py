"""Paired comparisons of a sweep's architectures, with confidence intervals over seeds and Holm-adjusted p-values.

The unit of replication is the seed: two jobs of one *setting* (the same config apart from the architecture and
the seed) and one seed share the world, its data, the backbone and the policy, so their difference on a metric is
a paired observation. For each metric, architecture A and baseline B (``baseline`` in conf/claims.yaml):

- per seed s, ``d_s = metric(A, s) - metric(B, s)`` (``stats_per_seed.csv`` lists every value);
- the effect is the mean of the ``d_s`` — the median for heavy-tailed metrics (proxy-gold gaps, fitted peaks);
- its 95% CI (``ci_low``, ``ci_high``) is a t-interval over seeds for means, the distribution-free order-statistic
  interval for medians (``seed_effect``). Each seed's world has its own test pairs, so a per-seed accuracy
  difference already carries its test set's sampling noise and the t-interval over seeds covers both;
- beside it, a bootstrap interval (``boot_low``, ``boot_high``): BCa over seeds (``scipy.stats.bootstrap``), or
  for accuracies, when the jobs saved their per-pair scores (``test_scores.csv``), a two-level bootstrap over
  seeds and each drawn seed's test pairs (scipy has none, so it is written out here). Over 5 seeds a bootstrap
  sees at most 126 distinct resamples and its spread is the plug-in (n-1)/n of the sample variance: it
  under-covers (about 84 % at a nominal 95 % for normal differences, where the t-interval covers 96 %:
  tests/test_stats.py), so it is shown, never read for a verdict;
- the two-sided p-value comes from a test on the per-seed differences: a paired t-test for means (consistent with
  the t-interval: p < 0.05 exactly when it excludes 0), the exact Wilcoxon signed-rank test for medians
  (``seed_p_value``; its smallest p at 5 seeds is 0.0625, so a median claim cannot pass at 5 seeds: the honest
  answer). Holm's step-down adjustment runs over every comparison of one metric (the stats table) or over each
  family of claims declared in conf/claims.yaml (``harness.claims``);
- how many seeds a comparison needs (``seeds_to_pass``, ``seeds_for_power``): from its observed effect and
  spread, by the t-test's formula.
"""
from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from .accuracy import pair_correct
from .optimize.fits import value_at
from .results import (
    METRICS_FILE,
    TEST_SCORES_FILE,
    atomic_write_text,
    find_job_dirs,
    flatten,
    read_curves,
    read_metrics,
)

log = logging.getLogger(__name__)

STATS_FILE = "stats.csv"
PER_SEED_FILE = "stats_per_seed.csv"
CONFIDENCE = 0.95
N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # the bootstrap's own random stream: tables are reproducible byte for byte
# Config keys that never define a setting: they name the job (arch, seed) or do not change its numbers.
NOT_SETTING = ("arch", "seed", "cache_dir", "threads", "eval.batch_size")


@dataclass(frozen=True)
class Metric:
    key: str  # summary column (dotted), or a curve metric "ppo.gold@sqrt_kl=matched" / "...=2.0"
    heavy_tailed: bool = False  # the effect is a median, not a mean


# What the stats table compares by default; claims may name any other summary column.
METRICS = (
    Metric("accuracy.gold.overall"),
    Metric("accuracy.human.overall"),
    Metric("bon.final_gold"),  # at the largest n, the same √KL for every arch
    Metric("bon.observed_gold_peak"),
    Metric("bon.gold_drop"),
    Metric("bon.final_gap", heavy_tailed=True),
    Metric("ppo.final_gold"),  # at the common √KL of opt.ppo.common_sqrt_kl (null where a run stopped short)
    Metric("ppo.gold@sqrt_kl=matched"),  # at the largest √KL both runs reached
    Metric("ppo.observed_gold_peak"),
    Metric("ppo.gold_drop"),
    Metric("ppo.final_gap", heavy_tailed=True),
)
HEAVY_TAILED = {m.key for m in METRICS if m.heavy_tailed} | {"bon.gold_peak", "ppo.gold_peak", "bon.d_peak",
                                                              "ppo.d_peak", "ppo.gap@sqrt_kl=matched"}


# ----------------------------------------------------------------------------------------- jobs


def _flat_config(config: Mapping | None) -> dict:
    out = {}
    for key, value in flatten(config or {}).items():
        out[f"config.{key}"] = value
    return out


def load_jobs(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per ok job under ``sweep_dir``: ``arch`` (the Hydra choice, plus any arch.* value that varies
    within it), ``seed``, ``job_dir`` (absolute), every flattened metric, and ``config.*`` (the resolved config),
    plus the derived columns ``bon.gold_drop`` / ``ppo.gold_drop`` (observed gold peak minus the gold of the most
    optimised point: how far over-optimization took gold back down)."""
    rows = []
    for job_dir in find_job_dirs(sweep_dir):
        if not (job_dir / METRICS_FILE).is_file():
            continue
        try:
            metrics = read_metrics(job_dir)
        except (OSError, ValueError):
            continue
        if metrics.get("status") != "ok":
            continue
        row = flatten(metrics)
        row.update(_flat_config(metrics.get("config")))
        row["job_dir"] = str(job_dir)
        row["arch"] = (metrics.get("choices") or {}).get("arch") or "?"
        rows.append(row)
    return label_jobs(pd.DataFrame.from_records(rows)) if rows else pd.DataFrame(columns=["arch", "seed"])


def label_jobs(jobs: pd.DataFrame) -> pd.DataFrame:
    """Derived columns on a jobs table (also used on hand-made tables in tests): the gold drops, and arch labels
    that tell apart jobs of one arch choice run with different arch.* values (``ens_uwo[uwo_lambda=1.0]``)."""
    jobs = jobs.copy()
    for opt in ("bon", "ppo"):
        peak, last = f"{opt}.observed_gold_peak", f"{opt}.last_gold"  # last: the most optimised point
        if peak in jobs.columns and last in jobs.columns:
            jobs[f"{opt}.gold_drop"] = pd.to_numeric(jobs[peak]) - pd.to_numeric(jobs[last])
    arch_keys = [c for c in jobs.columns if c.startswith("config.arch.") and c != "config.arch._target_"]
    labels = []
    for _, row in jobs.iterrows():
        same = jobs[jobs["arch"] == row["arch"]]
        varying = [c for c in arch_keys if same[c].astype(str).nunique() > 1]
        extra = ",".join(f"{c.removeprefix('config.arch.')}={row[c]}" for c in varying)
        labels.append(f"{row['arch']}[{extra}]" if extra else row["arch"])
    jobs["arch"] = labels
    jobs["seed"] = pd.to_numeric(jobs["seed"]).astype(int)
    return jobs


def setting_keys(jobs: pd.DataFrame) -> list[str]:
    """Config keys whose value differs between jobs, other than the arch's own and the seed: they define settings
    (e.g. ``config.data.world.human_agreement``, ``config.opt.ppo.kl_coef``)."""
    keys = []
    for c in jobs.columns:
        if not c.startswith("config.") or any(c == f"config.{k}" or c.startswith(f"config.{k}.")
                                              for k in NOT_SETTING):
            continue
        if jobs[c].dropna().astype(str).nunique() > 1:  # a key only some jobs have (e.g. no PPO) splits nothing
            keys.append(c)
    return keys


def setting_label(row: Mapping, keys: Sequence[str]) -> str:
    parts = [f"{k.removeprefix('config.')}={row[k]}" for k in keys if pd.notna(row.get(k))]
    return "; ".join(parts) if parts else "default"


def matches(jobs: pd.DataFrame, filters: Mapping) -> pd.Series:
    """Jobs whose config agrees with ``filters`` ({dotted config key: value}). A job without the key passes: a
    job that ran no PPO has no PPO setting to contradict."""
    keep = pd.Series(True, index=jobs.index)
    for key, want in (filters or {}).items():
        col = key if key.startswith("config.") else f"config.{key}"
        if col not in jobs.columns:
            continue
        have = jobs[col]
        equal = have.map(lambda v, want=want: pd.isna(v) or _same(v, want))
        keep &= equal
    return keep


def _same(value, want) -> bool:
    try:
        return math.isclose(float(value), float(want), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(value) == str(want)


# ----------------------------------------------------------------------------------------- values


def curve_value(job_dir: str | Path, opt: str, quantity: str, sqrt_kl: float) -> float:
    """``quantity`` (gold | proxy | gap = proxy - gold) of one job's ``opt`` curve at distance ``sqrt_kl``, read
    as the job's own matched values are (``optimize.fits.value_at``, in the run's order); NaN if never reached."""
    curve = read_curves(job_dir)
    order = "step" if opt == "ppo" else "n"
    if not {"opt", order, "sqrt_kl", "proxy", "gold"} <= set(curve.columns):
        return math.nan  # a damaged curves.csv: no value, not a failed aggregation
    curve = curve[curve["opt"] == opt].sort_values(order)
    return value_at(curve["sqrt_kl"].to_numpy(float), _quantity(curve, quantity), sqrt_kl)


def _quantity(curve: pd.DataFrame, quantity: str) -> np.ndarray:
    if quantity == "gap":
        return (curve["proxy"] - curve["gold"]).to_numpy(float)
    if quantity not in ("gold", "proxy"):
        raise ValueError(f"curve quantity {quantity!r}: valid are gold, proxy, gap")
    return curve[quantity].to_numpy(float)


def parse_curve_metric(key: str) -> tuple[str, str, str] | None:
    """"ppo.gold@sqrt_kl=matched" -> ("ppo", "gold", "matched"): read off the two runs' curves where both got to.
    None for a summary column (the job's own grid, e.g. "ppo.gold@sqrt_kl=4.0", is one)."""
    if not key.endswith("@sqrt_kl=matched"):
        return None
    head, at = key.split("@sqrt_kl=")
    opt, quantity = head.split(".", 1)
    return opt, quantity, at


def max_sqrt_kl(job_dir: str | Path, opt: str) -> float:
    curve = read_curves(job_dir)
    if not {"opt", "sqrt_kl"} <= set(curve.columns):
        return math.nan
    d = curve.loc[curve["opt"] == opt, "sqrt_kl"].to_numpy(float)
    return float(np.nanmax(d)) if len(d) else math.nan


def paired_values(job_a: pd.Series, job_b: pd.Series, metric_a: str, metric_b: str) -> tuple[float, float]:
    """The two numbers one seed contributes: plain summary columns, or curve values at a matched distance (the
    largest √KL both runs reached, when ``=matched``)."""
    curve_a, curve_b = parse_curve_metric(metric_a), parse_curve_metric(metric_b)
    if curve_a is None and curve_b is None:
        return _number(job_a.get(metric_a)), _number(job_b.get(metric_b))
    if curve_a is None or curve_b is None:
        raise ValueError(f"cannot pair a curve metric with a summary column ({metric_a} vs {metric_b})")
    (opt_a, qa, at_a), (opt_b, qb, at_b) = curve_a, curve_b
    if at_a == "matched" or at_b == "matched":
        at = min(max_sqrt_kl(job_a["job_dir"], opt_a), max_sqrt_kl(job_b["job_dir"], opt_b))
    else:
        at = float(at_a)
    return (curve_value(job_a["job_dir"], opt_a, qa, at), curve_value(job_b["job_dir"], opt_b, qb, at))


def _number(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


# ----------------------------------------------------------------------------------------- per-pair scores


def accuracy_target(metric: str) -> tuple[str, str | None, str] | None:
    """("gold" | "human", domain or None, view prefix) for accuracy metrics that per-pair scores can recompute:
    ``accuracy.gold.overall``, ``accuracy.human.per_domain.chitchat``, ``unmerged.accuracy.gold.overall``..."""
    parts = metric.split(".")
    if "accuracy" not in parts:
        return None
    i = parts.index("accuracy")
    view, rest = ".".join(parts[:i]), parts[i + 1 :]
    if len(rest) == 2 and rest[1] == "overall" and rest[0] in ("gold", "human"):
        return rest[0], None, view
    if len(rest) == 3 and rest[1] == "per_domain" and rest[0] in ("gold", "human"):
        return rest[0], rest[2], view
    return None


def pair_correctness(job_dir: str | Path, metric: str) -> np.ndarray | None:
    """Per test pair, 1.0 if the job's scorer orders the pair right for ``metric`` and 0.0 if not, NaN where the
    pair does not count (gold tie, other domain); None when the job saved no per-pair scores for it."""
    target = accuracy_target(metric)
    path = Path(job_dir) / TEST_SCORES_FILE
    if target is None or not path.is_file():
        return None
    basis, domain, view = target
    scores = pd.read_csv(path, keep_default_na=False, na_values=[""])
    prefix = f"{view}." if view else ""
    if f"{prefix}chosen" not in scores.columns:
        return None
    r_c, r_r = scores[f"{prefix}chosen"].to_numpy(float), scores[f"{prefix}rejected"].to_numpy(float)
    if basis == "human":
        correct, decided = pair_correct(r_c, r_r)
    else:  # the gold order (+1 / -1 / 0) against 0 orders each pair as the gold rewards do
        order = scores["gold_order"].to_numpy(float)
        correct, decided = pair_correct(r_c, r_r, order, np.zeros_like(order))
    correct = correct.astype(float)
    correct[~decided] = np.nan
    if domain is not None:
        correct[scores["domain"].astype(str).to_numpy() != domain] = np.nan
    return correct


# ----------------------------------------------------------------------------------------- intervals and tests


def _statistic(heavy_tailed: bool):
    return np.median if heavy_tailed else np.mean


def t_interval(d, confidence: float = CONFIDENCE, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Student-t interval of the mean along ``axis``: mean ± t_{(1+c)/2, n-1} · s / √n (s with n - 1 d.f.).
    Vectorised: a (draws, n) array gives one interval per draw (the coverage test simulates 2,000 at once).

    It is exact for normal differences at any n and keeps its level for symmetric heavy tails; at 5 seeds it
    covers the true mean about 95 % of the time where the BCa bootstrap covers about 84 % (tests/test_stats.py)."""
    x = np.asarray(d, dtype=float)
    n = x.shape[axis]
    mean, sd = x.mean(axis=axis), x.std(axis=axis, ddof=1)
    half = sps.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n)
    return mean - half, mean + half


def median_interval(d: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Distribution-free interval of the median, from order statistics: [d_(k), d_(n+1-k)] with the largest k
    whose coverage 1 - 2 P(Bin(n, 1/2) < k) is at least ``confidence``. Below 6 values no k reaches 95 %; then it
    is [min, max], with the coverage it has (1 - 2^(1-n): 93.75 % at 5). Returns (low, high, coverage)."""
    x = np.sort(np.asarray(d, dtype=float))
    k, coverage = _order_statistic_rank(len(x), confidence)
    return float(x[k - 1]), float(x[len(x) - k]), coverage


@functools.cache
def _order_statistic_rank(n: int, confidence: float) -> tuple[int, float]:
    k = 1
    while k < n // 2 and 1 - 2 * sps.binom.cdf(k, n, 0.5) >= confidence:  # the coverage of k + 1
        k += 1
    return k, float(1 - 2 * sps.binom.cdf(k - 1, n, 0.5))


def bca_interval(d, heavy_tailed: bool = False, rng_seed: int = BOOTSTRAP_SEED, n_resamples: int = N_RESAMPLES,
                 axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """BCa bootstrap interval of the mean (median) over seeds, the percentile interval where BCa is undefined;
    vectorised like ``t_interval``. Kept as a secondary column: over 5 seeds it sees at most 126 distinct
    resamples and its spread is the plug-in (n-1)/n of the sample variance, so it under-covers (about 84 % for
    normal differences at 5 seeds, tests/test_stats.py) and never decides a verdict."""
    x = np.asarray(d, dtype=float)
    stat = _statistic(heavy_tailed)

    def statistic(sample, axis=-1):
        return stat(sample, axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa's "degenerate distribution" warning: handled below
        low, high = sps.bootstrap((x,), statistic, n_resamples=n_resamples, confidence_level=CONFIDENCE,
                                  method="BCa", axis=axis, rng=np.random.default_rng(rng_seed)).confidence_interval
        undefined = ~(np.isfinite(low) & np.isfinite(high))
        if np.any(undefined):
            p_low, p_high = sps.bootstrap((x,), statistic, n_resamples=n_resamples, confidence_level=CONFIDENCE,
                                          method="percentile", axis=axis,
                                          rng=np.random.default_rng(rng_seed)).confidence_interval
            low, high = np.where(undefined, p_low, low), np.where(undefined, p_high, high)
    return low, high


def seed_p_value(diffs: Sequence[float], heavy_tailed: bool = False, null: float = 0.0) -> float:
    """Two-sided p of "the effect is ``null``" from per-seed paired differences: a one-sample t-test of their mean,
    or for heavy-tailed metrics the exact Wilcoxon signed-rank test of d - null (zeros dropped). NaN below 2 seeds.
    Against a t-interval it is consistent: p < 1 - CONFIDENCE exactly when the interval excludes ``null``."""
    d = np.asarray([x for x in diffs if np.isfinite(x)], dtype=float) - null
    if len(d) < 2:
        return math.nan
    if np.ptp(d) == 0:  # every seed the same difference (a parameter count): exact, no sampling error
        return 0.0 if d[0] != 0 else 1.0
    if heavy_tailed:
        nonzero = d[d != 0]
        return float(sps.wilcoxon(nonzero, method="exact").pvalue) if len(nonzero) else 1.0
    return float(sps.ttest_1samp(d, 0.0).pvalue)


def seed_effect(diffs: Sequence[float], heavy_tailed: bool = False,
                per_pair: Sequence[np.ndarray] | None = None) -> dict:
    """Effect of per-seed paired differences (their mean, or median when heavy-tailed), its 95 % interval over
    seeds (``ci_*``: a t-interval for means, the order-statistic interval for medians), the p-value of "no
    difference", and beside them a bootstrap interval (``boot_*``: BCa over seeds, or over seeds and test pairs
    when ``per_pair`` holds each seed's per-pair differences of correctness, which then also give the per-seed
    differences). ``sd``: the s.d. of the per-seed differences (n - 1 d.f.), what the seeds-needed column reads."""
    if per_pair is not None:
        per_pair = [x for x in (np.asarray(x, dtype=float)[np.isfinite(x)] for x in per_pair) if len(x)]
        diffs = [x.mean() for x in per_pair]
    d = np.asarray([x for x in diffs if np.isfinite(x)], dtype=float)
    out = {"n_seeds": len(d), "effect": float(_statistic(heavy_tailed)(d)) if len(d) else math.nan,
           "sd": float(d.std(ddof=1)) if len(d) > 1 else math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "ci_method": "", "p": math.nan, "boot_low": math.nan, "boot_high": math.nan, "boot_method": ""}
    if len(d) < 2:
        return out
    if np.ptp(d) == 0:  # every seed the same difference: no spread, nothing to resample
        out.update(ci_low=float(d[0]), ci_high=float(d[0]), boot_low=float(d[0]), boot_high=float(d[0]),
                   ci_method="none (every seed the same difference)", p=seed_p_value(d, heavy_tailed))
        return out
    if heavy_tailed:
        low, high, coverage = median_interval(d)
        method = f"order statistics over seeds ({coverage:.1%} coverage)"
    else:
        low, high = t_interval(d)
        method = "t over seeds"
    out.update(ci_low=float(low), ci_high=float(high), ci_method=method, p=seed_p_value(d, heavy_tailed))
    if per_pair is not None:
        b_low, b_high = bootstrap_seeds_and_pairs(per_pair)
        b_method = "bootstrap over seeds x test pairs"
    else:
        b_low, b_high = bca_interval(d, heavy_tailed)
        b_method = "BCa bootstrap over seeds"
    out.update(boot_low=float(b_low), boot_high=float(b_high), boot_method=b_method)
    return out


def bootstrap_seeds_and_pairs(per_seed: Sequence[np.ndarray], rng_seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95 % interval of the mean over seeds of the mean per-pair difference (accuracy A - accuracy B on the same
    test pairs), from a two-level bootstrap: draw seeds with replacement, then each drawn seed's pairs with
    replacement. It carries the finite test set as well as the seeds (and under-covers at few seeds, like BCa).

    Per-pair differences of correctness take few values (-1, 0, 1), so a resample of m pairs is a multinomial
    draw of value counts: exact, and cheap for thousands of pairs."""
    per_seed = [np.asarray(x, dtype=float)[np.isfinite(x)] for x in per_seed]
    per_seed = [x for x in per_seed if len(x)]
    S = len(per_seed)
    if S < 1:
        return math.nan, math.nan
    rng = np.random.default_rng(rng_seed)
    B = N_RESAMPLES
    inner = np.empty((S, B, S))  # inner[s, b, j]: seed s's resampled mean when drawn at position j of resample b
    for s, x in enumerate(per_seed):
        values, counts = np.unique(x, return_counts=True)
        draws = rng.multinomial(len(x), counts / counts.sum(), size=(B, S))  # (B, S, n_values)
        inner[s] = draws @ values / len(x)
    outer = rng.integers(0, S, size=(B, S))
    distribution = inner[outer, np.arange(B)[:, None], np.arange(S)[None, :]].mean(axis=1)  # (B,)
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(distribution, [alpha, 1 - alpha])
    return float(low), float(high)


# The most seeds the seeds-needed columns look for; beyond it they say "> MAX_SEEDS".
MAX_SEEDS = 1000


def seeds_to_pass(effect: float, sd: float, alpha: float, heavy_tailed: bool = False) -> int | None:
    """Seeds at which the observed effect and spread would pass a two-sided test at ``alpha``: the smallest n with
    |effect| / (sd / √n) > t_{1 - alpha/2, n-1} (the t statistic at n seeds if mean and s.d. stayed as observed).
    For medians the exact Wilcoxon test also needs 2^(1-n) < alpha (its smallest p). None beyond MAX_SEEDS or
    without spread."""
    if not (np.isfinite(effect) and np.isfinite(sd) and sd > 0 and effect != 0):
        return None
    n = np.arange(2, MAX_SEEDS + 1)
    passes = abs(effect) / (sd / np.sqrt(n)) > sps.t.ppf(1 - alpha / 2, n - 1)
    if heavy_tailed:
        passes &= 2.0 ** (1 - n) < alpha
    return int(n[np.argmax(passes)]) if passes.any() else None


def seeds_for_power(effect: float, sd: float, alpha: float, power: float = 0.8) -> int | None:
    """Seeds for ``power`` of the two-sided one-sample t-test at ``alpha`` if the true effect and s.d. were the
    observed ones: the smallest n with P(|T| > t_{1-alpha/2, n-1}) >= power, T noncentral t with n - 1 d.f. and
    noncentrality effect / sd · √n. None beyond MAX_SEEDS or without spread."""
    if not (np.isfinite(effect) and np.isfinite(sd) and sd > 0 and effect != 0):
        return None
    n = np.arange(2, MAX_SEEDS + 1)
    crit, nc = sps.t.ppf(1 - alpha / 2, n - 1), abs(effect) / sd * np.sqrt(n)
    achieved = sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc)
    return int(n[np.argmax(achieved >= power)]) if (achieved >= power).any() else None


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error); NaN p-values stay NaN and do not count in the family."""
    p = np.asarray(p_values, dtype=float)
    finite = np.nonzero(np.isfinite(p))[0]
    adjusted = np.full(len(p), math.nan)
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


# ----------------------------------------------------------------------------------------- comparisons


def compare(jobs_a: pd.DataFrame, jobs_b: pd.DataFrame, metric_a: str, metric_b: str | None = None,
            heavy_tailed: bool | None = None) -> tuple[dict, list[dict]]:
    """Paired comparison of two sets of jobs (one per seed each) on a metric: the effect block and the per-seed
    rows. Accuracies use per-pair scores when both jobs of every seed saved them."""
    metric_b = metric_b or metric_a
    heavy = (metric_a in HEAVY_TAILED) if heavy_tailed is None else heavy_tailed
    by_seed_a, by_seed_b = _one_per_seed(jobs_a), _one_per_seed(jobs_b)
    seeds = sorted(set(by_seed_a) & set(by_seed_b))
    per_seed, pair_diffs = [], []
    for s in seeds:
        a, b = paired_values(by_seed_a[s], by_seed_b[s], metric_a, metric_b)
        per_seed.append({"seed": s, "a": a, "b": b, "diff": a - b})
        if not heavy and "job_dir" in by_seed_a[s] and "job_dir" in by_seed_b[s]:
            ca = pair_correctness(by_seed_a[s]["job_dir"], metric_a)
            cb = pair_correctness(by_seed_b[s]["job_dir"], metric_b)
            pair_diffs.append(ca - cb if ca is not None and cb is not None and len(ca) == len(cb) else None)
    diffs = [r["diff"] for r in per_seed]
    if pair_diffs and all(x is not None for x in pair_diffs) and len(pair_diffs) == len(per_seed):
        block = seed_effect(diffs, heavy, per_pair=pair_diffs)
    else:
        block = seed_effect(diffs, heavy)
    finite = [r for r in per_seed if np.isfinite(r["diff"])]
    stat = _statistic(heavy)
    block.update(statistic="median" if heavy else "mean",
                 a_value=float(stat([r["a"] for r in finite])) if finite else math.nan,
                 b_value=float(stat([r["b"] for r in finite])) if finite else math.nan)
    return block, per_seed


def _one_per_seed(jobs: pd.DataFrame) -> dict[int, pd.Series]:
    out: dict[int, pd.Series] = {}
    for _, row in jobs.iterrows():
        s = int(row["seed"])
        if s in out:
            raise ValueError(f"arch {row['arch']} has several jobs for seed {s} in one comparison "
                             f"({out[s].get('job_dir')} and {row.get('job_dir')}): add a filter that tells them apart")
        out[s] = row
    return out


def stats_table(jobs: pd.DataFrame, baseline: str, metrics: Sequence[Metric] = METRICS
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every arch against ``baseline`` on every metric present, within each setting. Returns (stats, per-seed)."""
    if jobs.empty:
        return pd.DataFrame(), pd.DataFrame()
    keys = setting_keys(jobs)
    settings = jobs.apply(lambda r: setting_label(r, keys), axis=1)
    rows, per_seed_rows = [], []
    for setting in sorted(settings.unique()):
        here = jobs[settings == setting]
        base = here[here["arch"] == baseline]
        if base.empty:
            continue
        for metric in metrics:
            curve = parse_curve_metric(metric.key)
            if curve is None and metric.key not in here.columns:
                continue
            if curve is not None and curve[0] not in {c.split(".")[0] for c in here.columns}:
                continue
            for arch in sorted(here["arch"].unique()):
                if arch == baseline:
                    continue
                try:
                    block, per_seed = compare(here[here["arch"] == arch], base, metric.key,
                                              heavy_tailed=metric.heavy_tailed)
                except ValueError as e:  # several jobs of one arch and seed in one setting: not a paired design
                    log.warning("stats: %s vs %s on %s skipped: %s", arch, baseline, metric.key, e)
                    continue
                if not np.isfinite(block["effect"]):
                    continue
                rows.append({"setting": setting, "metric": metric.key, "arch": arch, "baseline": baseline, **block})
                per_seed_rows += [{"setting": setting, "metric": metric.key, "arch": arch, "baseline": baseline, **r}
                              for r in per_seed]
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = np.nan
        for _, idx in table.groupby(["setting", "metric"]).groups.items():
            table.loc[idx, "p_holm"] = holm(table.loc[idx, "p"].tolist())
    return table, pd.DataFrame(per_seed_rows)


def write_stats(sweep_dir: str | Path, baseline: str, jobs: pd.DataFrame | None = None) -> list[Path]:
    """stats.csv and stats_per_seed.csv in ``sweep_dir`` (nothing when the baseline arch did not run)."""
    root = Path(sweep_dir)
    jobs = load_jobs(root) if jobs is None else jobs
    table, per_seed = stats_table(jobs, baseline)
    if table.empty:
        return []
    paths = [root / STATS_FILE, root / PER_SEED_FILE]
    atomic_write_text(paths[0], table.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(paths[1], per_seed.to_csv(index=False, lineterminator="\n"))
    return paths


def describe(block: Mapping, digits: int = 3) -> str:
    """"+0.021 [+0.004, +0.038]" for tables."""
    f = f"{{:+.{digits}f}}"
    if not np.isfinite(block.get("effect", math.nan)):
        return "n/a"
    if not (np.isfinite(block.get("ci_low", math.nan)) and np.isfinite(block.get("ci_high", math.nan))):
        return f.format(block["effect"])
    return f"{f.format(block['effect'])} [{f.format(block['ci_low'])}, {f.format(block['ci_high'])}]"

