import itertools
import math

import numpy as np
import pytest

from harness.optimize.bon import (
    bon_coefficients,
    bon_curve,
    bon_expectation,
    kl_bon,
    reward_units,
    standardize,
)


def brute_force(proxy, gold, n):
    """Mean over prompts of the exact expectation over all n-subsets of (proxy, gold) of the top-proxy one."""
    out_p, out_g = [], []
    for p, g in zip(proxy, gold, strict=True):
        picks = [max(sub, key=lambda j: p[j]) for sub in itertools.combinations(range(len(p)), n)]
        out_p.append(np.mean([p[j] for j in picks]))
        out_g.append(np.mean([g[j] for j in picks]))
    return float(np.mean(out_p)), float(np.mean(out_g))


@pytest.mark.parametrize("n", range(1, 8))
def test_estimator_matches_enumeration_of_subsets(n):
    rng = np.random.default_rng(n)
    proxy = rng.normal(size=(3, 7))
    gold = 0.5 * proxy + rng.normal(size=(3, 7))
    got = bon_expectation(proxy, gold, n)
    want = brute_force(proxy, gold, n)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_n1_is_plain_mean_and_nN_is_top_proxy_sample():
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(4, 9))
    gold = rng.normal(size=(4, 9))
    p1, g1 = bon_expectation(proxy, gold, 1)
    assert p1 == pytest.approx(proxy.mean())
    assert g1 == pytest.approx(gold.mean())
    pN, gN = bon_expectation(proxy, gold, 9)
    top = proxy.argmax(axis=1)
    assert pN == pytest.approx(proxy.max(axis=1).mean())
    assert gN == pytest.approx(gold[np.arange(4), top].mean())


def test_pairs_are_sorted_jointly_not_gold_on_its_own():
    # Highest proxy has the lowest gold; sorting gold independently (Coste et al. ensemble bug)
    # would pair the top-proxy rank with gold 10.
    proxy = np.array([[3.0, 1.0, 2.0]])
    gold = np.array([[0.0, 10.0, 5.0]])
    for n, correct in [(3, 0.0), (2, 5.0 / 3.0)]:
        coef = bon_coefficients(3, n)
        buggy = float(np.sort(gold[0]) @ coef)
        _, g = bon_expectation(proxy, gold, n)
        assert g == pytest.approx(correct)
        assert not math.isclose(g, buggy)


def test_proxy_ties_broken_by_sample_index():
    # All proxies equal: the stable order ranks the last sample highest, so best-of-N picks it.
    proxy = np.zeros((1, 4))
    gold = np.array([[1.0, 2.0, 3.0, 4.0]])
    assert bon_expectation(proxy, gold, 4)[1] == 4.0


def test_coefficients_exact_for_moderate_N():
    N, n = 40, 13
    coef = bon_coefficients(N, n)
    exact = [0.0] * (n - 1) + [math.comb(i - 1, n - 1) / math.comb(N, n) for i in range(n, N + 1)]
    np.testing.assert_allclose(coef, exact, rtol=1e-10, atol=0)


def test_coefficients_large_N_in_log_space():
    coef = bon_coefficients(12600, 8192)
    assert coef.shape == (12600,)
    assert np.all(np.isfinite(coef))
    assert np.all(coef[:8191] == 0) and np.all(coef[8191:] >= 0)
    assert coef.sum() == pytest.approx(1.0, abs=1e-9)
    assert coef[-1] == pytest.approx(8192 / 12600, rel=1e-9)  # P(top sample in the subset) = n/N


def test_kl_bon_values():
    assert kl_bon(1) == 0.0
    assert round(kl_bon(1000), 2) == 5.91
    assert round(kl_bon(12500), 2) == 8.43
    arr = kl_bon(np.array([1, 1000]))
    assert isinstance(arr, np.ndarray) and arr.shape == (2,)
    with pytest.raises(ValueError):
        kl_bon(0)


def test_bon_curve_rows():
    rng = np.random.default_rng(1)
    proxy = rng.normal(size=(5, 16))
    gold = rng.normal(size=(5, 16))
    rows = bon_curve(proxy, gold, [1, 4, 16])
    assert [r["n"] for r in rows] == [1, 4, 16]
    for r in rows:
        assert r["kl"] == pytest.approx(kl_bon(r["n"]))
        assert r["sqrt_kl"] == pytest.approx(math.sqrt(r["kl"]))
        assert (r["proxy"], r["gold"]) == pytest.approx(bon_expectation(proxy, gold, r["n"]))
    assert rows[0]["proxy"] < rows[1]["proxy"] < rows[2]["proxy"]


@pytest.mark.parametrize("bad", [0, 17])
def test_bon_curve_rejects_n_out_of_range(bad):
    x = np.zeros((2, 16))
    with pytest.raises(ValueError, match=rf"n={bad}.*N=16"):
        bon_curve(x, x, [1, bad])


def test_shape_mismatch_and_nan_rejected():
    with pytest.raises(ValueError, match="shape"):
        bon_expectation(np.zeros((2, 3)), np.zeros((2, 4)), 1)
    with pytest.raises(ValueError, match="finite"):
        bon_expectation(np.array([[np.nan, 1.0]]), np.zeros((1, 2)), 2)


def test_reward_units_within_prompt_and_total():
    rng = np.random.default_rng(2)
    offsets = rng.normal(0.0, 5.0, size=(40, 1))  # large between-prompt offsets
    initial = 3.0 + offsets + rng.normal(0.0, 2.0, size=(40, 50))
    within = reward_units(initial)
    assert within["scale_kind"] == "within_prompt" and within["scale"] == within["sd_within"]
    deviations = initial - initial.mean(1, keepdims=True)
    assert within["sd_within"] == pytest.approx(np.sqrt((deviations**2).sum() / (40 * 49)))
    assert within["sd_within"] == pytest.approx(2.0, rel=0.05)  # offsets left out
    total = reward_units(initial, "total")
    assert total["scale"] == pytest.approx(initial.std()) and total["scale"] > 2 * within["scale"]
    assert within["within_share"] == pytest.approx((deviations**2).sum() / ((initial - initial.mean())**2).sum())
    z = standardize(initial, within)
    assert z.mean() == pytest.approx(0.0, abs=1e-12)
    assert np.sqrt(((z - z.mean(1, keepdims=True)) ** 2).sum() / (40 * 49)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="s.d."):
        reward_units(np.ones((3, 5)))
    with pytest.raises(ValueError, match="N >= 2"):
        reward_units(rng.normal(size=(5, 1)))
    with pytest.raises(ValueError, match="median"):
        reward_units(initial, "median")


def test_per_prompt_constants_leave_the_within_prompt_bon_curve_unchanged():
    """BT identifies a proxy only up to a constant per prompt: adding one must not move its BoN curve in
    within-prompt units (selection is unchanged, re-centring and the pooled within-prompt s.d. absorb it);
    in total-s.d. units it does move (the offsets inflate the scale)."""
    rng = np.random.default_rng(7)
    proxy = rng.normal(size=(30, 32))
    gold = 0.6 * proxy + rng.normal(size=(30, 32))
    shifted = proxy + rng.normal(0.0, 4.0, size=(30, 1))
    ns = [1, 2, 4, 8, 16, 32]

    def curve(p, scale):
        return bon_curve(standardize(p, reward_units(p, scale)), standardize(gold, reward_units(gold, scale)), ns)

    for a, b in zip(curve(proxy, "within_prompt"), curve(shifted, "within_prompt"), strict=True):
        # (proxy_se does move: it measures the spread of per-prompt values, the constants included.)
        assert (b["proxy"], b["gold"], b["gold_se"]) == pytest.approx((a["proxy"], a["gold"], a["gold_se"]),
                                                                      abs=1e-12)
    assert curve(shifted, "total")[-1]["proxy"] < 0.5 * curve(proxy, "total")[-1]["proxy"]


def test_bon_curve_standard_errors_over_prompts():
    rng = np.random.default_rng(4)
    proxy, gold = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    row = bon_curve(proxy, gold, [8])[0]
    top = gold[np.arange(6), proxy.argmax(1)]  # at n = N each prompt's estimate is its top-proxy sample's gold
    assert row["gold_se"] == pytest.approx(top.std(ddof=1) / np.sqrt(6))
    assert math.isnan(bon_curve(proxy[:1], gold[:1], [8])[0]["gold_se"])  # one prompt: no spread to measure
