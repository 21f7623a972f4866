"""The rank correlation of archs between two sweeps (harness/transfer.py): its estimate, interval and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from harness.transfer import rank_transfer


def _sweep(means: dict[str, float], sd: float, seeds: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {a: m + sd * rng.standard_normal(seeds) for a, m in means.items()}


MEANS = {"single": 0.0, "ens_mean": 1.0, "ens_wco": 2.0, "umm": 3.0, "dmoerm": 4.0, "warm": 5.0, "armo": 6.0}


def test_same_ranking_is_one_reversed_is_minus_one_and_noise_widens_the_interval():
    a = _sweep(MEANS, sd=0.01)
    same = rank_transfer(a, _sweep({k: 10 * v for k, v in MEANS.items()}, sd=0.01, seed=1), n_resamples=200)
    assert same["rho"] == pytest.approx(1.0) and same["ci_low"] == pytest.approx(1.0)
    reversed_ = rank_transfer(a, _sweep({k: -v for k, v in MEANS.items()}, sd=0.01, seed=1), n_resamples=200)
    assert reversed_["rho"] == pytest.approx(-1.0)
    noisy = rank_transfer(a, _sweep(MEANS, sd=3.0, seed=2), n_resamples=200)
    assert noisy["ci_low"] < noisy["rho"] <= noisy["ci_high"] and noisy["ci_high"] - noisy["ci_low"] > 0.3
    assert noisy == rank_transfer(a, _sweep(MEANS, sd=3.0, seed=2), n_resamples=200)  # seeded bootstrap


def test_only_common_archs_count_and_too_few_or_tied_give_none():
    a = _sweep(MEANS, sd=0.1)
    b = _sweep({"single": 0.0, "umm": 1.0, "armo": 2.0, "rodos": 9.0}, sd=0.1)
    out = rank_transfer(a, b, n_resamples=50)
    assert out["archs"] == ["armo", "single", "umm"] and out["seeds_b"]["umm"] == 5 and out["rho"] == pytest.approx(1)
    assert rank_transfer(a, {"single": np.ones(3), "umm": np.ones(3)})["rho"] is None
    tied = {a_: np.zeros(3) for a_ in MEANS}
    assert rank_transfer(a, tied)["rho"] is None
