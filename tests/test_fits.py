import json
import math

import numpy as np
import pytest

from harness.optimize.fits import (
    FORMS,
    area_to,
    bon_peak,
    fit_bon,
    fit_ppo,
    ppo_peak,
    r_squared,
    summarize,
    value_at,
)

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


def test_the_forms_plots_draw_are_the_forms_the_fits_fit():
    d = np.linspace(0.25, 6.0, 24)  # d > 0: both forms are defined
    for kind, form, fit, (a, b) in (("bon", bon_form, fit_bon, (0.8, 0.15)), ("ppo", ppo_form, fit_ppo, (1.2, 0.4))):
        curve, peak = FORMS[kind]
        np.testing.assert_allclose(curve(d, *fit(d, form(d, a, b))), form(d, a, b), rtol=0, atol=1e-10)
        d_star, r_star = peak(a, b)
        assert r_star == pytest.approx(float(form(np.array([d_star]), a, b)[0]))
        assert curve(d_star, a, b) >= max(curve(d_star * 0.9, a, b), curve(d_star * 1.1, a, b))


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
    # Without a common sqrt(KL) the final values are the curve's last point's.
    assert s["common_sqrt_kl"] == s["last_sqrt_kl"] == pytest.approx(4.0) and s["last_gap"] == s["final_gap"]
    assert s["peak_extrapolated"] is False  # d* = 2 lies inside the observed 0..4
    assert s["observed_gold_peak_se"] is None  # rows without gold_se
    assert all(type(v) is float for k, v in s.items() if k not in ("peak_extrapolated", "observed_gold_peak_se"))
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


def test_matched_interpolation_is_exact_on_a_linear_curve_and_empty_beyond_it():
    # Uneven steps, as PPO eval points are: a straight line must be read back exactly anywhere in range.
    d = np.array([0.0, 0.3, 1.1, 1.7, 3.2, 4.0])
    gold, proxy = 0.4 * d - 0.1, 1.5 * d
    for x in (0.0, 0.3, 0.7, 1.5, 2.0, 3.9, 4.0):
        assert value_at(d, gold, x) == pytest.approx(0.4 * x - 0.1, abs=1e-12)
    assert math.isnan(value_at(d, gold, 4.01))
    # Area under a line from 0: its trapezoids are exact.
    assert area_to(d, gold, 2.5) == pytest.approx(0.2 * 2.5**2 - 0.1 * 2.5, abs=1e-12)
    assert math.isnan(area_to(d, gold, 5.0))
    rows = [{"sqrt_kl": x, "proxy": p, "gold": g} for x, p, g in zip(d, proxy, gold, strict=True)]
    s = summarize("bon", rows, sqrt_kl_grid=[1.0, 2.5, 6.0], common_sqrt_kl=2.5)
    assert s["gold@sqrt_kl=1"] == pytest.approx(0.3) and s["proxy@sqrt_kl=2.5"] == pytest.approx(3.75)
    assert s["gold@sqrt_kl=6"] is None and s["proxy@sqrt_kl=6"] is None  # never reached: empty, not extrapolated
    assert s["final_gold"] == pytest.approx(0.9) and s["final_gap"] == pytest.approx(3.75 - 0.9)
    assert s["last_gap"] == pytest.approx(6.0 - 1.5)
    unreached = summarize("bon", rows, common_sqrt_kl=4.5)
    assert unreached["final_gap"] is None and unreached["gold_auc"] is None


def test_matched_values_follow_the_run_to_its_first_crossing():
    # A PPO run whose KL dips back: the value at 2 is read where the run first got there, not after the dip.
    d = np.array([0.0, 1.0, 3.0, 1.5, 4.0])
    y = np.array([0.0, 1.0, 3.0, -5.0, 4.0])
    assert value_at(d, y, 2.0) == pytest.approx(2.0)
    assert area_to(d, y, 2.0) == pytest.approx(2.0)  # the line y = d from 0 to 2


def test_r2_is_one_on_exact_data_and_lower_with_noise():
    d = np.linspace(0.1, 5.0, 20)
    exact = bon_form(d, 0.9, 0.2)
    assert r_squared(exact, exact) == 1.0
    assert r_squared(exact, exact + 0.1) < 1.0
    assert math.isnan(r_squared(np.ones(4), np.ones(4)))  # a flat curve has nothing to explain
    rows = [{"sqrt_kl": x, "proxy": x, "gold": g} for x, g in zip(d, exact, strict=True)]
    assert summarize("bon", rows)["r2"] == pytest.approx(1.0, abs=1e-12)


def test_peak_beyond_the_observed_range_is_flagged_and_observed_peak_has_its_se():
    d = np.linspace(0.0, 2.0, 9)  # d* = 4 lies beyond the data
    rows = [{"sqrt_kl": x, "proxy": x, "gold": bon_form(x, 1.0, 0.125), "gold_se": 0.01 * (i + 1)}
            for i, x in enumerate(d)]
    s = summarize("bon", rows)
    assert s["d_peak"] == pytest.approx(4.0) and s["peak_extrapolated"] is True
    assert s["observed_d_peak"] == pytest.approx(2.0) and s["observed_gold_peak_se"] == pytest.approx(0.09)
    no_peak = summarize("bon", [{"sqrt_kl": x, "proxy": x, "gold": 0.5 * x + 0.01 * x * x} for x in D])
    assert no_peak["d_peak"] is None and no_peak["peak_extrapolated"] is True
