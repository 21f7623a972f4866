"""The device / precision / packing keys (harness/device.py): resolution, errors naming the key, autocast."""

import pytest
import torch
from conftest import compose

from harness.device import CPU, compute_of, resolve_compute


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine that claims two CUDA GPUs with bf16 (nothing is allocated on them by these tests)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_defaults_are_in_the_config_and_resolve_here():
    cfg = compose()
    assert (cfg.device, cfg.precision, cfg.packing) == ("auto", "fp32", "auto")
    compute = compute_of(cfg)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert compute.device.type == expected and compute.precision == "fp32"


def test_cpu_fp32_adds_nothing():
    compute = resolve_compute("cpu", "fp32")
    assert compute.device == torch.device("cpu") and compute.grad_scaler() is None
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with compute.autocast():
        out = a @ b
    assert out.dtype == torch.float32 and torch.equal(out, a @ b)
    assert CPU.device.type == "cpu" and CPU.is_fp32 and CPU.packing == "off"


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_autocasts_over_fp32_weights(precision, dtype):
    compute = resolve_compute("cpu", precision)
    layer = torch.nn.Linear(8, 8)
    with compute.autocast():
        out = layer(torch.randn(2, 8))
    assert out.dtype == dtype and layer.weight.dtype == torch.float32
    scaler = compute.grad_scaler()
    assert (scaler is not None) == (precision == "fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "CUDA:1"])
def test_missing_gpu_names_the_key(device):
    with pytest.raises(ValueError, match=rf"device='{device}': no CUDA GPU is visible.*use device=cpu"):
        resolve_compute(device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="the machine has an Apple GPU")
def test_missing_mps_names_the_key():
    with pytest.raises(ValueError, match="device='mps': no Apple GPU"):
        resolve_compute("mps")


@pytest.mark.parametrize("key,value,match", [
    ("device", "tpu", r"device='tpu' must be one of auto \| cpu \| cuda \| cuda:N \| mps"),
    ("precision", "fp8", r"precision='fp8' must be one of \['fp32', 'bf16', 'fp16'\]"),
    ("packing", "yes", r"packing='yes' must be one of \['auto', 'on', 'off'\]"),
])
def test_bad_values_name_the_key(key, value, match):
    with pytest.raises(ValueError, match=match):
        resolve_compute(**{key: value})


def test_gpu_index_and_local_rank(two_gpus, monkeypatch):
    assert resolve_compute("cuda").device == torch.device("cuda", 0)
    assert resolve_compute("cuda:1").device == torch.device("cuda", 1)
    assert resolve_compute("auto", "bf16").device == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"device='cuda:2': only 2 GPU\(s\) are visible"):
        resolve_compute("cuda:2")
    with pytest.raises(ValueError, match="device='cuda:x' must be one of"):
        resolve_compute("cuda:x")
    # torchrun: each process takes the GPU of its LOCAL_RANK; a fixed index cannot serve several processes.
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resolve_compute("cuda").device == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="device='cuda:0' with several processes"):
        resolve_compute("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match="LOCAL_RANK=2 but only 2 GPU"):
        resolve_compute("cuda")


def test_bf16_on_a_gpu_without_it(two_gpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ValueError, match="precision=bf16: Tesla V100 has no bf16 support; use precision=fp16"):
        resolve_compute("cuda", "bf16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_a_job_asking_for_a_missing_gpu_is_a_user_error_before_anything_is_built(tmp_path):
    from harness.job import run_job

    cfg = compose(["device=cuda:1", "precision=bf16", f"cache_dir={tmp_path / 'cache'}"])
    metrics = run_job(cfg, tmp_path / "job", {}, ["device=cuda:1"])
    assert metrics["status"] == "user_error"
    assert metrics["error"].startswith("device='cuda:1': no CUDA GPU is visible")
    assert not (tmp_path / "cache").exists()  # no data, no backbone: it failed in validation


def test_gpu_profile_composes_with_its_budgets():
    cfg = compose(["+profile=gpu", "arch=ens_mean"])
    assert (cfg.device, cfg.precision, cfg.backbone.finetune) == ("cuda", "bf16", "full")
    assert cfg.data.n_train == 20000 and cfg.opt.bon.n_prompts * cfg.opt.bon.n_samples == 64 * 128
    assert cfg.opt.ppo.steps == 200 and cfg.arch._target_.endswith("EnsembleRM")
