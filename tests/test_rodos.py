import pytest
import torch

from harness.archs.rodos import RODOS
from harness.archs.train import bradley_terry_loss
from harness.evaluate import evaluate_architecture, routing_accuracy


def without_domains(pairs):
    """A copy of ``pairs`` with every domain label removed (-1), as a domain-less data source gives."""
    out = pairs.subset(torch.arange(len(pairs)))
    for side in (out.chosen, out.rejected):
        side.domain = torch.full_like(side.domain, -1)
    return out


def forced_router(rm, route, n):
    """Replace the router's decision by fixed logits whose argmax is ``route`` (probability 0.7)."""
    probs = torch.full((len(route), n), 0.3 / (n - 1))
    probs[torch.arange(len(route)), route] = 0.7
    rm.router_logits = lambda batch: probs.log()


@pytest.fixture(scope="module")
def fitted(tiny):
    rm = RODOS()
    rm.fit(tiny.train, tiny.val, tiny.ctx())
    return rm


def test_routes_each_row_to_its_domain_rm_once_per_batch(tiny):
    n = len(tiny.data.domains)
    rm = RODOS().build(tiny.ctx(), 0).eval()
    batch = tiny.test.chosen.batch(torch.arange(12))
    route = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 2, 2]) % n
    calls = [0] * n
    for d, expert in enumerate(rm.experts):
        expert.register_forward_hook(lambda *_, d=d: calls.__setitem__(d, calls[d] + 1))
    with torch.no_grad():
        # every domain RM on the whole batch: the reference each routed row must match
        every = torch.stack([rm.experts[d](input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                           use_cache=False).logits.squeeze(-1) for d in range(n)])  # (n, B)
        calls = [0] * n
        forced_router(rm, route, n)
        out = rm(batch)
    assert calls == [int((route == d).any()) for d in range(n)], "each routed RM runs once, the others never"
    expected = every[route, torch.arange(len(route))]
    assert torch.allclose(out.reward, expected, atol=1e-5)
    # the domain RMs really differ, so the check above could fail on a wrong route
    assert not torch.allclose(every[0], every[1], atol=1e-3)
    assert torch.equal(out.info["domain"], route)
    assert torch.allclose(out.info["domain_prob"], torch.full((12,), 0.7))


def test_fit_scores_explains_and_reports_router_accuracy(tiny, fitted):
    scores = fitted.score(tiny.test.chosen)
    assert scores.shape == (len(tiny.test),) and torch.isfinite(scores).all()
    info = fitted.explain(tiny.test.chosen)
    assert info["domain"].shape == (len(tiny.test),) and info["domain"].max() < len(tiny.data.domains)
    assert ((info["domain_prob"] > 0) & (info["domain_prob"] <= 1)).all()
    router = routing_accuracy(fitted, tiny.val.chosen, tiny.data.domains, 64)
    # prompts of a domain are routed by the router's argmax: accuracy from explain() must agree
    routed = fitted.explain(tiny.val.chosen)["domain"]
    assert router["overall"] == pytest.approx((routed == tiny.val.chosen.domain).float().mean().item())
    assert router["n"] == len(tiny.val) and set(router["per_domain"]) <= set(tiny.data.domains)


def test_every_domain_rm_is_trained_on_its_own_domain(tiny, fitted):
    fresh = RODOS().build(tiny.ctx(), 0)
    for d in range(len(tiny.data.domains)):
        before = dict(fresh.experts[d].named_parameters())
        assert any(not torch.equal(before[k], p) for k, p in fitted.experts[d].named_parameters())


def test_param_counts_match_the_real_modules(tiny, fitted):
    router = sum(p.numel() for p in fitted.router.parameters())
    experts = [sum(p.numel() for p in e.parameters()) for e in fitted.experts]
    assert len(experts) == len(tiny.data.domains)
    counts = fitted.param_counts()
    assert counts["total"] == router + sum(experts) == sum(p.numel() for p in fitted.parameters())
    assert counts["trainable"] == counts["total"]  # the router and every RM are fully fine-tuned
    assert counts["active"] == router + experts[0]


def test_reward_is_differentiable_into_the_routed_rm(tiny):
    rm = RODOS().build(tiny.ctx(), 0)
    out = rm(tiny.train.batch(torch.arange(8)))
    assert out.reward.shape == (16,)
    bradley_terry_loss(*out.reward.chunk(2)).backward()
    routed = set(out.info["domain"].tolist())
    for d, expert in enumerate(rm.experts):
        has_grad = any(p.grad is not None for p in expert.parameters())
        assert has_grad == (d in routed)


def test_domainless_data_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match=r"arch=rodos needs a domain label.*`domain`"):
        RODOS().fit(without_domains(tiny.train), tiny.val, tiny.ctx())


def test_oracle_routing_is_scoring_with_the_true_domain(tiny, fitted):
    m = evaluate_architecture(fitted, tiny.val, tiny.test, tiny.data.splits["test"], tiny.data.domains, 64)
    assert m["routing"]["test"]["overall"] == pytest.approx(
        routing_accuracy(fitted, tiny.test.chosen, tiny.data.domains, 64)["overall"])
    oracle = m["views"]["oracle_routing"]["accuracy"]
    assert set(oracle["gold"]["per_domain"]) == set(tiny.data.domains)
    assert oracle["human"]["n"] == len(tiny.test)
    assert 0 <= oracle["gold"]["overall"] <= 1 and 0 <= oracle["human"]["overall"] <= 1
    # a router that always names the true domain scores exactly like the oracle
    n = len(tiny.data.domains)
    fitted.router_logits = lambda b: torch.nn.functional.one_hot(b.domain, n).float()
    try:
        routed = fitted.score(tiny.test.chosen)
    finally:
        del fitted.router_logits
    truth = torch.empty(len(tiny.test))
    for d in range(n):
        rows = (tiny.test.chosen.domain == d).nonzero(as_tuple=True)[0]
        truth[rows] = fitted.score(tiny.test.chosen.subset(rows),
                                   scorer=lambda b, d=d: fitted.expert_reward(d, b.input_ids, b.attention_mask))
    assert torch.allclose(routed, truth, atol=1e-5)
    assert torch.allclose(fitted.score(tiny.test.chosen, scorer=fitted.views()["oracle_routing"].score), truth,
                          atol=1e-5)
