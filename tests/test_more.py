import pytest
import torch
from conftest import compose
from hydra.utils import instantiate

from harness.archs.moe import expert_numel, load_balancing_loss, union_active_params
from harness.archs.more import MoRE, SparseMoE
from harness.archs.train import bradley_terry_loss
from harness.evaluate import expert_load
from harness.seeds import Stream, derive_seed

KNOBS = dict(num_experts=None, top_k=2, layers=None, expert_noise=0.0, router_init_std=0.02, aux_loss_coef=0.01,
             experts_implementation="eager")


def numel(module):
    return sum(p.numel() for p in module.parameters())


def test_config_instantiates():
    rm = instantiate(compose(["arch=more"]).arch, _convert_="all")
    assert isinstance(rm, MoRE) and rm.top_k == 2 and rm.aux_loss_coef == 0.01


def test_upcycling_preserves_the_dense_function(tiny):
    ctx = tiny.ctx()
    rm = MoRE(**KNOBS).build(ctx, 0)
    dense = tiny.backbone.reward_model(derive_seed(0, Stream.RM_INIT, 0))  # build()'s model 0
    assert all(isinstance(b, SparseMoE) for b in rm.blocks()) and len(rm.blocks()) == len(dense.model.layers)
    batch = tiny.test.batch(torch.arange(16))
    with torch.no_grad():
        r_moe = rm(batch).reward
        r_dense = dense(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.squeeze(-1)
    torch.testing.assert_close(r_moe, r_dense, rtol=0, atol=1e-5)
    # ... and noise really moves the experts apart (so the knob is not a no-op).
    noisy = MoRE(**{**KNOBS, "expert_noise": 0.1}).build(ctx, 0)
    experts = noisy.blocks()[0].experts
    assert not torch.equal(experts.gate_up_proj[0], experts.gate_up_proj[1])


def test_load_balancing_loss_known_values():
    E, N, k = 5, 40, 2
    uniform = torch.full((N, E), 1 / E)
    skewed_choice = torch.zeros(N, k, dtype=torch.long)  # whatever the top-k, uniform P gives exactly 1
    skewed_choice[:, 1] = 3
    assert load_balancing_loss(uniform, skewed_choice, E).item() == pytest.approx(1.0)
    collapsed = torch.zeros(N, E)
    collapsed[:, 0] = 1.0
    all_on_zero = torch.zeros(N, 1, dtype=torch.long)
    assert load_balancing_loss(collapsed, all_on_zero, E).item() == pytest.approx(E)


def test_uniform_router_gives_coef_times_one(tiny):
    rm = MoRE(**KNOBS).build(tiny.ctx(), 0)
    with torch.no_grad():
        for block in rm.blocks():
            block.gate.weight.zero_()  # every token: softmax exactly uniform
    out = rm(tiny.train.batch(torch.arange(8)))
    assert out.aux_loss.item() == pytest.approx(KNOBS["aux_loss_coef"] * 1.0, rel=1e-6)


def test_gradients_reach_router_and_experts(tiny):
    rm = MoRE(**{**KNOBS, "expert_noise": 0.05}).build(tiny.ctx(), 0)
    out = rm(tiny.train.batch(torch.arange(16)))
    (bradley_terry_loss(*out.reward.chunk(2)) + out.aux_loss).backward()
    for block in rm.blocks():
        assert block.gate.weight.grad is not None and block.gate.weight.grad.abs().sum() > 0
        hit = block.experts.gate_up_proj.grad.abs().sum(dim=(1, 2)) > 0  # (E,)
        assert hit.sum() >= rm.top_k
    assert all(p.grad is not None for p in rm.parameters() if p.requires_grad)
    # With exact copies the BT loss cannot tell experts apart, but the balance loss still trains the router.
    exact = MoRE(**KNOBS).build(tiny.ctx(), 0)
    exact(tiny.train.batch(torch.arange(16))).aux_loss.backward()
    assert all(b.gate.weight.grad.abs().sum() > 0 for b in exact.blocks())


def test_param_counts_against_numel(tiny):
    rm = MoRE(**{**KNOBS, "layers": [1]}).build(tiny.ctx(), 0)
    rm.mark_trained(rm.parameters())
    dense = tiny.backbone.reward_model(0)
    ffn, router = numel(dense.model.layers[1].mlp), numel(rm.blocks()[0].gate)
    E, k = len(tiny.data.domains), rm.top_k
    counts = rm.param_counts()
    assert counts["total"] == numel(rm.model) == numel(dense) - ffn + router + E * ffn
    assert counts["trainable"] == counts["total"]
    # per token: the dense model + the router + (k - 1) more FFN copies in the one MoE layer
    assert counts["active_per_token"] == numel(dense) + router + (k - 1) * ffn
    assert counts["active"] == counts["total"]  # the most one response can use: every expert


def test_union_active_params_by_hand():
    tokens = torch.tensor([[[3, 0, 1], [0, 0, 4]],    # layer 0 uses experts 0 and 2, layer 1 only expert 2
                           [[1, 1, 1], [2, 2, 2]]])  # every expert of both layers
    assert union_active_params(1000, tokens, 10).tolist() == [1000 - 3 * 10, 1000]


def test_per_response_active_count_is_the_union_of_the_experts_its_tokens_used(tiny):
    rm = MoRE(**{**KNOBS, "expert_noise": 0.05, "router_init_std": 1.0}).build(tiny.ctx(), 0)
    seqs = tiny.test.chosen.subset(torch.arange(24))
    batch = seqs.batch(torch.arange(24))
    with torch.no_grad():  # the trunk alone: its blocks keep the routing (top_k_index (B*T, k)) for us to read
        rm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    B, T = batch.input_ids.shape
    real = batch.attention_mask.bool()  # (B, T)
    counts = rm.param_counts()
    expected = torch.full((B,), float(counts["total"]), dtype=torch.float64)
    for block in rm.blocks():
        chosen = block.top_k_index.reshape(B, T, rm.top_k)
        used = torch.tensor([len(set(chosen[i][real[i]].flatten().tolist())) for i in range(B)])
        expected -= (rm.E - used).double() * expert_numel(rm.blocks())
    # seqs.batch(arange) keeps the order; active_params scores in length order and puts them back
    torch.testing.assert_close(rm.active_params(seqs), expected, rtol=0, atol=0)
    assert (expected < counts["total"]).any() and counts["active_per_token"] <= expected.min()


def test_fit_scores_and_reports_expert_load(tiny):
    rm = MoRE(**KNOBS)
    rm.fit(tiny.train, tiny.val, tiny.ctx())
    scores = rm.score(tiny.test.chosen)
    assert scores.shape == (len(tiny.test),) and torch.isfinite(scores).all()
    info = rm.explain(tiny.test.chosen)
    L, E = len(rm.moe_layers), rm.E
    assert info["expert_tokens"].shape == (len(tiny.test), L, E)
    # every real token sits in exactly top_k expert slots of every MoE layer
    n_real = tiny.test.chosen.lengths[:, None].float().expand(-1, L)
    assert torch.equal(info["expert_tokens"].sum(-1), rm.top_k * n_real)
    torch.testing.assert_close(info["router_prob"].sum(-1), torch.ones(len(tiny.test), L))
    load = expert_load(rm, tiny.val, 64)
    assert set(load["load"]) == {f"layer_{i}" for i in rm.moe_layers}
    for row in load["load"].values():
        assert len(row) == E and sum(row) == pytest.approx(1.0, abs=1e-3)
    assert all(v >= 1.0 - 1e-6 for v in load["imbalance"].values())
    # P_i: the router's mean probability over the validation split's real tokens, each token weighted once
    infos = [rm.explain(s) for s in (tiny.val.chosen, tiny.val.rejected)]
    n_tok = torch.cat([i["expert_tokens"].sum(-1, keepdim=True) / rm.top_k for i in infos])  # (N, L, 1)
    P = (torch.cat([i["router_prob"] for i in infos]) * n_tok).sum(0) / n_tok.sum(0)  # (L, E)
    f = torch.cat([i["expert_tokens"] for i in infos]).sum(0)
    f = f / f.sum(-1, keepdim=True)
    for j, i in enumerate(rm.moe_layers):
        assert load["balance_loss"][f"layer_{i}"] == pytest.approx(float(E * (f[j] * P[j]).sum()), rel=1e-5)


def test_non_llama_backbone_is_refused_clearly(tiny):
    from transformers import BertConfig, BertForSequenceClassification

    class BertBackbone:
        name = "minilm"

        def reward_model(self, seed, num_labels=1):
            return BertForSequenceClassification(BertConfig(
                vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                num_labels=num_labels))

    ctx = tiny.ctx()
    ctx.backbone = BertBackbone()
    with pytest.raises(ValueError, match=r"backbone=minilm.*does not|gate_proj"):
        MoRE(**KNOBS).build(ctx, 0)
    with pytest.raises(ValueError, match="arch.layers"):
        MoRE(**{**KNOBS, "layers": [7]}).build(tiny.ctx(), 0)
