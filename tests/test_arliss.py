import pytest
import torch
from conftest import compose
from peft.tuners.lora import LoraLayer
from peft.utils import ModulesToSaveWrapper

from harness.archs.arliss import ARLISS, ROUTER, adapter_of, reward_adapter
from harness.evaluate import evaluate_architecture, routing_accuracy
from harness.job import build
from harness.seeds import Stream, derive_seed

LORA = dict(r=4, r_fraction=0.015625, lora_scaling=2.0, lora_dropout=0.0, target_modules=None, lr=3e-3)


def without_domains(pairs):
    """A copy of ``pairs`` with every domain label removed (-1), as a domain-less data source gives."""
    out = pairs.subset(torch.arange(len(pairs)))
    for side in (out.chosen, out.rejected):
        side.domain = torch.full_like(side.domain, -1)
    return out


def head_wrapper(rm) -> ModulesToSaveWrapper:
    (wrapper,) = [m for m in rm.peft.modules() if isinstance(m, ModulesToSaveWrapper)]
    return wrapper


def lora_numel(rm) -> dict[str, int]:
    """LoRA weights per adapter, read off peft's LoRA layers."""
    out: dict[str, int] = {}
    for module in rm.peft.modules():
        if isinstance(module, LoraLayer):
            for name in module.lora_A:
                out[name] = out.get(name, 0) + module.lora_A[name].weight.numel() + module.lora_B[name].weight.numel()
    return out


@pytest.fixture(scope="module")
def fitted(tiny):
    rm = ARLISS(**LORA)
    rm.fit(tiny.train, tiny.val, tiny.ctx())
    return rm


def test_routes_each_row_to_its_adapter_once_per_batch(tiny):
    n = len(tiny.data.domains)
    rm = ARLISS(**LORA).build(tiny.ctx(), 0).eval()
    # Untrained reward adapters are all identical (LoRA B = 0, heads copied from one original): make them differ.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in rm.peft.named_parameters():
            if adapter_of(name) not in (None, ROUTER):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    batch = tiny.test.chosen.batch(torch.arange(12))
    route = torch.tensor([4, 3, 2, 1, 0, 4, 3, 2, 1, 0, 1, 1]) % n
    with torch.no_grad():
        every = torch.stack([rm.adapter_reward(d, batch.input_ids, batch.attention_mask) for d in range(n)])
        assert not torch.allclose(every[0], every[1], atol=1e-3), "adapters must differ for this test to bite"
        calls = [0] * n
        heads = head_wrapper(rm).modules_to_save
        for d in range(n):
            heads[reward_adapter(d)].register_forward_hook(lambda *_, d=d: calls.__setitem__(d, calls[d] + 1))
        probs = torch.full((12, n), 0.3 / (n - 1))
        probs[torch.arange(12), route] = 0.7
        rm.router_logits = lambda b: probs.log()  # force the router's decision
        out = rm(batch)
    assert calls == [int((route == d).any()) for d in range(n)], "each routed adapter runs once, the others never"
    assert torch.allclose(out.reward, every[route, torch.arange(12)], atol=1e-5)
    assert torch.equal(out.info["domain"], route)
    assert torch.allclose(out.info["domain_prob"], torch.full((12,), 0.7))


def test_router_pass_gives_domain_logits_from_the_prompt(tiny):
    rm = ARLISS(**LORA).build(tiny.ctx(), 0)
    batch = tiny.test.chosen.batch(torch.arange(6))
    logits = rm.router_logits(batch)
    assert logits.shape == (6, len(tiny.data.domains))
    # the response does not reach the router: scrambling it leaves the routing unchanged
    scrambled = tiny.test.rejected.batch(torch.arange(6))
    assert torch.equal(scrambled.prompt_ids, batch.prompt_ids)
    assert torch.allclose(rm.router_logits(scrambled), logits)


def test_switching_adapters_changes_outputs(tiny, fitted):
    batch = tiny.test.chosen.batch(torch.arange(16))
    with torch.no_grad():
        rewards = [fitted.adapter_reward(d, batch.input_ids, batch.attention_mask)
                   for d in range(len(tiny.data.domains))]
        fitted.peft.set_adapter(reward_adapter(0))
        again = fitted.peft(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.squeeze(-1)
    assert torch.allclose(again, rewards[0])  # set_adapter really selects: same adapter, same output
    for a in range(len(rewards)):
        for b in range(a + 1, len(rewards)):
            assert not torch.allclose(rewards[a], rewards[b], atol=1e-4), f"adapters {a} and {b} agree"


def test_each_adapter_has_its_own_head(tiny, fitted):
    n = len(tiny.data.domains)
    heads = head_wrapper(fitted).modules_to_save
    assert set(heads) == {ROUTER} | {reward_adapter(d) for d in range(n)}
    assert len({id(h) for h in heads.values()}) == n + 1
    assert len({h.weight.data_ptr() for h in heads.values()}) == n + 1  # no shared storage
    H = tiny.backbone.hidden_size
    assert heads[ROUTER].weight.shape == (n, H)
    original = head_wrapper(fitted).original_module.weight
    for d in range(n):
        w = heads[reward_adapter(d)].weight
        assert w.shape == (1, H)
        assert not torch.equal(w, original), "each reward head was trained"
        for e in range(d + 1, n):
            assert not torch.equal(w, heads[reward_adapter(e)].weight)


def test_backbone_stays_frozen(tiny, fitted):
    fresh = dict(tiny.backbone.reward_model(derive_seed(0, Stream.RM_INIT, 0)).named_parameters())  # build()'s model 0
    shared = [(n, p) for n, p in fitted.peft.named_parameters() if adapter_of(n) is None]
    assert len(shared) > 3
    for name, p in shared:
        key = name.removeprefix("base_model.model.").replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(p, fresh[key]), name


def test_param_counts_match_the_real_modules(tiny, fitted):
    n = len(tiny.data.domains)
    backbone = sum(p.numel() for p in tiny.backbone.reward_model(0).parameters())  # incl. its scalar head
    scalar_head = head_wrapper(fitted).original_module.weight.numel()
    lora = lora_numel(fitted)
    heads = {name: sum(p.numel() for p in h.parameters()) for name, h in head_wrapper(fitted).modules_to_save.items()}
    assert set(lora) == set(heads) == {ROUTER} | {reward_adapter(d) for d in range(n)}
    counts = fitted.param_counts()
    assert counts["total"] == backbone + sum(lora.values()) + sum(heads.values())
    assert counts["total"] == sum(p.numel() for p in fitted.parameters())
    assert counts["trainable"] == sum(lora.values()) + sum(heads.values())  # adapters and heads only
    one = reward_adapter(0)
    assert counts["active"] == backbone - scalar_head + lora[ROUTER] + heads[ROUTER] + lora[one] + heads[one]


def test_fit_scores_explains_and_reports_router_accuracy(tiny, fitted):
    scores = fitted.score(tiny.test.chosen)
    assert scores.shape == (len(tiny.test),) and torch.isfinite(scores).all()
    info = fitted.explain(tiny.val.chosen)
    router = routing_accuracy(fitted, tiny.val.chosen, tiny.data.domains, 64)
    assert router["overall"] == pytest.approx((info["domain"] == tiny.val.chosen.domain).float().mean().item())
    assert ((info["domain_prob"] > 0) & (info["domain_prob"] <= 1)).all()


def test_domainless_data_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match=r"arch=arliss needs a domain label.*`domain`"):
        ARLISS(**LORA).fit(without_domains(tiny.train), tiny.val, tiny.ctx())


def test_bad_knobs_are_errors():
    with pytest.raises(ValueError, match="arch.r=0"):
        ARLISS(**{**LORA, "r": 0})
    with pytest.raises(ValueError, match="arch.r_fraction=0"):
        ARLISS(**{**LORA, "r_fraction": 0.0})


def test_default_rank_is_a_share_of_the_hidden_size(tiny):
    rm = build(compose(["arch=arliss"]).arch, "arch")
    assert rm.r is None and rm.r_fraction == 1 / 64
    rm.build(tiny.ctx(), 0)
    H = tiny.backbone.hidden_size
    ranks = {m.r[ROUTER] for m in rm.peft.modules() if isinstance(m, LoraLayer)}
    assert ranks == {max(1, round(H / 64))}  # 1/64 of the hidden size, at least 1
    assert rm.fit_report()["lora"] == {"r": max(1, round(H / 64)), "hidden_size": H,
                                       "r_fraction_of_hidden": max(1, round(H / 64)) / H, "set_by": "arch.r_fraction"}
    absolute = ARLISS(**LORA)
    absolute.build(tiny.ctx(), 0)
    assert absolute.fit_report()["lora"] == {"r": 4, "hidden_size": H, "r_fraction_of_hidden": 4 / H,
                                             "set_by": "arch.r"}


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
                                   scorer=lambda b, d=d: fitted.adapter_reward(d, b.input_ids, b.attention_mask))
    assert torch.allclose(routed, truth, atol=1e-5)
    assert torch.allclose(fitted.score(tiny.test.chosen, scorer=fitted.views()["oracle_routing"].score), truth,
                          atol=1e-5)
