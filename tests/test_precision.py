"""Mixed precision on the CPU (harness/device.py): the bf16 autocast and the fp16 loss-scaler paths a GPU job takes
run here too — RM training, pre-training, Best-of-N sampling and a PPO step — with fp32 master weights."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONF_DIR, EXPORT_SHRINK, TINY_BACKBONE, compose, tiny_policy_cfg
from hydra.utils import instantiate

from harness.archs.single import SingleRM
from harness.archs.train import train_bradley_terry
from harness.device import place, resolve_compute
from harness.job import build

ARCHS = sorted(path.stem for path in (Path(CONF_DIR) / "arch").glob("*.yaml"))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reward_model_trains_in_mixed_precision(tiny, precision):
    rm = SingleRM()
    ctx = tiny.ctx()
    rm.build(ctx, 0)
    rm.compute = resolve_compute("cpu", precision)
    before = [p.detach().clone() for p in rm.model.parameters()]
    result = train_bradley_terry(rm, list(rm.model.parameters()), tiny.train, tiny.val, ctx.train, 0)
    assert result["steps"] > 0 and 0 <= result["best_val_acc"] <= 1
    params = list(rm.model.parameters())
    assert all(p.dtype == torch.float32 for p in params)  # master weights stay fp32
    assert any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))  # the scaler let steps through
    rewards = rm.score(tiny.test.chosen, 64)
    assert rewards.dtype == torch.float32 and torch.isfinite(rewards).all()


def test_pretraining_in_bf16(tiny):
    from harness.backbones import pretrain_causal_lm
    from harness.optim import UpdateRule

    texts = [" ".join(["a", "b", "c"] * 5)] * 16
    spec = {**TINY_BACKBONE, "max_length": 24}
    model = pretrain_causal_lm(tiny.backbone.tokenizer, texts, spec, UpdateRule(3e-3, 0.0, 0.0, 1.0), steps=3,
                               batch_size=4, log_every=10, init_seed=0, batch_seed=0,
                               compute=resolve_compute("cpu", "bf16"))
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_sampling_and_a_ppo_step_in_mixed_precision(tiny, precision):
    from harness.optimize.ppo import PPOConfig, run_ppo
    from harness.seeds import Stream

    policy = instantiate(tiny_policy_cfg())
    place(resolve_compute("cpu", precision), policy)
    policy.prepare(tiny.cache, tiny.data, seed=0)  # the cached SFT policy (fp32 on disk), loaded for this compute
    texts = policy.sample(["tell me about the dragon ."] * 4, 0, Stream.BON_SAMPLES)
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)

    def length(prompts, responses, domains):
        return np.array([float(len(r.split())) for r in responses])

    cfg = PPOConfig(steps=1, rollout_batch=8, ppo_epochs=1, minibatches=2, lr=1e-3, value_lr=1e-3, kl_coef=0.05,
                    gamma=1.0, lam=0.95, clip_range=0.2, value_clip_range=0.2, max_grad_norm=1.0, eval_every=1,
                    eval_prompts=2, eval_samples=2, train_prompts=16)
    prompts = tiny.data.eval_prompts(18, seed=0)
    out = run_ppo(cfg, policy, length, length, train_prompts=prompts[2:], eval_prompts=prompts[:2], seed=0)
    assert [r["step"] for r in out["rows"]] == [0, 1] and math.isfinite(out["rows"][-1]["kl"])
    assert all(p.dtype == torch.float32 for p in out["model"].parameters())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_fits_in_bf16_and_scores_like_fp32(tiny, arch):
    """~1 min for all on 2 shared cores: each arch's phases under bf16 autocast; the same weights scored in fp32
    give nearly the same rewards (bf16 rounds, it does not reorder)."""
    rm = build(compose([f"arch={arch}", *EXPORT_SHRINK.get(arch, [])]).arch, "arch")
    place(resolve_compute("cpu", "bf16"), rm, getattr(rm, "labeler", None))
    rm.fit(tiny.train, tiny.val, tiny.ctx())
    assert all(p.dtype == torch.float32 for p in rm.parameters())
    bf16 = rm.score(tiny.test.chosen, 64)
    place(resolve_compute("cpu"), rm)
    fp32 = rm.score(tiny.test.chosen, 64)
    assert torch.isfinite(bf16).all() and torch.corrcoef(torch.stack([bf16, fp32]))[0, 1] > 0.98
