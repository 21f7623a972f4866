"""Cache keys of artifacts whose numbers the device and precision decide (harness/device.py ``Compute.keyed``): the
pre-trained tiny backbone, the SFT policy, policy samples, trained ensemble members. A bf16 or GPU artifact is never
reused by a CPU fp32 job (nor the other way round), and a CPU fp32 job's keys are exactly those of before."""

import dataclasses

import pytest
import torch
from conftest import TINY_BACKBONE, tiny_policy_cfg
from hydra.utils import instantiate

from harness.archs.ensemble import EnsembleRM
from harness.backbones import TinyBackbone
from harness.cache import ArtifactCache
from harness.device import CPU, Compute, place, resolve_compute

BF16_CPU = resolve_compute("cpu", "bf16")
# Built directly: no GPU is needed to name one (nothing runs on it).
BF16_GPU = Compute(torch.device("cuda", 0), "bf16", "auto")


class Asked(Exception):
    """Raised by ``RecordingCache`` once an entry is asked for: the test wants its key, not its build."""


class RecordingCache(ArtifactCache):
    """Records (kind, spec) of the first entry asked for, builds nothing."""

    def directory(self, kind, spec, build):
        self.asked = (kind, spec)
        raise Asked


def asked_spec(prepare) -> tuple[str, dict]:
    cache = RecordingCache("/nonexistent")
    with pytest.raises(Asked):
        prepare(cache)
    return cache.asked


def test_cpu_fp32_keys_nothing_else_keys_device_type_and_precision():
    spec = {"a": 1}
    assert CPU.keyed(spec) is spec and resolve_compute("cpu", "fp32", "off").keyed(spec, reward_forwards=True) is spec
    assert BF16_CPU.keyed(spec) == {"a": 1, "compute": {"device": "cpu", "precision": "bf16"}}
    assert BF16_GPU.keyed(spec) == {"a": 1, "compute": {"device": "cuda", "precision": "bf16"}}
    # The GPU's index computes the same numbers; its type and the precision do not.
    assert BF16_GPU.keyed(spec) == Compute(torch.device("cuda", 1), "bf16", "auto").keyed(spec)
    assert len({ArtifactCache.key("k", c.keyed(spec)) for c in (CPU, BF16_CPU, BF16_GPU,
                                                                Compute(torch.device("cuda"), "fp32"))}) == 4
    # Packed reward forwards round differently: packing=on keys a trained member on the CPU too, but no other
    # artifact (pre-training and sampling never pack).
    packed = resolve_compute("cpu", "fp32", "on")
    assert packed.keyed(spec) is spec
    assert packed.keyed(spec, reward_forwards=True)["compute"] == {"device": "cpu", "precision": "fp32",
                                                                   "packing": "on"}


def test_cpu_keys_name_the_thread_count_when_it_is_not_one(monkeypatch):
    spec = {"a": 1}
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert CPU.keyed(spec) == {"a": 1, "compute": {"device": "cpu", "precision": "fp32", "threads": 2}}
    assert BF16_CPU.keyed(spec)["compute"]["threads"] == 2
    # A GPU computes on the GPU: the CPU's threads decide nothing there.
    assert "threads" not in BF16_GPU.keyed(spec)["compute"]
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert CPU.keyed(spec) is spec


def test_backbone_key_is_todays_on_cpu_fp32_and_moves_with_precision(tiny):
    world = tiny.data.world_spec(0)

    def spec_for(compute):
        backbone = TinyBackbone(**TINY_BACKBONE)
        place(compute, backbone)
        return asked_spec(lambda cache: backbone.prepare(cache, corpus=None, seed=0, world_spec=world))

    kind, fp32 = spec_for(CPU)
    # Today's key, by today's formula: the entry the tiny fixture (a CPU fp32 build) was cached under.
    assert kind == "backbone_tiny" and fp32 == {"backbone": tiny.backbone.spec, "world": world, "seed": 0}
    assert tiny.backbone.path.name == ArtifactCache.key(kind, fp32)
    _, bf16 = spec_for(BF16_CPU)
    _, gpu = spec_for(BF16_GPU)
    assert bf16 == {**fp32, "compute": {"device": "cpu", "precision": "bf16"}}
    assert len({ArtifactCache.key(kind, s) for s in (fp32, bf16, gpu)}) == 3


def test_policy_and_sample_keys_move_with_precision(tiny):
    from harness.optimize.study import bon_samples

    def keys(compute):
        policy = instantiate(tiny_policy_cfg())
        place(compute, policy)
        kind, sft = asked_spec(lambda cache: policy.prepare(cache, tiny.data, seed=0))
        assert kind == "policy_tiny"
        policy._spec = sft  # as prepare leaves it, without building the weights
        kind, samples = asked_spec(lambda cache: bon_samples(policy, tiny.data, cache, 0, n_prompts=2, n_samples=2))
        assert kind == "bon_samples"
        return sft, samples

    sft, samples = keys(CPU)
    # Today's keys on the CPU in fp32 (no "compute" anywhere), those of the policy the tiny cache holds.
    assert "compute" not in sft and "compute" not in samples
    assert set(sft) == {"policy", "sft", "world", "seed"}
    assert samples["policy"] == {**sft, "temperature": 1.0, "max_new_tokens": 12, "generation_batch_size": 64}
    for compute in (BF16_CPU, BF16_GPU):
        sft_b, samples_b = keys(compute)
        assert ArtifactCache.key("policy_tiny", sft_b) != ArtifactCache.key("policy_tiny", sft)
        assert ArtifactCache.key("bon_samples", samples_b) != ArtifactCache.key("bon_samples", samples)
        assert samples_b["policy"]["compute"] == {"device": compute.device.type, "precision": "bf16"}


def test_pretrained_policy_samples_key_on_precision_not_its_weights():
    """A pretrained policy's weights are not trained here, but its samples are drawn on the job's compute."""
    from harness.optimize.policy import Policy

    policy = Policy(temperature=1.0, max_new_tokens=4, generation_batch_size=8)
    policy._spec = {"policy": {"weights": "w"}, "seed": 0}
    fp32 = policy.cache_spec()
    assert fp32 == {"policy": {"weights": "w"}, "seed": 0, "temperature": 1.0, "max_new_tokens": 4,
                    "generation_batch_size": 8}
    policy.compute = BF16_GPU
    assert policy.cache_spec() == {**fp32, "compute": {"device": "cuda", "precision": "bf16"}}


def test_ensemble_member_key_moves_with_device_precision_and_processes(tiny, monkeypatch):
    from harness import parallel

    ctx = tiny.ctx()
    ens = EnsembleRM("mean", k=2)
    fp32 = ens.member_spec(ctx, member=1)
    assert "compute" not in fp32 and "parallel" not in fp32
    # Today's member spec: exactly the fields that determined a member before devices existed.
    assert set(fp32) == {"data", "backbone", "max_length", "finetune", "train", "member_seeds"}
    assert fp32["train"] == dataclasses.asdict(ctx.train)
    keys = {ArtifactCache.key("ens_member", fp32)}
    for compute in (BF16_CPU, BF16_GPU, resolve_compute("cpu", "fp32", "on")):
        ens.compute = compute
        spec = ens.member_spec(ctx, member=1)
        assert {k: v for k, v in spec.items() if k != "compute"} == fp32
        keys.add(ArtifactCache.key("ens_member", spec))
    assert len(keys) == 4
    ens.compute = CPU
    monkeypatch.setattr(parallel, "active", lambda: True)
    monkeypatch.setattr(parallel, "world_size", lambda: 2)
    two = ens.member_spec(ctx, member=1)
    assert two == {**fp32, "parallel": {"processes": 2, "strategy": "ddp"}}


def test_place_reaches_reward_models_inside_a_reward_model():
    """UMM's merged RM trains and scores its MoE itself (harness/archs/umm.py): the MoE must run where the job put
    the RM, not on the CPU default."""
    from conftest import compose

    rm = instantiate(compose(["arch=umm"]).arch, _convert_="all")
    assert rm.moe.compute is CPU
    place(BF16_GPU, rm)
    assert rm.compute is BF16_GPU and rm.moe.compute is BF16_GPU
