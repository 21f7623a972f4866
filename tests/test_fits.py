import json
import math

import numpy as np
import pytest

from harness.optimize.fits import bon_peak, fit_bon, fit_ppo, ppo_peak, summarize

D = np.linspace(0.0, 4.0, 17)


def bon_form(d, a, b):
    return d * (a - b * d)


def ppo_form(d, a, b):
    d = np.asarray(d, dtype=float)
    out = np.zeros_like(d)
    pos = d > 0
    out[pos] = d[pos] * (a - b * np.log(d[pos]))
    return out


def test_fit_bon_recovers_noiseless_and_noisy():
    assert fit_bon(D, bon_form(D, 0.8, 0.15)) == pytest.approx((0.8, 0.15), abs=1e-10)
    noisy = bon_form(D, 0.8, 0.15) + np.random.default_rng(0).normal(0, 0.01, D.size)
    assert fit_bon(D, noisy) == pytest.approx((0.8, 0.15), abs=0.02)


def test_fit_ppo_recovers_noiseless_and_noisy_and_drops_nonpositive_d():
    d = np.concatenate([[0.0], np.linspace(0.5, 20.0, 30)])
    R = ppo_form(d, 1.2, 0.4)
    assert fit_ppo(d, R) == pytest.approx((1.2, 0.4), abs=1e-10)
    R_bad0 = R.copy()
    R_bad0[0] = 100.0  # would wreck the fit if the d=0 point were used
    assert fit_ppo(d, R_bad0) == pytest.approx((1.2, 0.4), abs=1e-10)
    noisy = R + np.random.default_rng(1).normal(0, 0.01, d.size)
    assert fit_ppo(d, noisy) == pytest.approx((1.2, 0.4), abs=0.02)


def test_fits_reject_too_few_points():
    with pytest.raises(ValueError, match="2"):
        fit_ppo([0.0, -1.0, 2.0], [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="2"):
        fit_bon([0.0, 1.0, 1.0], [0.0, 1.0, 1.0])


def test_peaks_match_formulas():
    assert bon_peak(1.0, 0.25) == pytest.approx((2.0, 1.0))
    d, r = bon_peak(0.8, 0.15)
    assert d == pytest.approx(0.8 / 0.3) and r == pytest.approx(bon_form(d, 0.8, 0.15))
    d, r = ppo_peak(1.2, 0.4)
    assert d == pytest.approx(math.exp(1.2 / 0.4 - 1)) and r == pytest.approx(0.4 * d)
    assert r == pytest.approx(ppo_form([d], 1.2, 0.4)[0])
    # the fitted curve is indeed maximal there
    grid = np.linspace(0.01, 30, 5000)
    assert ppo_form(grid, 1.2, 0.4).max() <= r + 1e-9


def test_peaks_without_interior_maximum():
    assert bon_peak(1.0, -0.1) == (math.inf, math.inf)
    assert bon_peak(1.0, 0.0) == (math.inf, math.inf)
    assert ppo_peak(1.0, -0.1) == (math.inf, math.inf)
    assert ppo_peak(1.0, 0.0) == (math.inf, math.inf)
    assert bon_peak(-1.0, 0.5) == (0.0, 0.0)  # gold only falls: best is not to optimise


def test_summarize_bon_known_peak():
    rows = [{"sqrt_kl": d, "proxy": 1.0 * d, "gold": bon_form(d, 1.0, 0.25)} for d in D]
    s = summarize("bon", rows)
    assert s["alpha"] == pytest.approx(1.0) and s["beta"] == pytest.approx(0.25)
    assert s["d_peak"] == pytest.approx(2.0) and s["gold_peak"] == pytest.approx(1.0)
    assert s["r2"] == pytest.approx(1.0)
    assert s["observed_gold_peak"] == pytest.approx(1.0) and s["observed_d_peak"] == pytest.approx(2.0)
    assert s["final_proxy"] == pytest.approx(4.0) and s["final_gold"] == pytest.approx(0.0)
    assert s["final_gap"] == pytest.approx(4.0)
    assert all(type(v) is float for v in s.values())
    json.dumps(s, allow_nan=False)


def test_summarize_ppo_known_peak_and_r2_below_one_with_noise():
    d = np.concatenate([[0.0], np.linspace(0.25, 8.0, 32)])
    gold = ppo_form(d, 1.0, 0.5)
    rows = [{"sqrt_kl": x, "proxy": x, "gold": g} for x, g in zip(d, gold, strict=True)]
    s = summarize("ppo", rows)
    assert s["d_peak"] == pytest.approx(math.e) and s["gold_peak"] == pytest.approx(0.5 * math.e)
    assert s["r2"] == pytest.approx(1.0)
    noise = np.random.default_rng(3).normal(0, 0.05, len(rows))
    noisy = [dict(r, gold=r["gold"] + e) for r, e in zip(rows, noise, strict=True)]
    s2 = summarize("ppo", noisy)
    assert 0.5 < s2["r2"] < 1.0


def test_summarize_turns_inf_into_none():
    rows = [{"sqrt_kl": d, "proxy": d, "gold": 0.5 * d + 0.01 * d * d} for d in D]  # beta < 0
    s = summarize("bon", rows)
    assert s["d_peak"] is None and s["gold_peak"] is None
    assert s["beta"] < 0
    json.dumps(s, allow_nan=False)


def test_summarize_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        summarize("dpo", [{"sqrt_kl": 1.0, "proxy": 0.0, "gold": 0.0}])
