"""Gao et al. (2022) functional forms of gold score against distance ``d = sqrt(KL)``.

- BoN: ``R(d) = d (alpha - beta d)``
- RL (PPO): ``R(d) = d (alpha - beta log d)``

Both are linear in (alpha, beta), so ordinary least squares fits them exactly; ``R(0) = 0`` by
definition, hence no intercept. See shared/reference/methods.md §1.6.
"""

from __future__ import annotations

import math

import numpy as np


def _as_xy(d, R) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(d, dtype=float).ravel()
    R = np.asarray(R, dtype=float).ravel()
    if d.shape != R.shape:
        raise ValueError(f"d and R must have the same length, got {d.size} and {R.size}")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(R))):
        raise ValueError("d and R must be finite")
    return d, R


def _lstsq(X: np.ndarray, R: np.ndarray) -> tuple[float, float]:
    (alpha, beta), *_ = np.linalg.lstsq(X, R, rcond=None)
    return float(alpha), float(beta)


def fit_bon(d, R) -> tuple[float, float]:
    """Least-squares (alpha, beta) of ``R = d (alpha - beta d)``."""
    d, R = _as_xy(d, R)
    # The columns d and d^2 are only independent with two distinct non-zero d; with fewer,
    # lstsq would quietly return a minimum-norm answer instead of a fit.
    if np.unique(d[d != 0]).size < 2:
        raise ValueError("fit_bon needs at least 2 distinct non-zero d values")
    return _lstsq(np.column_stack([d, -(d**2)]), R)


def _ppo_points(d: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # log d is undefined at d <= 0; the form gives R(0) = 0 anyway, so such points carry no information.
    keep = d > 0
    d, R = d[keep], R[keep]
    if np.unique(d).size < 2:
        raise ValueError("fit_ppo needs at least 2 distinct points with d > 0")
    return d, R


def fit_ppo(d, R) -> tuple[float, float]:
    """Least-squares (alpha, beta) of ``R = d (alpha - beta log d)``; points with d <= 0 are dropped."""
    d, R = _ppo_points(*_as_xy(d, R))
    return _lstsq(np.column_stack([d, -d * np.log(d)]), R)


def bon_peak(alpha: float, beta: float) -> tuple[float, float]:
    """Maximiser over d >= 0 of ``d (alpha - beta d)``: ``(d*, R*) = (alpha/(2 beta), alpha^2/(4 beta))``.

    With ``beta <= 0`` the parabola has no interior maximum and grows without bound, so ``(inf, inf)``
    is returned (the one exception, ``beta == 0`` with ``alpha <= 0``, never rises: ``(0, 0)``).
    With ``beta > 0`` but ``alpha <= 0`` the vertex lies at d <= 0, i.e. optimisation only ever
    lowers gold, so the maximum over reachable d >= 0 is at the origin: ``(0, 0)``.
    """
    alpha, beta = float(alpha), float(beta)
    if beta < 0 or (beta == 0 and alpha > 0):
        return math.inf, math.inf
    if alpha <= 0:
        return 0.0, 0.0
    return alpha / (2 * beta), alpha**2 / (4 * beta)


def ppo_peak(alpha: float, beta: float) -> tuple[float, float]:
    """Maximiser over d > 0 of ``d (alpha - beta log d)``: ``d* = exp(alpha/beta - 1)``, ``R* = beta d*``.

    With ``beta <= 0`` there is no interior maximum (the curve is unbounded above), so ``(inf, inf)``
    is returned; the one exception, ``beta == 0`` with ``alpha <= 0``, never rises: ``(0, 0)``.
    """
    alpha, beta = float(alpha), float(beta)
    if beta < 0 or (beta == 0 and alpha > 0):
        return math.inf, math.inf
    if beta == 0:
        return 0.0, 0.0
    # exp overflows to inf for huge alpha/beta, which is the honest answer ("no peak in range").
    with np.errstate(over="ignore"):
        d_star = float(np.exp(alpha / beta - 1.0))
    return d_star, beta * d_star


def _json_float(x: float) -> float | None:
    # metrics.json must be strict JSON, which has no inf/NaN; None (null) marks "no finite value"
    # (e.g. an unbounded peak, or r2 of a flat curve).
    x = float(x)
    return x if math.isfinite(x) else None


def summarize(kind: str, rows: list[dict]) -> dict:
    """Fit the gold curve of ``rows`` (keys ``sqrt_kl``, ``proxy``, ``gold``) and summarise it.

    ``kind`` is ``"bon"`` or ``"ppo"`` and picks the functional form. Returns plain python floats;
    values that are not finite (an unbounded peak, an undefined r2) are given as None.
    ``final_*`` refer to the row with the largest ``sqrt_kl`` (the last such row on ties, i.e. the most
    optimised one); ``observed_*`` to the row with the largest gold; ``r2`` is the coefficient of
    determination on the points the fit used.
    """
    if kind not in ("bon", "ppo"):
        raise ValueError(f"kind must be 'bon' or 'ppo', got {kind!r}")
    if not rows:
        raise ValueError("summarize needs at least one row")
    d = np.array([r["sqrt_kl"] for r in rows], dtype=float)
    proxy = np.array([r["proxy"] for r in rows], dtype=float)
    gold = np.array([r["gold"] for r in rows], dtype=float)

    if kind == "bon":
        alpha, beta = fit_bon(d, gold)
        d_fit, g_fit = _as_xy(d, gold)
        pred = d_fit * (alpha - beta * d_fit)
        d_peak, gold_peak = bon_peak(alpha, beta)
    else:
        alpha, beta = fit_ppo(d, gold)
        d_fit, g_fit = _ppo_points(*_as_xy(d, gold))
        pred = d_fit * (alpha - beta * np.log(d_fit))
        d_peak, gold_peak = ppo_peak(alpha, beta)

    ss_res = float(np.sum((g_fit - pred) ** 2))
    ss_tot = float(np.sum((g_fit - g_fit.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan

    last = len(d) - 1 - int(np.argmax(d[::-1]))
    best = int(np.argmax(gold))
    return {
        "alpha": _json_float(alpha),
        "beta": _json_float(beta),
        "d_peak": _json_float(d_peak),
        "gold_peak": _json_float(gold_peak),
        "final_gap": _json_float(proxy[last] - gold[last]),
        "r2": _json_float(r2),
        "observed_gold_peak": _json_float(gold[best]),
        "observed_d_peak": _json_float(d[best]),
        "final_proxy": _json_float(proxy[last]),
        "final_gold": _json_float(gold[last]),
    }
