"""The one evaluation rule (ties of the model wrong, ties of the reference left out) and the job's evaluation of an
architecture's views, routing and capability experts, on hand values and a hand-made reward model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from harness.accuracy import pair_correct, preference_accuracy
from harness.archs.base import RewardModel, RewardOutput, View
from harness.evaluate import evaluate_architecture, evaluate_views, routing_accuracy


def test_model_ties_count_wrong():
    correct, decided = pair_correct(np.array([1.0, 1.0, 0.0]), np.array([0.0, 1.0, 1.0]))
    assert correct.tolist() == [True, False, False] and decided.all()


def test_reference_ties_are_left_out_and_its_order_is_the_answer():
    r_c, r_r = np.array([2.0, 0.0, 1.0, 1.0]), np.array([1.0, 3.0, 1.0, 0.0])
    g_c, g_r = np.array([5.0, 1.0, 2.0, 0.0]), np.array([4.0, 2.0, 1.0, 0.0])  # last pair: a gold tie
    correct, decided = pair_correct(r_c, r_r, g_c, g_r)
    # pair 1: gold prefers rejected and so does the model: right; pair 2: a model tie is wrong either way
    assert correct.tolist()[:3] == [True, True, False] and decided.tolist() == [True, True, True, False]


def test_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    r_c, r_r, g_c, g_r = (rng.integers(0, 3, 50).astype(float) for _ in range(4))  # many ties on both sides
    np_correct, np_decided = pair_correct(r_c, r_r, g_c, g_r)
    t_correct, t_decided = pair_correct(*(torch.tensor(x) for x in (r_c, r_r, g_c, g_r)))
    assert np_correct.tolist() == t_correct.tolist() and np_decided.tolist() == t_decided.tolist()


def test_preference_accuracy_per_domain_and_agreement():
    acc = preference_accuracy([1.0, 0.0, 2.0, 1.0], [0.0, 1.0, 1.0, 1.0], ["a", "a", "b", ""],
                              [1.0, 1.0, 0.0, 3.0], [0.0, 1.0, 1.0, 2.0])
    assert acc["human"] == {"overall": 0.5, "per_domain": {"a": 0.5, "b": 1.0}, "n": 4}
    # the gold tie (pair 1) is left out: 3 pairs, the model right on pair 0 only
    assert acc["gold"]["n"] == 3 and acc["gold"]["overall"] == pytest.approx(1 / 3)
    assert acc["gold"]["per_domain"] == {"a": 1.0, "b": 0.0}
    assert acc["human_gold_agreement"] == pytest.approx(2 / 3)  # chosen is gold-better on pairs 0 and 3


class LengthRM(RewardModel):
    """Reward = number of real tokens (times ``sign``); views: its negative, and an oracle that reads the domain;
    a 'router' that sends every prompt to domain 0; one capability expert of domain 'd1'."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return RewardOutput(reward=self.w * batch.attention_mask.sum(1).float())

    def views(self):
        return {
            "negative": View(lambda b: -self(b).reward, params={"total": 1, "trainable": 1, "active": 1}),
            "domain": View(lambda b: b.domain.float(), needs_domain=True),
            "capability/d1/p1": View(lambda b: self(b).reward, capability=("d1", "p1")),
        }

    def routing(self):
        return lambda b: torch.zeros(len(b), dtype=torch.long)


@pytest.fixture(scope="module")
def split(tiny):
    """The tiny test split with made-up domains d0/d1 and one capability point p1 whose truth is the length."""
    test = tiny.test.subset(torch.arange(40))
    n = len(test)
    test.chosen.domain = test.rejected.domain = torch.arange(n) % 2
    len_c, len_r = test.chosen.lengths.tolist(), test.rejected.lengths.tolist()
    ds = Dataset.from_dict({
        "domain": [f"d{i % 2}" for i in range(n)],
        "gold_chosen": [float(i % 3) for i in range(n)], "gold_rejected": [1.0] * n,
        "cap_names": [["p0", "p1"]] * n,
        "cap_chosen": [[0.0, float(c)] for c in len_c], "cap_rejected": [[0.0, float(r)] for r in len_r],
    })
    return test, ds


def test_views_are_evaluated_with_the_rule(split):
    test, ds = split
    rm = LengthRM()
    out = evaluate_views(rm, test, ds, batch_size=7)
    r_c, r_r = test.chosen.lengths.double(), test.rejected.lengths.double()
    own = preference_accuracy(r_c.numpy(), r_r.numpy(), ds["domain"], ds["gold_chosen"], ds["gold_rejected"])
    negative = out["views"]["negative"]
    assert negative["params"]["total"] == 1 and negative["timing_s"]["score_per_1k"] > 0
    # the negated reward is right exactly where the reward is wrong, except on ties (wrong both ways)
    ties = int((r_c == r_r).sum())
    assert negative["accuracy"]["human"]["overall"] == pytest.approx(
        1 - own["human"]["overall"] - ties / len(test))
    # rewards equal on every pair (the domain index): every pair wrong
    assert out["views"]["domain"]["accuracy"]["human"]["overall"] == 0.0
    # the capability expert on d1's pairs only, against the point's truth (= its own reward): right unless tied
    d1 = (test.chosen.domain == 1)
    decided = (r_c != r_r) & d1
    assert out["explain"]["capability_scores"] == {"d1": {"p1": 1.0}} and int(decided.sum()) > 0
    assert "true order" in out["explain"]["capability_scores_basis"]


def test_capability_without_truth_falls_back_to_the_human_label(split):
    test, ds = split
    out = evaluate_views(LengthRM(), test, ds.remove_columns(["cap_chosen"]), batch_size=16)
    rows = (test.chosen.domain == 1).nonzero(as_tuple=True)[0]
    human = (test.chosen.lengths[rows] > test.rejected.lengths[rows]).float().mean().item()
    assert out["explain"]["capability_scores"]["d1"]["p1"] == pytest.approx(human)
    assert "human label" in out["explain"]["capability_scores_basis"]


def test_oracle_views_skip_unlabelled_pairs_and_routing_is_scored(split):
    test, ds = split
    unlabelled = test.subset(torch.arange(len(test)))
    unlabelled.chosen.domain = unlabelled.rejected.domain = torch.full((len(test),), -1)
    assert "domain" not in evaluate_views(LengthRM(), unlabelled, ds, 16).get("views", {})
    routing = routing_accuracy(LengthRM(), test.chosen, ["d0", "d1"], 16)
    assert routing == {"overall": 0.5, "per_domain": {"d0": 1.0, "d1": 0.0}, "n": len(test)}
    assert routing_accuracy(LengthRM(), unlabelled.chosen, ["d0", "d1"], 16) is None


def test_plain_rm_gets_no_extra_blocks(tiny, split):
    test, ds = split

    class Plain(RewardModel):
        def forward(self, batch):
            return RewardOutput(reward=batch.attention_mask.sum(1).float())

    assert evaluate_architecture(Plain(), tiny.val, test, ds, ["d0", "d1"], 16) == {}
