"""The real-model backbones (conf/backbone/{minilm,smollm2,hf}.yaml) load offline from the installed wheels and
give reward models; a hub id without the network is a clear error."""

import math

import pytest
import torch
from conftest import compose

from harness.backbones import PretrainedBackbone
from harness.data.schema import encode_sequences
from harness.job import build


def _prepared(tiny, name: str, *overrides: str) -> PretrainedBackbone:
    cfg = compose([f"backbone={name}", *overrides]).backbone
    backbone = build(cfg, "backbone")
    return backbone.prepare(tiny.cache, corpus=lambda n: tiny.data.corpus(n, 0), seed=0)


def _rewards(backbone: PretrainedBackbone, tiny, n: int = 3, seed: int = 0) -> torch.Tensor:
    """(n,) rewards of a fresh reward_model(seed) on n world (prompt, response) texts, right-padded."""
    prompts, responses = tiny.data.corpus(n, 0)
    seqs = encode_sequences(backbone.tokenizer, backbone.join, prompts, responses, [""] * n, {},
                            backbone.max_length)
    model = backbone.reward_model(seed=seed).eval()
    mask = (torch.arange(seqs.ids.shape[1])[None, :] < seqs.lengths[:, None]).long()
    with torch.no_grad():
        return model(input_ids=seqs.ids, attention_mask=mask).logits.squeeze(-1)


def test_minilm_loads_offline_and_scores(tiny):
    backbone = _prepared(tiny, "minilm")
    assert backbone.lora_targets == ["query", "value"] and backbone.hidden_size == 384
    reward = _rewards(backbone, tiny)
    assert reward.shape == (3,) and torch.isfinite(reward).all()
    # A different seed gives a different new head, hence different rewards: the head really is fresh.
    assert not torch.allclose(reward, _rewards(backbone, tiny, seed=1))


def test_hf_hub_id_offline_is_a_clear_error(tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE.*local path"):
        _prepared(tiny, "hf", "backbone.path=HuggingFaceTB/SmolLM2-135M-Instruct")


def test_hf_needs_a_path():
    cfg = compose(["backbone=hf"]).backbone
    with pytest.raises(Exception, match="path"):
        build(cfg, "backbone")


def test_hf_local_directory_loads(tiny):
    """`backbone=hf` with a local directory: here the tiny backbone's own cached weights."""
    backbone = _prepared(tiny, "hf", f"backbone.path={tiny.backbone.path}", "backbone.max_length=96")
    assert backbone.hidden_size == tiny.backbone.hidden_size
    reward = _rewards(backbone, tiny)
    assert reward.shape == (3,) and torch.isfinite(reward).all()


@pytest.mark.slow
def test_smollm2_gguf_converts_once_and_pools_last_real_token(tiny):
    """The GGUF is dequantised once (~30 s) into the cache; pad == eos; the head reads the last real token."""
    backbone = _prepared(tiny, "smollm2")
    assert backbone.tokenizer.pad_token_id == backbone.tokenizer.eos_token_id
    assert backbone.hidden_size == 576 and backbone.lora_targets == ["q_proj", "v_proj"]
    hits = tiny.cache.stats["hits"]
    again = _prepared(tiny, "smollm2")
    assert again.path == backbone.path and tiny.cache.stats["hits"] == hits + 1
    reward = _rewards(backbone, tiny, n=2)
    assert reward.shape == (2,) and all(math.isfinite(r) for r in reward.tolist())
    # Right padding must not change a sequence's reward: the head pools its last real token, not a pad.
    prompts, responses = tiny.data.corpus(1, 0)
    enc = backbone.tokenizer([backbone.join(prompts[0], responses[0])], return_tensors="pt")
    pad = torch.full((1, 5), backbone.tokenizer.pad_token_id)
    model = backbone.reward_model(seed=0).eval()
    with torch.no_grad():
        plain = model(**enc).logits
        padded = model(input_ids=torch.cat([enc["input_ids"], pad], 1),
                       attention_mask=torch.cat([enc["attention_mask"], torch.zeros_like(pad)], 1)).logits
    assert torch.allclose(plain, padded, atol=1e-4)
