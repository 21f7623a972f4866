import pytest
import torch
from conftest import UMM_KNOBS, compose
from hydra.utils import instantiate
from transformers import AutoModelForSequenceClassification

from harness.archs.train import bradley_terry_loss
from harness.archs.umm import UMMRM, SharedExpertMoE
from harness.evaluate import evaluate_views, expert_load
from harness.seeds import Stream, derive_seed


def numel(module):
    return sum(p.numel() for p in module.parameters())


def dense_rewards(model, batch):
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.squeeze(-1)


@pytest.fixture(scope="module")
def fitted(tiny, tmp_path_factory):
    """One UMM run on the tiny world: MoE phase, merge phase, save."""
    ctx = tiny.ctx()
    ctx.artifact_dir = tmp_path_factory.mktemp("umm_job")
    rm = UMMRM(**UMM_KNOBS)
    rm.fit(tiny.train, tiny.val, ctx)
    return rm


def test_config_instantiates():
    rm = instantiate(compose(["arch=umm"]).arch, _convert_="all")
    assert isinstance(rm, UMMRM) and rm.moe.top_k == 2 and rm.moe.s_max == "max"
    assert isinstance(rm.merge_train, dict) and rm.merge_train["lr"] > 0


@pytest.mark.parametrize("s_max", ["max", 0.5])
def test_upcycling_preserves_the_dense_function(tiny, s_max):
    moe = UMMRM(**{**UMM_KNOBS, "s_max": s_max}).moe.build(tiny.ctx(), 0)
    dense = tiny.backbone.reward_model(derive_seed(0, Stream.RM_INIT, 0))  # build()'s model 0
    assert all(isinstance(b, SharedExpertMoE) for b in moe.blocks())
    batch = tiny.test.batch(torch.arange(16))
    with torch.no_grad():
        r_moe = moe(batch).reward
    torch.testing.assert_close(r_moe, dense_rewards(dense, batch), rtol=0, atol=1e-5)


def test_uniform_router_gives_coef_times_one(tiny):
    moe = UMMRM(**UMM_KNOBS).moe.build(tiny.ctx(), 0)
    with torch.no_grad():
        for block in moe.blocks():
            block.gate.weight.zero_()
    out = moe(tiny.train.batch(torch.arange(8)))
    assert out.aux_loss.item() == pytest.approx(UMM_KNOBS["aux_loss_coef"] * 1.0, rel=1e-6)
    # uniform over E routed experts: s_max = 1/E, so the shared expert carries 1 - 1/E
    E = moe.E
    torch.testing.assert_close(out.info["shared_gate"], torch.full_like(out.info["shared_gate"], 1 - 1 / E))


def test_gradients_reach_router_shared_and_routed_experts(tiny):
    rm = UMMRM(**{**UMM_KNOBS, "expert_noise": 0.05}).build(tiny.ctx(), 0)  # before the merge the RM is the MoE
    moe = rm.moe
    out = rm(tiny.train.batch(torch.arange(16)))
    assert out.aux_loss is not None and "expert_tokens" in out.info
    (bradley_terry_loss(*out.reward.chunk(2)) + out.aux_loss).backward()
    for block in moe.blocks():
        assert block.gate.weight.grad.abs().sum() > 0
        assert block.shared.gate_proj.weight.grad.abs().sum() > 0
        assert (block.experts.down_proj.grad.abs().sum(dim=(1, 2)) > 0).sum() >= moe.top_k
    assert all(p.grad is not None for p in rm.parameters() if p.requires_grad)


def test_one_hot_merge_reproduces_one_expert(tiny):
    rm = UMMRM(**{**UMM_KNOBS, "expert_noise": 0.1})
    rm.moe.build(tiny.ctx(), 0)
    L, E, j = len(rm.moe.moe_layers), rm.moe.E, 3
    logits = torch.full((L, E), -torch.inf)
    logits[:, j] = 0.0
    rm.merge_logits = torch.nn.Parameter(logits)
    rm.rho_logit = torch.nn.Parameter(torch.tensor(-torch.inf))  # rho = 0: no shared expert
    merged = rm.merged_ffn()
    for i, block in zip(rm.moe.moe_layers, rm.moe.blocks(), strict=True):
        gate, up = block.experts.gate_up_proj[j].chunk(2, dim=0)
        assert torch.equal(merged[f"model.layers.{i}.mlp.gate_proj.weight"], gate)
        assert torch.equal(merged[f"model.layers.{i}.mlp.up_proj.weight"], up)
        assert torch.equal(merged[f"model.layers.{i}.mlp.down_proj.weight"], block.experts.down_proj[j])
        assert not torch.equal(gate, block.experts.gate_up_proj[0].chunk(2, dim=0)[0])  # experts do differ
    rm.rho_logit = torch.nn.Parameter(torch.tensor(torch.inf))  # rho = 1: exactly the shared expert
    merged = rm.merged_ffn()
    for i, block in zip(rm.moe.moe_layers, rm.moe.blocks(), strict=True):
        assert torch.equal(merged[f"model.layers.{i}.mlp.down_proj.weight"], block.shared.down_proj.weight)


def test_moe_param_counts_against_numel(tiny):
    moe = UMMRM(**UMM_KNOBS).moe.build(tiny.ctx(), 0)
    moe.mark_trained(moe.parameters())
    dense = tiny.backbone.reward_model(0)
    L, E, k = len(moe.moe_layers), moe.E, moe.top_k
    ffn, router = numel(dense.model.layers[0].mlp), numel(moe.blocks()[0].gate)
    counts = moe.param_counts()
    assert counts["total"] == numel(moe.model) == numel(dense) + L * (router + E * ffn)
    assert counts["active_per_token"] == numel(dense) + L * (router + k * ffn)  # shared + top-k routed per token
    assert counts["active"] == counts["total"]  # a response may use every routed expert


def test_merged_model_is_plain_dense_of_backbone_size(tiny, fitted):
    dense = tiny.backbone.reward_model(0)
    assert type(fitted.model) is type(dense)
    assert not any("experts" in n or "gate.weight" in n for n, _ in fitted.model.named_parameters())
    assert fitted.param_counts() == dict.fromkeys(("total", "trainable", "active", "active_per_token"), numel(dense))
    # the merged weights are what the learned merge computes (the copy into the dense model is right)
    batch = tiny.test.batch(torch.arange(16))
    with torch.no_grad():
        torch.testing.assert_close(fitted.forward_merge(batch).reward, fitted(batch).reward, rtol=0, atol=1e-6)


def test_saved_merged_model_reloads_with_plain_transformers(tiny, fitted):
    reloaded = AutoModelForSequenceClassification.from_pretrained(fitted.merged_dir)
    assert (fitted.merged_dir / "model.safetensors").exists()
    assert numel(reloaded) == numel(fitted.model)
    ours = fitted.score(tiny.test.chosen)
    batch = tiny.test.chosen.batch(torch.arange(len(tiny.test)))
    assert torch.equal(dense_rewards(reloaded.eval(), batch), dense_rewards(fitted.model, batch))
    torch.testing.assert_close(ours, dense_rewards(reloaded, batch), rtol=0, atol=1e-5)


def test_views_and_fit_report_give_unmerged_and_merge(tiny, fitted):
    unmerged = evaluate_views(fitted, tiny.test, tiny.data.splits["test"], 64)["views"]["unmerged"]
    merge = fitted.fit_report()["merge"]
    assert set(unmerged["accuracy"]["gold"]["per_domain"]) == set(tiny.data.domains)
    assert 0 <= unmerged["accuracy"]["gold"]["overall"] <= 1
    assert unmerged["accuracy"]["human"]["overall"] == pytest.approx(
        (fitted.moe.score(tiny.test.chosen) > fitted.moe.score(tiny.test.rejected)).float().mean().item())
    # Per scored response (SPEC §6): the union of the routed experts its tokens used, averaged over the test
    # responses; at least what one token uses, at most everything.
    params = unmerged["params"]
    assert params["active_per_token"] <= params["active"] <= params["active_max"] <= params["total"]
    assert params["total"] == numel(fitted.moe.model)
    assert unmerged["params"]["total"] > fitted.param_counts()["total"]
    assert unmerged["timing_s"]["score_per_1k"] > 0
    assert 0 < merge["rho"] < 1 and merge["train_pairs"] == round(0.1 * len(tiny.train))
    for row in merge["a"].values():
        assert len(row) == fitted.moe.E and sum(row) == pytest.approx(1.0, abs=1e-3)
    assert merge["init"]["a"] != merge["a"] or merge["init"]["rho"] != merge["rho"], "the merge learned nothing"
    assert fitted.fit_report()["moe"]["train_pairs"] == len(tiny.train) - merge["train_pairs"]


def test_expert_load_is_the_unmerged_routing(tiny, fitted):
    load = expert_load(fitted, tiny.val, 64)
    assert set(load["load"]) == {f"layer_{i}" for i in fitted.moe.moe_layers}
    assert all(len(row) == fitted.moe.E and sum(row) == pytest.approx(1.0, abs=1e-3) for row in load["load"].values())


def test_merge_phase_trains_only_merge_parameters(tiny, fitted):
    out = fitted.forward_merge(tiny.train.batch(torch.arange(8)))
    bradley_terry_loss(*out.reward.chunk(2)).backward()
    assert fitted.rho_logit.grad is not None and fitted.merge_logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in fitted.moe.parameters()) and all(p.grad is None for p in
                                                                        fitted.model.parameters())
    fitted.rho_logit.grad = fitted.merge_logits.grad = None
