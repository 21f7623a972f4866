"""On a CUDA GPU (``pytest -m gpu``; skipped without one, deselected by default): every architecture fits and
scores in bf16, packed rewards equal padded ones with the fast kernel, Best-of-N and a PPO step run there, and the
GPU benchmark runs at smoke sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, EXPORT_SHRINK, compose, tiny_policy_cfg
from hydra.utils import instantiate

from harness.device import place, resolve_compute
from harness.job import build

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ARCHS = sorted(path.stem for path in (Path(CONF_DIR) / "arch").glob("*.yaml"))


@pytest.fixture(scope="module")
def bf16():
    return resolve_compute("cuda", "bf16")


def on_cuda(module: torch.nn.Module) -> bool:
    return all(p.device.type == "cuda" for p in module.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_fits_and_scores_on_cuda_in_bf16(tiny, bf16, arch):
    cfg = compose([f"arch={arch}", *EXPORT_SHRINK.get(arch, [])])  # a few steps each
    rm = build(cfg.arch, "arch")
    ctx = tiny.ctx()
    place(bf16, rm, getattr(rm, "labeler", None))
    rm.fit(tiny.train, tiny.val, ctx)
    assert on_cuda(rm)
    assert all(p.dtype == torch.float32 for p in rm.parameters())  # bf16 autocast, fp32 master weights
    rewards = rm.score(tiny.test.chosen, 64)
    assert rewards.shape == (len(tiny.test),) and rewards.device.type == "cpu" and torch.isfinite(rewards).all()
    # The same weights on the CPU in fp32 give nearly the same rewards (bf16 rounds; it does not reorder much).
    place(resolve_compute("cpu"), rm)
    cpu = rm.score(tiny.test.chosen, 64)
    assert on_cuda(rm) is False
    assert torch.corrcoef(torch.stack([rewards, cpu]))[0, 1] > 0.98


def tiny_llama(attn: str):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=257, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, num_labels=1)
    return LlamaForSequenceClassification._from_config(config, attn_implementation=attn).cuda().eval()


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("bf16", 5e-2)])
def test_packed_equals_padded_on_cuda(precision, atol):
    from harness.packing import packed_attention, sequence_logits, use_packing

    lengths = torch.tensor([5, 40, 1, 17, 33, 8])
    T = int(lengths.max())
    mask = (torch.arange(T)[None] < lengths[:, None]).long().cuda()
    ids = torch.randint(1, 257, (len(lengths), T), device="cuda") * mask
    padded_model, packed_model = tiny_llama("sdpa"), tiny_llama("sdpa")
    padded_compute = resolve_compute("cuda", precision, packing="off")
    packed_compute = resolve_compute("cuda", precision, packing="auto")
    with torch.no_grad(), padded_compute.autocast():
        padded = sequence_logits(padded_model, ids, mask, padded_compute)
        packed = sequence_logits(packed_model, ids, mask, packed_compute)
    assert use_packing(packed_model, packed_compute)
    assert packed_model.config._attn_implementation == packed_attention(torch.device("cuda"))
    assert torch.allclose(packed.float(), padded.float(), atol=atol), (packed - padded).abs().max()


def test_packed_training_on_cuda(tiny):
    """The single RM trains packed (flex / flash) on the GPU about as well as padded."""
    from harness.archs.single import SingleRM
    from harness.archs.train import train_bradley_terry

    results = {}
    for packing in ("off", "on"):
        rm = SingleRM()
        ctx = tiny.ctx()
        rm.build(ctx, 0)
        rm.compute = resolve_compute("cuda", "bf16", packing=packing)
        results[packing] = train_bradley_terry(rm, list(rm.model.parameters()), tiny.train, tiny.val, ctx.train, 0)
    assert abs(results["on"]["best_val_acc"] - results["off"]["best_val_acc"]) < 0.1


def test_bon_and_one_ppo_step_on_cuda(tiny, bf16):
    from harness.optimize.ppo import PPOConfig, run_ppo
    from harness.optimize.study import bon_samples
    from harness.seeds import Stream

    policy = instantiate(tiny_policy_cfg())
    place(bf16, policy)  # before prepare: its models load onto the GPU
    policy.prepare(tiny.cache, tiny.data, seed=0)
    texts = policy.sample(["tell me about the dragon ."] * 16, 0, Stream.BON_SAMPLES)  # sampled on the GPU
    assert len(texts) == 16 and on_cuda(policy.model)
    samples = bon_samples(policy, tiny.data, tiny.cache, seed=3, n_prompts=4, n_samples=8)
    assert len(samples["responses"]) == 4 and all(len(r) == 8 for r in samples["responses"])
    cfg = PPOConfig(steps=1, rollout_batch=8, ppo_epochs=1, minibatches=2, lr=1e-4, value_lr=1e-4, kl_coef=0.05,
                    gamma=1.0, lam=0.95, clip_range=0.2, value_clip_range=0.2, max_grad_norm=1.0, eval_every=1,
                    eval_prompts=4, eval_samples=2, train_prompts=16)
    prompts = tiny.data.eval_prompts(20, 0)

    def score(p, r, d):
        import numpy as np

        return np.array([float(len(x)) for x in r])

    out = run_ppo(cfg, policy, score, score, train_prompts=prompts[4:], eval_prompts=prompts[:4], seed=0)
    assert len(out["rows"]) == 2 and on_cuda(out["model"])


def test_benchmark_smoke_on_cuda(capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu", Path(CONF_DIR).parent / "benchmarks" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--smoke", "--device", "cuda"])
    (shape,) = report["shapes"].values()
    for name in ("harness", "harness_packed"):
        assert shape["training"]["variants"][name]["peak_gib"] > 0
    assert report["environment"]["gpu"]["name"]
