"""Shared fixtures: a tiny prepared world + backbone (seconds, cached per test session) and Hydra composition."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

TINY_DATA = dict(n_train=400, n_val=100, n_test=200)
TINY_BACKBONE = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_length=96,
                     pretrain_steps=30, pretrain_batch_size=32, pretrain_lr=3e-3, pretrain_sequences=500,
                     lora_targets=["q_proj", "v_proj"])
TINY_TRAIN = dict(lr=1e-3, weight_decay=0.0, batch_size=32, epochs=1, warmup=0.0, max_grad_norm=1.0,
                  evals_per_epoch=1, patience=2, bucket_chunks=4)


def compose(overrides: list[str] | None = None, return_hydra_config: bool = False):
    """The job config as `python -m harness <overrides>` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return hydra_compose("config", overrides=overrides or [], return_hydra_config=return_hydra_config)


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny(cache_root):
    """A prepared tiny world, backbone and encoded splits, plus a FitContext factory."""
    from harness.archs.base import FitContext, TrainConfig
    from harness.backbones import TinyBackbone
    from harness.cache import ArtifactCache
    from harness.data.schema import encode_pairs
    from harness.data.synthetic import SyntheticData
    from harness.labelers.oracle import OracleLabeler

    cache = ArtifactCache(cache_root)
    data = SyntheticData(**TINY_DATA, world={"calibration_pairs": 500}).prepare(cache, seed=0)
    backbone = TinyBackbone(**TINY_BACKBONE).prepare(cache, lambda n: data.corpus(n, 0), 0, data.world_spec(0))

    def encode(split):
        return encode_pairs(data.splits[split], backbone.tokenizer, backbone.join, data.domains,
                            backbone.max_length)

    class Tiny:
        pass

    t = Tiny()
    t.cache, t.data, t.backbone = cache, data, backbone
    t.train, t.val, t.test = encode("train"), encode("val"), encode("test")

    def ctx(**overrides) -> FitContext:
        """A FitContext on the tiny world; keys of ``train`` override TINY_TRAIN, the rest FitContext fields."""
        train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
        train_cfg = TrainConfig(**{**TINY_TRAIN, **{k: v for k, v in overrides.items() if k in train_keys}})
        fields = dict(backbone=backbone, train=train_cfg, cache=cache, seed=0, domains=data.domains,
                      data_spec=data.spec(0), labeler=OracleLabeler(), train_dataset=data.splits["train"],
                      world=data.world)
        return FitContext(**{**fields, **{k: v for k, v in overrides.items() if k not in train_keys}})

    t.ctx = ctx
    return t



# Pairs per split of the learnable set: enough per domain (5 domains) that DMoERM trains capability experts
# (each point keeps ~2/3 of its domain's pairs after swap-and-agree, and needs arch.min_expert_pairs of them).
LEARNABLE_SIZES = {"train": 150, "val": 50, "test": 100}


@pytest.fixture(scope="session")
def learnable(tiny):
    """Tiny-world pairs made trivially learnable: every chosen response ends with a marker word that no response
    of the tiny world uses. Raw splits (``datasets``, for labelers) and encoded pairs, as ``tiny`` has them."""
    from harness.data.schema import encode_pairs

    used = {word for split in tiny.data.splits.values() for side in ("chosen", "rejected") for text in split[side]
            for word in text.split()}
    vocab = tiny.backbone.tokenizer.get_vocab()
    # The lowest-id word the world never puts in a response: deterministic, and a single known token.
    marker = min((w for w in vocab if w.isalpha() and w not in used), key=vocab.get)

    class Learnable:
        pass

    t = Learnable()
    t.marker = marker
    for split, n in LEARNABLE_SIZES.items():
        raw = tiny.data.splits[split].select(range(n)).map(lambda row: {"chosen": f"{row['chosen']} {marker}"})
        encoded = encode_pairs(raw, tiny.backbone.tokenizer, tiny.backbone.join, tiny.data.domains,
                               tiny.backbone.max_length)
        last = encoded.chosen.ids[torch.arange(n), encoded.chosen.lengths - 1]
        assert (last == vocab[marker]).all(), f"the marker {marker!r} is not the last token of every chosen"
        setattr(t, f"{split}_dataset", raw)
        setattr(t, split, encoded)
    return t


# Command-line overrides that make a whole job take seconds (tiny world, backbone, policy and budgets).
TINY_OVERRIDES = [
    "data.n_train=300", "data.n_val=100", "data.n_test=150", "data.world.calibration_pairs=300",
    "backbone.hidden_size=32", "backbone.intermediate_size=64", "backbone.pretrain_steps=20",
    "backbone.pretrain_sequences=400", "train.epochs=1", "train.evals_per_epoch=1", "threads=1",
]

# A smoke-size seeded sweep (two archs, a small BoN) that CI checks against baselines/ci.json.
CI_SWEEP = [
    "-m", "arch=single,more", "opt=bon", *TINY_OVERRIDES,
    "policy.hidden_size=32", "policy.intermediate_size=64", "policy.sft_steps=40", "policy.sft_sequences=400",
    "opt.bon.n_prompts=10", "opt.bon.n_samples=16", "opt.bon.ns=[1,2,4,8,16]",
    # Enough data and steps that the RMs learn something (a baseline at chance would hide regressions).
    "data.n_train=1500", "train.epochs=2", "backbone.pretrain_steps=150",
]
