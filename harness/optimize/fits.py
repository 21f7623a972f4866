"""Gao et al. (2022) functional forms of gold score against distance ``d = sqrt(KL)``.

- BoN: ``R(d) = d (alpha - beta d)``
- RL (PPO): ``R(d) = d (alpha - beta log d)``

Both are linear in (alpha, beta), so ordinary least squares fits them exactly; ``R(0) = 0`` by
definition, hence no intercept. See shared/reference/methods.md §1.6.
"""

from __future__ import annotations

import math

import numpy as np


def bon_curve(d, alpha, beta):
    """The BoN form ``R(d) = d (alpha - beta d)`` at ``d`` (a number or an array)."""
    return d * (alpha - beta * d)


def ppo_curve(d, alpha, beta):
    """The RL form ``R(d) = d (alpha - beta log d)`` at ``d > 0`` (a number or an array)."""
    return d * (alpha - beta * np.log(d))


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


# kind -> (the curve R(d; alpha, beta), its peak (d*, R*)): what a fit of that kind draws (harness.plots).
FORMS = {"bon": (bon_curve, bon_peak), "ppo": (ppo_curve, ppo_peak)}


def _json_float(x: float) -> float | None:
    # metrics.json must be strict JSON, which has no inf/NaN; None (null) marks "no finite value"
    # (e.g. an unbounded peak, or r2 of a flat curve).
    x = float(x)
    return x if math.isfinite(x) else None


def r_squared(observed, predicted) -> float:
    """Coefficient of determination ``1 − SS_res / SS_tot``; NaN when the observations are all equal."""
    y, f = np.asarray(observed, dtype=float), np.asarray(predicted, dtype=float)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - f) ** 2)) / ss_tot if ss_tot > 0 else math.nan


# ----------------------------------------------------------------------------- matched-KL comparisons
# Two runs are only comparable at the same distance from the initial policy: PPO runs against different
# RMs reach different KLs in the same number of steps, so a value "at the last point" compares different
# distances. These read a curve at given sqrt(KL) values instead, in the order the run visited them.


def value_at(d, y, x: float) -> float:
    """``y`` of the curve (``d`` = sqrt(KL) in run order) at distance ``x``: linear interpolation between the
    first point with ``d >= x`` and the point before it; NaN when the run never reached ``x``."""
    d, y = np.asarray(d, dtype=float), np.asarray(y, dtype=float)
    reached = np.flatnonzero(d >= x)
    if reached.size == 0:
        return math.nan
    i = int(reached[0])
    if i == 0 or d[i] == d[i - 1]:
        return float(y[i])
    w = (x - d[i - 1]) / (d[i] - d[i - 1])
    return float(y[i - 1] + w * (y[i] - y[i - 1]))


def area_to(d, y, x: float) -> float:
    """Area under the curve from d = 0 to its first crossing of ``x`` (trapezoids along the run's order; a curve
    that does not start at d = 0 starts from (0, 0), Gao et al.'s R(0) := 0); NaN when ``x`` was never reached."""
    d, y = np.asarray(d, dtype=float), np.asarray(y, dtype=float)
    end = value_at(d, y, x)
    if not math.isfinite(end):
        return math.nan
    i = int(np.flatnonzero(d >= x)[0])
    xs, ys = list(d[:i]), list(y[:i])
    if not xs or xs[0] > 0:
        xs, ys = [0.0, *xs], [0.0, *ys]
    xs, ys = np.array([*xs, x]), np.array([*ys, end])
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2))


def sqrt_kl_key(x: float) -> str:
    """How a grid distance is spelled in metrics.json keys: ``gold@sqrt_kl=1.5`` (summary column
    ``ppo.gold@sqrt_kl=1.5``)."""
    return f"{float(x):g}"


def summarize(kind: str, rows: list[dict], sqrt_kl_grid=(), common_sqrt_kl: float | None = None) -> dict:
    """Fit the gold curve of ``rows`` (keys ``sqrt_kl``, ``proxy``, ``gold``, optionally ``gold_se``; in run
    order) and summarise it. ``kind`` is ``"bon"`` or ``"ppo"`` and picks the functional form.

    Matched comparisons (the same for every architecture of a sweep, since they come from the study config):

    - ``gold@sqrt_kl=x`` / ``proxy@sqrt_kl=x`` for each ``x`` of ``sqrt_kl_grid``, interpolated (``value_at``);
      null where the run did not reach ``x``;
    - ``common_sqrt_kl``: the distance ``final_*`` are read at -- ``final_gold``, ``final_proxy`` and
      ``final_gap`` (proxy − gold) -- and ``gold_auc`` is integrated to (``area_to``); all null when the run did
      not reach it. None means the curve's own largest sqrt(KL): common to all archs for best-of-n, whose KL
      depends on n only, but not for PPO. ``last_*`` are the values at the curve's largest sqrt(KL) (the last
      such row on ties), not comparable across PPO runs.

    The fit: ``alpha``, ``beta``, its peak ``d_peak`` / ``gold_peak``, ``r2`` (coefficient of determination on
    the points the fit used) and ``peak_extrapolated`` (true when the fitted peak lies beyond the largest
    observed sqrt(KL), or does not exist: a number read off the formula, not the data). Beside it the observed
    peak: ``observed_gold_peak`` (the largest measured gold; the maximum of noisy points, so biased upwards),
    ``observed_d_peak`` and ``observed_gold_peak_se`` (that point's standard error, when rows carry one).
    Values that are not finite are given as None.
    """
    if kind not in ("bon", "ppo"):
        raise ValueError(f"kind must be 'bon' or 'ppo', got {kind!r}")
    if not rows:
        raise ValueError("summarize needs at least one row")
    d = np.array([r["sqrt_kl"] for r in rows], dtype=float)
    proxy = np.array([r["proxy"] for r in rows], dtype=float)
    gold = np.array([r["gold"] for r in rows], dtype=float)
    gold_se = np.array([r.get("gold_se", math.nan) for r in rows], dtype=float)

    if kind == "bon":
        alpha, beta = fit_bon(d, gold)
        d_fit, g_fit = _as_xy(d, gold)
        pred = bon_curve(d_fit, alpha, beta)
        d_peak, gold_peak = bon_peak(alpha, beta)
    else:
        alpha, beta = fit_ppo(d, gold)
        d_fit, g_fit = _ppo_points(*_as_xy(d, gold))
        pred = ppo_curve(d_fit, alpha, beta)
        d_peak, gold_peak = ppo_peak(alpha, beta)

    last = len(d) - 1 - int(np.argmax(d[::-1]))
    best = int(np.argmax(gold))
    common = float(d[last]) if common_sqrt_kl is None else float(common_sqrt_kl)
    final_gold, final_proxy = value_at(d, gold, common), value_at(d, proxy, common)
    out = {
        "alpha": _json_float(alpha),
        "beta": _json_float(beta),
        "d_peak": _json_float(d_peak),
        "gold_peak": _json_float(gold_peak),
        "r2": _json_float(r_squared(g_fit, pred)),
        "peak_extrapolated": bool(not math.isfinite(d_peak) or d_peak > float(d.max())),
        "observed_gold_peak": _json_float(gold[best]),
        "observed_gold_peak_se": _json_float(gold_se[best]),
        "observed_d_peak": _json_float(d[best]),
        "common_sqrt_kl": _json_float(common),
        "final_gold": _json_float(final_gold),
        "final_proxy": _json_float(final_proxy),
        "final_gap": _json_float(final_proxy - final_gold),
        "gold_auc": _json_float(area_to(d, gold, common)),
        "last_sqrt_kl": _json_float(d[last]),
        "last_gold": _json_float(gold[last]),
        "last_proxy": _json_float(proxy[last]),
        "last_gap": _json_float(proxy[last] - gold[last]),
    }
    for x in sqrt_kl_grid:
        out[f"gold@sqrt_kl={sqrt_kl_key(x)}"] = _json_float(value_at(d, gold, x))
        out[f"proxy@sqrt_kl={sqrt_kl_key(x)}"] = _json_float(value_at(d, proxy, x))
    return out
