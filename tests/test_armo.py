"""ArmoRM (harness/archs/armo.py): the probe is the L2-penalised Bradley-Terry optimum, the gates are a distribution
over the objectives, the reward is β times the gate-weighted sum of the objectives' scores, stage 0 is the job's
single RM, and the labels are the ones DMoERM and single_judge get."""

import numpy as np
import pytest
import torch
from conftest import compose

from harness.archs.armo import GatingNetwork, fit_probe, probe_loss
from harness.archs.single import SingleRM
from harness.job import build


def test_the_probe_is_the_penalised_bradley_terry_optimum():
    rng = np.random.default_rng(0)
    truth = np.array([2.0, -1.0, 0.0])
    X = rng.normal(size=(3000, 3))
    # Each row oriented so that its preferred side comes first, drawn from the BT model with weights `truth`.
    won = rng.random(3000) < 1 / (1 + np.exp(-(X @ truth)))
    diffs = np.where(won[:, None], X, -X)
    w = fit_probe(diffs, l2=1e-4, max_steps=50)
    assert np.allclose(w, truth, atol=0.15)
    # First-order optimality of Σ softplus(-x·w) + l2/2 |w|^2 at a strong penalty: the gradient vanishes.
    l2 = 50.0
    w = fit_probe(diffs, l2=l2, max_steps=50)
    p = 1 / (1 + np.exp(-(diffs @ w)))
    assert np.abs(-diffs.T @ (1 - p) + l2 * w).max() < 1e-6
    assert probe_loss(diffs, w) < np.log(2)  # better than no probe at all
    # Separable data stay finite under any penalty of the grid.
    separable = np.abs(X)
    assert np.isfinite(fit_probe(separable, l2=1e-4, max_steps=50)).all()


def test_gates_are_a_distribution_and_uniform_at_zero_logits():
    torch.manual_seed(0)
    gating = GatingNetwork(8, 5, hidden=4, n_hidden=3, dropout=0.2, temperature=10.0, logit_scale=1.0).eval()
    gates = gating(torch.randn(16, 8))
    assert gates.shape == (16, 5) and (gates >= 0).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(16))
    with torch.no_grad():
        gating.out.weight.zero_()
        gating.out.bias.zero_()
    assert torch.equal(gating(torch.randn(4, 8)), torch.full((4, 5), 0.2))


@pytest.fixture(scope="module")
def armo(tiny):
    rm = build(compose(["arch=armo", "arch.gating_train.epochs=3"]).arch, "arch")
    rm.fit(tiny.train, tiny.val, tiny.ctx())
    return rm


def test_the_reward_is_the_gated_sum_of_the_objectives(armo, tiny):
    info = armo.explain(tiny.test.chosen)
    gates, attributes = info["gates"], info["attributes"]
    J = len(info["objectives"])
    assert J == sum(len(p) for p in armo.points) and gates.shape == attributes.shape == (len(tiny.test), J)
    assert (gates >= 0).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(len(tiny.test)))
    expected = armo.gating.logit_scale.detach() * (gates * attributes).sum(-1)
    torch.testing.assert_close(armo.score(tiny.test.chosen), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(info["reward"], expected, rtol=0, atol=1e-5)
    # Column j is objective j's probe alone (its capability view), on the frozen features.
    views = armo.views()
    for j in (0, J - 1):
        domain, point = armo.objectives[j]
        view = views[f"capability/{domain}/{point}"]
        assert view.capability == (domain, point)
        torch.testing.assert_close(armo.score(tiny.test.chosen, scorer=view.score), attributes[:, j],
                                   rtol=0, atol=1e-5)
    # The gates depend on the prompt only: the chosen and rejected response of a pair get the same ones.
    torch.testing.assert_close(armo.explain(tiny.test.rejected)["gates"], gates, rtol=0, atol=1e-6)


def test_stage_zero_is_the_jobs_single_rm_and_is_frozen(armo, tiny):
    single = SingleRM()
    single.fit(tiny.train, tiny.val, tiny.ctx())
    for name, p in single.model.named_parameters():
        assert torch.equal(armo.model.get_parameter(name), p), name
    view = armo.views()["backbone_rm"]
    assert torch.equal(armo.score(tiny.test.chosen, scorer=view.score), single.score(tiny.test.chosen))
    assert not any(p.requires_grad for p in armo.model.parameters())
    assert not armo.regression.weight.requires_grad


def test_it_asks_the_judges_what_dmoerm_and_single_judge_ask(armo, tiny):
    judge = build(compose(["arch=single_judge"]).arch, "arch")
    judge.fit(tiny.train, tiny.val, tiny.ctx())
    report = armo.fit_report()
    asked = sum(len(n) for n in tiny.data.splits["train"]["cap_names"])
    assert report["labeler"] == judge.fit_report()["judge_labels"]["labeler"]  # same questions, same answers
    assert report["labeler"]["asked"] == asked and armo.cost() == {"judge_queries": 2 * asked}
    probes = report["probes"]
    assert set(probes) == set(tiny.data.domains)
    for domain, points in zip(armo.domains, armo.points, strict=True):
        assert list(probes[domain]) == points
        for entry in probes[domain].values():
            assert entry["fitted"] and entry["l2"] in armo.l2_grid and 0 <= entry["val_acc"] <= 1
    # The routing summary: per validation domain a distribution over the objectives.
    assert set(report["gates"]) == set(tiny.data.domains)
    for entry in report["gates"].values():
        assert sum(entry["mean"].values()) == pytest.approx(1.0, abs=1e-3) and 0 <= entry["own_domain_mass"] <= 1


def test_param_counts_leave_out_the_unused_head(armo):
    counts = armo.param_counts()
    head = armo.model.score.weight.numel()
    assert counts["total"] == sum(p.numel() for p in armo.parameters())
    assert counts["active"] == counts["total"] - head == counts["active_per_token"]
    assert counts["trainable"] == counts["total"]  # stage 0, the probes (closed form) and the gating all fitted


def test_bad_knobs_fail_clearly():
    with pytest.raises(ValueError, match="l2_grid"):
        build(compose(["arch=armo", "arch.l2_grid=[0.0]"]).arch, "arch")
    with pytest.raises(ValueError, match="gating_train: unknown keys"):
        build(compose(["arch=armo", "+arch.gating_train.steps=3"]).arch, "arch")
    with pytest.raises(ValueError, match="probe_val_fraction"):
        build(compose(["arch=armo", "arch.probe_val_fraction=1.0"]).arch, "arch")
