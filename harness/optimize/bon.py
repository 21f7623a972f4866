"""Best-of-n analysis: analytic KL, the unbiased BoN estimator, and Gao et al. units.

Sources (see shared/reference/methods.md §1.3-1.5, §5.6):
- ``KL_bon(n) = log n - (n-1)/n`` nats (Stiennon et al. App. G.3; Gao §2; Coste Eq. 1).
- Unbiased estimator (Nakano et al. 2021 App. I; Coste Eq. 8): with the N samples of a prompt sorted
  ascending by proxy score S_1..S_N, ``R_n = sum_{i=n..N} C(i-1, n-1)/C(N, n) * R(S_i)``.
- Units (Gao §2.2): scores re-centred and scaled on initial-policy samples.
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


def bon_curve(proxy: np.ndarray, gold: np.ndarray, ns: Sequence[int]) -> list[dict]:
    """One row per n: ``{"n", "kl", "sqrt_kl", "proxy", "gold"}``, with every n in ``1..N``."""
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
        rows.append(
            {
                "n": n,
                "kl": kl,
                "sqrt_kl": float(np.sqrt(kl)),
                "proxy": float((sp @ coef).mean()),
                "gold": float((sg @ coef).mean()),
            }
        )
    return rows


def standardize_to_initial(scores: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Express ``scores`` in Gao §2.2 units: ``(scores - mean(initial)) / std(initial)``.

    ``initial`` are the same RM's scores of initial-policy samples, so the initial policy sits at 0
    with unit spread. The population std (ddof=0) is used.
    """
    initial = np.asarray(initial, dtype=float)
    if initial.size == 0:
        raise ValueError("standardize_to_initial needs at least one initial-policy score")
    mu, sd = initial.mean(), initial.std()
    if not np.isfinite(sd) or sd == 0:
        raise ValueError(f"initial-policy scores have std {sd}; cannot scale to unit variance")
    return (np.asarray(scores, dtype=float) - mu) / sd
