"""Shared fixtures and helpers: a tiny prepared world + backbone (seconds, cached per test session), a learnable
set, a tiny policy, Hydra composition, fake sweeps. Test files import helpers from here, never from each other."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

TINY_DATA = dict(n_train=400, n_val=100, n_test=200)
TINY_BACKBONE = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_length=96,
                     pretrain_steps=30, pretrain_batch_size=32, pretrain_lr=3e-3, pretrain_weight_decay=0.0,
                     pretrain_warmup=0.05, pretrain_max_grad_norm=1.0, pretrain_log_every=200,
                     pretrain_sequences=500, lora_targets=["q_proj", "v_proj"])
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
                      data_spec=data.spec(0), data=data)
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
    # The learnable splits as a prepared data source (FitContext.data): raw rows behind the encoded pairs.
    t.data = SimpleNamespace(splits={split: getattr(t, f"{split}_dataset") for split in LEARNABLE_SIZES},
                             world=tiny.data.world, domains=tiny.data.domains)
    return t


# ------------------------------------------------------------------------------ tiny policy
# A tiny SFT policy on the tiny world (seconds, cached like the backbone).
TINY_POLICY = dict(_target_="harness.optimize.policy.TinyPolicy", hidden_size=32, num_layers=2, num_heads=4,
                   intermediate_size=64, max_length=96, sft_steps=40, sft_batch_size=32, sft_lr=3e-3,
                   sft_weight_decay=0.0, sft_warmup=0.05, sft_max_grad_norm=1.0, sft_log_every=200,
                   sft_sequences=500, temperature=1.0, max_new_tokens=12, generation_batch_size=64)


def tiny_policy_cfg(**overrides):
    """The `policy` config node of the tiny policy, as a job receives it."""
    from omegaconf import OmegaConf

    return OmegaConf.create({**TINY_POLICY, **overrides})


def make_policy(tiny, **overrides):
    """The tiny policy, prepared (SFT-trained, or read from the tiny fixture's cache)."""
    from hydra.utils import instantiate

    return instantiate(tiny_policy_cfg(**overrides)).prepare(tiny.cache, tiny.data, seed=0)


# ------------------------------------------------------------------------------ arch knobs
# UMM-RM's constructor arguments on tiny sizes (conf/arch/umm.yaml's, with a shorter merge phase).
UMM_KNOBS = dict(num_experts=None, top_k=2, layers=None, expert_noise=0.0, router_init_std=0.02, s_max="max",
                 aux_loss_coef=0.01, experts_implementation="eager", merge_fraction=0.1,
                 merge_train={"lr": 0.05, "epochs": 2, "warmup": 0.0})


@pytest.fixture
def lm_eval_index(monkeypatch):
    """lm-eval's index of its bundled tasks, stood in by one that knows `arc_easy` only: building the real one
    takes ~20 s (the slow tests that run a bundled task build it)."""
    import lm_eval.tasks

    class BundledTasks:
        all_tasks = ["arc_easy"]

        def __init__(self, include_defaults: bool = True):
            pass

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", BundledTasks)


# ------------------------------------------------------------------------------ fitted and exported RMs
# Tiny budgets for fitting an arch on the tiny world: a few seconds per architecture.
EXPORT_SHRINK = {"ens_mean": ["arch.k=2"], "ens_wco": ["arch.k=2"], "ens_uwo": ["arch.k=2"], "warm": ["arch.m=2"],
                 "dmoerm": ["arch.phase1.epochs=1", "arch.phase2.epochs=1", "arch.phase3.epochs=1", "arch.r=4"],
                 "armo": ["arch.gating_train.epochs=2"], "single_judge_compute": ["arch.train.epochs=1"]}


@pytest.fixture(scope="session")
def exported(tiny, tmp_path_factory):
    """``exported(arch)`` -> (arch config, RM fitted on the tiny world, its export folder, export info), fitted
    and exported once per test session."""
    from harness.export import export_reward_model
    from harness.job import build

    done: dict = {}

    def get(name: str):
        if name not in done:
            cfg = compose([f"arch={name}", *EXPORT_SHRINK.get(name, [])])
            rm = build(cfg.arch, "arch")
            ctx = tiny.ctx(artifact_dir=tmp_path_factory.mktemp(f"job_{name}"))
            rm.fit(tiny.train, tiny.val, ctx)
            out = ctx.artifact_dir / "reward_model"
            info = export_reward_model(rm, tiny.backbone, cfg.arch, out, domains=tiny.data.domains, seed=0)
            done[name] = (cfg, rm, out, info)
        return done[name]

    return get


SERVER_STARTUP_S = 120  # a server imports torch and transformers on a shared 2-core machine


@contextlib.contextmanager
def serving(scorer, name: str = "rm"):
    """``scorer`` behind harness.serve's app on a free 127.0.0.1 port (uvicorn in a thread): yields the base URL."""
    import socket
    import threading
    import time

    import uvicorn

    from harness.serve import make_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(scorer, name), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + SERVER_STARTUP_S
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def post_json(url: str, body) -> tuple[int, dict]:
    """POST ``body`` (bytes as they are, anything else as JSON) over real HTTP: (status, decoded JSON answer)."""
    import json
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


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


# ------------------------------------------------------------------------------ fake sweeps
# Hand-written sweeps (several archs x 2 seeds, BoN + PPO curves, UMM's `unmerged` view, DMoERM's capability
# scores, one failed job) for the result, plot and regression tests: no training involved.

FAKE_DOMAINS = ("roleplay", "chitchat", "subjective_qa", "objective_qa", "text_creation")
FAKE_CAPABILITIES = {
    "roleplay": ("persona", "tone", "proactivity"),
    "chitchat": ("tone", "proactivity", "repetition"),
    "subjective_qa": ("keywords", "hedging", "length_fit", "richness"),
    "objective_qa": ("fact_correctness", "keywords", "length_fit"),
    "text_creation": ("richness", "repetition", "length_fit", "keywords"),
}
# arch -> (gold accuracy, params total, params active, BoN alpha, BoN beta)
FAKE_ARCHS = {
    "single": (0.70, 164_289, 164_289, 0.9, 0.35),
    "ens_mean": (0.72, 821_445, 821_445, 0.95, 0.30),
    "dmoerm": (0.78, 1_420_000, 410_000, 1.10, 0.25),
    "umm": (0.75, 164_289, 164_289, 1.00, 0.28),
    "more": (0.74, 420_000, 230_000, 1.0, 0.3),
}
FAKE_FAILED = ("more", 1)  # this (arch, seed) job fails
FAKE_BON_N = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FAKE_PPO_STEPS = tuple(range(0, 501, 50))


def fake_metrics(arch: str, seed: int, job_dir: Path) -> dict:
    acc, total, active, alpha, beta = FAKE_ARCHS[arch]
    rng = np.random.default_rng(1000 * seed + len(arch))
    base = {
        "choices": {"arch": arch, **({"arch/labeler": "oracle"} if arch == "dmoerm" else {}), "data": "synthetic",
                    "backbone": "tiny", "policy": "tiny", "opt": ["bon", "ppo"]},
        "seed": seed,
        "overrides": [f"arch={arch}", f"seed={seed}", "opt=[bon,ppo]"],
        "job_dir": str(job_dir),
        "config": {"arch": {"_target_": f"harness.archs.{arch}.X"}, "seed": seed},
    }
    if (arch, seed) == FAKE_FAILED:
        return {**base, "status": "failed", "error": "Traceback (most recent call last):\n  ...\n"
                "RuntimeError: CUDA out of memory (fake)"}

    def domain_acc(a):
        return {d: float(np.clip(a + rng.normal(0, 0.04), 0, 1)) for d in FAKE_DOMAINS}

    gold_acc = acc + rng.normal(0, 0.01)
    human_acc = 0.5 + (gold_acc - 0.5) * 0.6
    d_peak = alpha / (2 * beta)
    m = {
        **base,
        "status": "ok",
        "error": None,
        "accuracy": {"gold": {"overall": gold_acc, "per_domain": domain_acc(gold_acc)},
                     "human": {"overall": human_acc, "per_domain": domain_acc(human_acc)}},
        "params": {"total": total, "trainable": total, "active": active},
        "timing_s": {"train": 40.0 + seed, "score_per_1k": 0.9, "total": 55.0 + seed},
        "bon": {"alpha": alpha, "beta": beta, "d_peak": d_peak, "gold_peak": alpha * d_peak / 2,
                "final_gap": 1.1, "r2": 0.97, "observed_gold_peak": 1.0, "observed_d_peak": 1.5},
        # The same alpha/beta as fake_curves' PPO gold, so the fitted line lies on the data.
        "ppo": {"alpha": 0.32 * alpha, "beta": 0.4 * beta, "d_peak": 1.2, "gold_peak": 0.6 + 0.1 * alpha,
                "final_gap": float("nan"), "r2": 0.9, "observed_gold_peak": 0.6, "observed_d_peak": 1.2},
    }
    if arch == "umm":
        # UMM's MoE before the merge: more stored parameters, only gold accuracy reported.
        unmerged_gold = {"overall": gold_acc + 0.02, "per_domain": domain_acc(gold_acc + 0.02)}
        m["views"] = {"unmerged": {"accuracy": {"gold": unmerged_gold},
                                   "params": {"total": 520_000, "trainable": 520_000, "active": 270_000}}}
    if arch == "dmoerm":
        scores = {d: {c: float(0.6 + 0.3 * rng.random()) for c in caps} for d, caps in FAKE_CAPABILITIES.items()}
        m["explain"] = {"capability_scores": scores}
        m["fit"] = {"experts": {"roleplay": {"persona": {"pairs": 10, "trained": True}}}, "cost": {"passes": 4}}
    return m


def fake_curves(arch: str, seed: int) -> list[dict]:
    _, _, _, alpha, beta = FAKE_ARCHS[arch]
    rng = np.random.default_rng(7 + seed + len(arch))
    rows = []
    for n in FAKE_BON_N:
        kl = math.log(n) - (n - 1) / n
        d = math.sqrt(kl)
        gold = d * (alpha - beta * d)
        rows.append({"opt": "bon", "n": n, "kl": kl, "sqrt_kl": d,
                     "proxy": 1.3 * alpha * d + rng.normal(0, 0.03), "gold": gold + rng.normal(0, 0.05)})
    for step in FAKE_PPO_STEPS:
        kl = 0.012 * step * (1 + 0.1 * seed)
        d = math.sqrt(kl)
        gold = 0.4 * d * (0.8 * alpha - beta * math.log(d)) if d > 0 else 0.0
        rows.append({"opt": "ppo", "step": step, "kl": kl, "sqrt_kl": d,
                     "proxy": 1.2 * alpha * d + rng.normal(0, 0.03), "gold": gold + rng.normal(0, 0.04)})
    return rows


def make_sweep(root: Path, archs=tuple(FAKE_ARCHS), seeds=(0, 1), crashed: bool = False) -> Path:
    """A Hydra-like sweep dir: job dirs 0..N-1 with metrics.json, curves.csv and a .hydra/ stub.

    crashed=True adds one more job dir with only `.hydra/` (a job killed before writing anything).
    """
    from harness import results

    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    num = 0
    for arch in archs:
        for seed in seeds:
            job = root / str(num)
            (job / ".hydra").mkdir(parents=True)
            (job / ".hydra" / "config.yaml").write_text(f"seed: {seed}\n")
            m = fake_metrics(arch, seed, job)
            results.write_metrics(job, m)
            if m["status"] == "ok":
                results.write_curves(job, fake_curves(arch, seed))
            num += 1
    if crashed:
        job = root / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text("seed: 3\n")
        (job / ".hydra" / "overrides.yaml").write_text("- arch=rodos\n- seed=3\n")
        choices = {"arch": "rodos", "data": "synthetic", "hydra/launcher": "basic"}
        hydra_yaml = {"hydra": {"runtime": {"choices": choices}}}
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra_yaml))
    return root


# A hand-made jobs table with known paired differences (harness.stats / harness.claims tests).
PAIRED_SEEDS = range(5)


def paired_jobs_table(effects: dict[str, float], noise: float = 0.004, base: float = 0.70,
                      metric: str = "accuracy.gold.overall", extra: dict | None = None):
    """single at ``base`` + per-seed noise shared by every arch (the seed's world), each arch + its effect + a
    small arch-specific wobble: a paired design whose true differences are known."""
    rng = np.random.default_rng(0)
    seed_level = rng.normal(0, 0.02, size=len(PAIRED_SEEDS))
    rows = []
    for arch, effect in {"single": 0.0, **effects}.items():
        wobble = rng.normal(0, noise, size=len(PAIRED_SEEDS))
        wobble -= wobble.mean()  # the sample mean of the differences is exactly the effect
        for s in PAIRED_SEEDS:
            rows.append({"arch": arch, "seed": s, metric: base + seed_level[s] + effect + wobble[s],
                         **(extra or {})})
    import pandas as pd

    return pd.DataFrame(rows)
