"""`finetune: lora` (the default on the real backbones and policies): reward models and PPO train LoRA adapters
and heads over a frozen trunk; folding the adapters back gives the plain transformers model again."""

import copy
import dataclasses

import pytest
import torch
from conftest import UMM_KNOBS, compose, make_policy
from transformers import AutoModelForSequenceClassification

from harness.archs.ensemble import EnsembleRM
from harness.archs.single import SingleRM
from harness.archs.umm import UMMRM
from harness.backbones import merge_lora


def numel(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def lora_backbone(tiny):
    backbone = copy.copy(tiny.backbone)  # same prepared weights and tokenizer, RMs trained through LoRA
    backbone.finetune, backbone.lora_r, backbone.lora_alpha = "lora", 4, 8.0
    return backbone


def rewards(model, batch):
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.squeeze(-1)


def test_lora_reward_model_trains_adapters_and_head_only(tiny):
    full, lora = tiny.backbone.reward_model(0), lora_backbone(tiny).reward_model(0)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("score.") for n in trainable)
    assert any(n.startswith("score.") for n in trainable)
    # Rank 4 on q and v of each of 2 layers (32 -> 32): 2 * 2 * 4 * (32 + 32), plus the 32-weight head.
    assert numel(lora, trainable_only=True) == 2 * 2 * 4 * 64 + 32
    # LoRA's B starts at zero: the adapted model starts as the plain one with the same seeded head.
    batch = tiny.test.chosen.batch(torch.arange(8))
    torch.testing.assert_close(rewards(lora.eval(), batch), rewards(full.eval(), batch))


def test_merge_lora_gives_back_the_plain_model(tiny, tmp_path):
    lora = lora_backbone(tiny).reward_model(0).eval()
    with torch.no_grad():  # pretend training moved the adapters
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    batch = tiny.test.chosen.batch(torch.arange(8))
    before = rewards(lora, batch)
    merge_lora(lora)
    assert not any("lora_" in n for n, _ in lora.named_parameters())
    assert numel(lora) == numel(tiny.backbone.reward_model(0))
    torch.testing.assert_close(rewards(lora, batch), before, rtol=0, atol=1e-5)
    lora.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(rewards(reloaded, batch), before, rtol=0, atol=1e-5)


def test_single_with_lora_leaves_the_trunk_untouched(tiny):
    backbone = lora_backbone(tiny)
    ctx = dataclasses.replace(tiny.ctx(), backbone=backbone, logs=[])
    rm = SingleRM()
    rm.fit(tiny.train, tiny.val, ctx)
    fresh = tiny.backbone.reward_model(0)
    trunk = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(rm.model.get_parameter(trunk), fresh.get_parameter(trunk))
    counts = rm.param_counts()
    assert counts["trainable"] == numel(rm.model, trainable_only=True) < counts["total"] == numel(rm.model)
    assert rm.model.get_parameter("model.layers.0.self_attn.q_proj.lora_B.default.weight").abs().sum() > 0


def test_umm_with_lora_merges_to_the_exact_dense_size(tiny, tmp_path):
    ctx = dataclasses.replace(tiny.ctx(), backbone=lora_backbone(tiny), logs=[], artifact_dir=tmp_path)
    rm = UMMRM(**UMM_KNOBS)
    rm.fit(tiny.train, tiny.val, ctx)
    dense = tiny.backbone.reward_model(0)
    assert type(rm.model) is type(dense) and rm.param_counts()["total"] == numel(dense)
    reloaded = AutoModelForSequenceClassification.from_pretrained(rm.merged_dir).eval()
    batch = tiny.test.chosen.batch(torch.arange(8))
    torch.testing.assert_close(rewards(reloaded, batch), rewards(rm.model, batch), rtol=0, atol=1e-5)


def test_ensemble_members_are_cached_per_finetune_mode(tiny):
    ctx_full, ctx_lora = tiny.ctx(), dataclasses.replace(tiny.ctx(), backbone=lora_backbone(tiny))
    rm = EnsembleRM(k=2, aggregator="mean", uwo_lambda=0.5)
    assert rm.member_spec(ctx_full, 0) != rm.member_spec(ctx_lora, 0)


def test_ppo_trainable_copies_under_lora(tiny):
    policy = make_policy(tiny)
    policy.finetune, policy.lora_r, policy.lora_alpha = "lora", 4, 8.0
    lm = policy.trainable(policy.causal_lm())
    names = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)  # the tied LM head is the frozen embedding
    value = policy.trainable(policy.value_model(0))
    names = [n for n, p in value.named_parameters() if p.requires_grad]
    assert "score.weight" in names and all("lora_" in n or n == "score.weight" for n in names)


@pytest.mark.parametrize("override, key", [("backbone.finetune=partial", "backbone.finetune"),
                                           ("policy.finetune=adapters", "policy.finetune")])
def test_bad_finetune_mode_names_the_key(override, key):
    from harness.job import build

    cfg = compose([override])
    group = key.split(".")[0]
    with pytest.raises(ValueError, match=key):
        build(cfg[group], group)


def test_real_backbones_default_to_lora():
    for name in ("smollm2", "minilm", "hf"):
        assert compose([f"backbone={name}"]).backbone.finetune == "lora"
    assert compose([]).backbone.finetune == "full"
    assert compose(["policy=smollm2"]).policy.finetune == "lora"
