"""Best-of-n analysis: analytic KL, the unbiased BoN estimator, and Gao et al. units.

Sources (see shared/reference/methods.md §1.3-1.5, §5.6):
- ``KL_bon(n) = log n - (n-1)/n`` nats (Stiennon et al. App. G.3; Gao §2; Coste Eq. 1).
- Unbiased estimator (Nakano et al. 2021 App. I; Coste Eq. 8): with the N samples of a prompt sorted
  ascending by proxy score S_1..S_N, ``R_n = sum_{i=n..N} C(i-1, n-1)/C(N, n) * R(S_i)``.
- Units: scores re-centred on the initial policy's samples and divided by a scale measured on them
  (``reward_units``; why the default scale is the pooled within-prompt one is said there).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import gammaln


def kl_bon(n: int | np.ndarray) -> float | np.ndarray:
    """KL(best-of-n || initial policy) in nats: ``log n - (n-1)/n``.

    A scalar in gives a python float back; an array gives an array of the same shape.
    """
    arr = np.asarray(n, dtype=float)
    if np.any(~np.isfinite(arr)) or np.any(arr < 1):
        raise ValueError(f"kl_bon needs n >= 1, got {n!r}")
    kl = np.log(arr) - (arr - 1.0) / arr
    return float(kl) if kl.ndim == 0 else kl


def _log_comb(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)


def bon_coefficients(N: int, n: int) -> np.ndarray:
    """Weights of the estimator: entry ``i-1`` is the weight of the i-th smallest (by proxy) sample.

    ``C(i-1, n-1) / C(N, n)`` for ``i >= n`` and 0 below; it is the probability that sample i is the
    maximum of a uniformly drawn n-subset, so the weights sum to 1 (hockey-stick identity).
    """
    N, n = int(N), int(n)
    if not 1 <= n <= N:
        raise ValueError(f"best-of-n needs 1 <= n <= N, got n={n} with N={N} samples per prompt")
    coef = np.zeros(N, dtype=float)
    i = np.arange(n, N + 1)
    # Exact binomials at N ~ 12,600 are integers of thousands of digits (the reference code uses
    # comb(..., exact=True)); log space keeps this O(N) floats with ~1e-11 relative error.
    coef[n - 1 :] = np.exp(_log_comb(i - 1, n - 1) - _log_comb(N, n))
    return coef


def _check_scores(proxy: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proxy = np.asarray(proxy, dtype=float)
    gold = np.asarray(gold, dtype=float)
    # A single prompt may be passed as a 1-D row; everything else must be (P, N).
    if proxy.ndim == 1:
        proxy = proxy[None, :]
    if gold.ndim == 1:
        gold = gold[None, :]
    if proxy.ndim != 2 or proxy.shape != gold.shape:
        raise ValueError(f"proxy and gold must both have shape (P, N); got {proxy.shape} and {gold.shape}")
    if proxy.shape[0] == 0 or proxy.shape[1] == 0:
        raise ValueError(f"need at least one prompt and one sample, got shape {proxy.shape}")
    # argsort puts NaN last, which would silently crown a NaN-scored sample as best-of-n.
    if not (np.all(np.isfinite(proxy)) and np.all(np.isfinite(gold))):
        raise ValueError("proxy and gold scores must be finite")
    return proxy, gold


def _sort_jointly(proxy: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # One permutation for both arrays: sorting gold on its own (as the ensemble path of Coste et al.'s
    # code effectively does, methods.md §5.6) credits BoN with gold it never selected. A stable sort
    # breaks proxy ties by sample index, so results are deterministic.
    order = np.argsort(proxy, axis=1, kind="stable")
    return np.take_along_axis(proxy, order, axis=1), np.take_along_axis(gold, order, axis=1)


def bon_expectation(proxy: np.ndarray, gold: np.ndarray, n: int) -> tuple[float, float]:
    """Unbiased estimate of E[proxy] and E[gold] of the best-of-n sample, averaged over prompts.

    ``proxy`` and ``gold`` have shape (P, N): P prompts, N samples each (a 1-D array is one prompt).
    Samples are ranked by proxy; ties in proxy are broken by sample index (lower index ranks lower).
    """
    proxy, gold = _check_scores(proxy, gold)
    sp, sg = _sort_jointly(proxy, gold)
    coef = bon_coefficients(sp.shape[1], n)
    return float((sp @ coef).mean()), float((sg @ coef).mean())


def _standard_error(per_prompt: np.ndarray) -> float:
    # Prompts are the independent units (a prompt's N samples share it); with one prompt there is no estimate.
    P = per_prompt.size
    return float(per_prompt.std(ddof=1) / np.sqrt(P)) if P > 1 else float("nan")


def bon_curve(proxy: np.ndarray, gold: np.ndarray, ns: Sequence[int]) -> list[dict]:
    """One row per n: ``{"n", "kl", "sqrt_kl", "proxy", "gold", "proxy_se", "gold_se"}``, with every n in
    ``1..N``. ``*_se`` are standard errors over prompts (s.d. of the per-prompt estimates / √P; NaN for P = 1)."""
    proxy, gold = _check_scores(proxy, gold)
    N = proxy.shape[1]
    for n in ns:
        if not 1 <= int(n) <= N:
            raise ValueError(f"best-of-n needs 1 <= n <= N, got n={n} with N={N} samples per prompt")
    sp, sg = _sort_jointly(proxy, gold)
    rows = []
    for n in ns:
        n = int(n)
        coef = bon_coefficients(N, n)
        kl = kl_bon(n)
        proxy_n, gold_n = sp @ coef, sg @ coef  # (P,) per-prompt estimates
        rows.append(
            {
                "n": n,
                "kl": kl,
                "sqrt_kl": float(np.sqrt(kl)),
                "proxy": float(proxy_n.mean()),
                "gold": float(gold_n.mean()),
                "proxy_se": _standard_error(proxy_n),
                "gold_se": _standard_error(gold_n),
            }
        )
    return rows


# How a reward is scaled to "1 unit" (``reward_units``): the default, and the variant kept for comparison.
REWARD_SCALES = ("within_prompt", "total")


def reward_units(initial: np.ndarray, scale: str = "within_prompt") -> dict:
    """Units of one RM (proxy or gold) from its scores of initial-policy samples, ``initial`` of shape (P, N):
    P prompts, N samples each. ``standardize(x, units)`` then puts the initial policy at 0.

    Returns ``{"scale_kind", "mean", "scale", "sd_within", "sd_total", "within_share"}``:

    - ``mean``: the mean over all P x N samples (re-centring, Gao et al. §2.2: "the initial policy's average
      reward is 0"). A constant added to one prompt's scores moves this mean and that prompt's best-of-n by the
      same amount once averaged over prompts, so it cancels from every curve point.
    - ``sd_within``: the pooled within-prompt s.d., ``sqrt(Σ_p Σ_i (x_pi − x̄_p)² / (P (N − 1)))`` (the unbiased
      within-group mean square). Bradley-Terry training identifies a reward only up to a constant *per prompt*
      (its loss sees differences of two responses to one prompt), and best-of-n and PPO's whitened advantages
      only act on those within-prompt differences. Gao et al. (§2.2) likewise calibrate the proxy on pairs of
      responses to one prompt (a temperature fitted to soft pairwise labels) and normalise gold to unit
      variance, noting later that this was unnecessary; Coste et al. re-centre so that the starting policy is
      at 0 gold (methods.md §1.3) and describe no rescaling. ``scale="within_prompt"`` (the default) divides
      by this s.d., so one unit is what a prompt's responses typically differ by.
    - ``sd_total``: the population s.d. over all P x N samples, between-prompt offsets included
      (``scale="total"``, this harness's earlier unit; kept as an option). Between-prompt offsets -- large for
      separately trained domain experts -- inflate it, so the same within-prompt gain would read smaller.
    - ``within_share``: Σ within-prompt squares / Σ total squares, the share of the variance that selection can
      act on.
    """
    if scale not in REWARD_SCALES:
        raise ValueError(f"reward scale {scale!r} is not one of {', '.join(REWARD_SCALES)}")
    x = np.asarray(initial, dtype=float)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"reward_units needs initial-policy scores of shape (P, N), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("initial-policy scores must be finite")
    P, N = x.shape
    ss_within = float(((x - x.mean(axis=1, keepdims=True)) ** 2).sum())
    ss_total = float(((x - x.mean()) ** 2).sum())
    sd_within = float(np.sqrt(ss_within / (P * (N - 1)))) if N > 1 else float("nan")
    sd_total = float(np.sqrt(ss_total / x.size))
    used = sd_within if scale == "within_prompt" else sd_total
    if not np.isfinite(used) or used == 0:
        need = " (it needs N >= 2 samples per prompt)" if scale == "within_prompt" and N < 2 else ""
        raise ValueError(f"initial-policy scores have {scale} s.d. {used}{need}; cannot scale them to a unit")
    return {"scale_kind": scale, "mean": float(x.mean()), "scale": used, "sd_within": sd_within,
            "sd_total": sd_total, "within_share": ss_within / ss_total if ss_total > 0 else float("nan")}


def standardize(scores, units: dict) -> np.ndarray:
    """``(scores − units["mean"]) / units["scale"]``: scores in the units of ``reward_units``."""
    return (np.asarray(scores, dtype=float) - units["mean"]) / units["scale"]
