"""The issue-17 baselines: the information-matched RM (DMoERM's judge labels, aggregated) and the compute-matched
single RM (train overrides)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.archs.single import SingleRM
from harness.archs.single_judge import JudgeLabelRM, fit_point_weights, oriented
from harness.labelers.oracle import OracleLabeler


def judge_rm(**kw) -> JudgeLabelRM:
    knobs = {"labeler": OracleLabeler(), "aggregate": "fitted", "with_human_labels": True, "weight_l2": 0.01,
             "newton_steps": 25, "label_pairs_per_domain": None, "capabilities": None}
    return JudgeLabelRM(**{**knobs, **kw})


def test_fitted_point_weights_recover_a_known_rule():
    # Humans follow point 0 (weight 2) and ignore point 1: the fit puts its weight on point 0.
    rng = np.random.default_rng(0)
    labels = rng.choice([-1, 0, 1], size=(4000, 2))
    p_chosen = 1 / (1 + np.exp(-2.0 * labels[:, 0]))
    keep = rng.random(4000) < p_chosen  # rows the human preferred as given; the others are flipped
    rows = np.where(keep[:, None], labels, -labels)
    w = fit_point_weights(rows, l2=1e-4, newton_steps=30)
    assert w[0] == pytest.approx(2.0, abs=0.2) and abs(w[1]) < 0.15


def test_oriented_swaps_only_flagged_rows(tiny):
    pairs = tiny.train.subset(torch.arange(6))
    flip = torch.tensor([False, True, False, True, False, False])
    out = oriented(pairs, flip)
    c, r = pairs.chosen, pairs.rejected
    assert torch.equal(out.chosen.ids[1], r.ids[1]) and torch.equal(out.rejected.ids[1], c.ids[1])
    assert torch.equal(out.chosen.ids[0], c.ids[0]) and torch.equal(out.chosen.lengths[2], c.lengths[2])


def test_information_matched_rm_asks_dmoerms_questions_and_trains(tiny):
    rm = judge_rm()
    ctx = tiny.ctx()
    rm.fit(tiny.train, tiny.val, ctx)
    report = rm.fit_report()["judge_labels"]
    asked = sum(len(n) for n in tiny.data.splits["train"]["cap_names"])
    assert report["labeler"]["asked"] == asked and rm.cost() == {"judge_queries": 2 * asked}
    assert 0 < report["decided_by_judges"] <= 1 and set(report["point_weights"]) == set(tiny.data.domains)
    # Aggregated judge labels order pairs better than a coin (the judges read the named points of gold), and every
    # decided pair is trained on besides the human-labelled ones.
    assert report["judge_gold_agreement"] > 0.52
    assert report["training_pairs"] == len(tiny.train) + round(report["decided_by_judges"] * len(tiny.train))
    scores = rm.score(tiny.test.chosen)
    assert scores.shape == (len(tiny.test),) and torch.isfinite(scores).all()
    vote = judge_rm(aggregate="vote")
    decided, flip = vote.aggregate_labels(tiny.train, ctx)
    assert decided.dtype == flip.dtype == torch.bool and not (flip & ~decided).any()
    assert all(set(w) == {1.0} for w in vote.report["point_weights"].values())


def test_bad_aggregate_names_the_key():
    with pytest.raises(ValueError, match="arch.aggregate"):
        judge_rm(aggregate="median")


def test_compute_matched_single_trains_longer():
    with pytest.raises(ValueError, match="arch.train"):
        SingleRM(train={"epochz": 3})


def test_compute_matched_single_uses_its_budget(tiny):
    short, long = SingleRM(), SingleRM(train={"epochs": 3, "patience": 10})
    short.fit(tiny.train, tiny.val, ctx := tiny.ctx())
    long.fit(tiny.train, tiny.val, ctx)
    steps = [r["steps"] for r in ctx.logs if "steps" in r and r.get("phase") == "single"]
    assert steps[1] == 3 * steps[0]
