"""One job, top to bottom: data -> backbone -> fit the architecture -> evaluate -> optimize -> write results.

A failure at any point still leaves a metrics.json with status "failed" and the error; a rerun of a job
whose metrics.json says "ok" for the same config returns it without recomputing (resume).
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .archs.base import FitContext, TrainConfig
from .cache import ArtifactCache
from .data.schema import drop_identical_inputs, encode_pairs, input_report
from .evaluate import preference_accuracy
from .export import EXPORT_DIR, RewardScorer, export_reward_model, prompt_template_of
from .loggers import MetricLogger
from .progress import Stages, config_name
from .provenance import provenance
from .results import read_metrics, write_curves, write_metrics
from .rewardbench import check_benchmarks, evaluate_benchmarks

log = logging.getLogger(__name__)


def build(node: DictConfig, where: str, **kwargs):
    """``hydra.utils.instantiate`` with errors that name the config group and the offending key."""
    try:
        return instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise ValueError(f"{where}: {cause}") from e


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_job(cfg: DictConfig, job_dir: Path, choices: dict, overrides: list[str]) -> dict:
    job_dir = Path(job_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    previous = read_metrics(job_dir) if (job_dir / "metrics.json").exists() else None
    if previous and previous.get("status") == "ok" and previous.get("config") == resolved:
        log.info("job already done in %s: not recomputed", job_dir)
        previous["resumed"] = True
        return previous

    metrics: dict = {"choices": choices, "seed": int(cfg.seed), "status": "running", "error": None,
                     "overrides": overrides, "job_dir": str(job_dir), "config": resolved,
                     **provenance()}  # versions + git commit: what produced the numbers, failed jobs too
    t_job = time.perf_counter()
    metric_logger = MetricLogger()
    try:
        metric_logger = build(cfg.logger, "logger", job_dir=str(job_dir))
        metric_logger.log_config(resolved)
        metrics.update(_run(cfg, job_dir, metric_logger))
        metrics["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure becomes a status row, never a lost sweep
        metrics["status"] = "failed"
        metrics["error"] = f"{type(e).__name__}: {e}"
        log.error("job failed: %s\n%s", metrics["error"], traceback.format_exc())
    metrics.setdefault("timing_s", {})["total"] = time.perf_counter() - t_job
    metric_logger.final(metrics)
    metric_logger.close()
    write_metrics(job_dir, metrics)
    return metrics


def _run(cfg: DictConfig, job_dir: Path, metric_logger: MetricLogger) -> dict:
    if cfg.threads is not None:
        if int(cfg.threads) < 1:
            raise ValueError(f"threads={cfg.threads} must be >= 1 or null")
        torch.set_num_threads(int(cfg.threads))
    seed = int(cfg.seed)
    set_seed(seed)
    cache = ArtifactCache(cfg.cache_dir)
    train_cfg = TrainConfig(**cfg.train)
    train_cfg.validate()
    timing: dict[str, float] = {}

    studies = dict(cfg.get("opt") or {})
    # data, backbone, reward model, evaluation; then the policy and each study.
    stages = Stages(4 + (1 + len(studies) if studies else 0))
    t0 = time.perf_counter()
    stages.next(f"data: {config_name(cfg.data)} preference pairs (built once per seed, then cached)")
    data = build(cfg.data, "data").prepare(cache, seed)
    if "gold" in cfg:  # gold=rm relabels the data with a gold RM (harness/gold.py); gold=synthetic keeps it
        data = build(cfg.gold, "gold").apply(data, cfg.policy, cache, seed)
    benchmarks = OmegaConf.to_container(cfg.eval.benchmarks, resolve=True) if cfg.eval.get("benchmarks") else []
    check_benchmarks(benchmarks)  # a missing file fails now, not after training
    if studies and not hasattr(data, "gold"):
        # Checked before anything is trained: BoN and PPO are read in gold units (the world's, or gold=rm's).
        raise ValueError(f"opt={list(studies)} needs a gold reward: data=synthetic has one, or give a gold RM "
                         f"(gold=rm gold.path=...); data={data.name} has none: run it with opt=none")
    stages.next(f"backbone: {config_name(cfg.backbone)} (pre-trained or converted once, then cached)")
    backbone = build(cfg.backbone, "backbone").prepare(
        cache, corpus=lambda n: data.corpus(n, seed), seed=seed, world_spec=data.world_spec(seed)
    )
    timing["prepare"] = time.perf_counter() - t0

    inputs: dict[str, dict] = {}  # per split: pairs, truncated, identical inputs (data/schema.py)

    def encode(split: str):
        pairs = encode_pairs(data.splits[split], backbone.tokenizer, backbone.join, data.domains,
                             backbone.max_length)
        inputs[split] = input_report(pairs, split, backbone.max_length)
        return pairs

    train, val, test = encode("train"), encode("val"), encode("test")
    # Identical inputs give no gradient: training leaves them out; evaluation keeps them (a tie counts wrong).
    train, data.splits["train"], inputs["train"]["dropped"] = drop_identical_inputs(train, data.splits["train"],
                                                                                    backbone.max_length)
    labeler = build(cfg.labeler, "labeler") if "labeler" in cfg else None
    ctx = FitContext(backbone=backbone, train=train_cfg, cache=cache, seed=seed, domains=data.domains,
                     data_spec=data.spec(seed), labeler=labeler, train_dataset=data.splits["train"],
                     world=getattr(data, "world", None), artifact_dir=job_dir, metric_logger=metric_logger)
    arch = build(cfg.arch, "arch")

    set_seed(seed)
    t0 = time.perf_counter()
    stages.next(f"reward model: training {type(arch).__name__} on {len(train)} pairs")
    arch.fit(train, val, ctx)
    timing["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stages.next(f"reward model: evaluating on {len(test)} test pairs")
    r_chosen, r_rejected = arch.score(test.chosen, cfg.eval.batch_size), arch.score(test.rejected,
                                                                                    cfg.eval.batch_size)
    timing["score_per_1k"] = (time.perf_counter() - t0) / (2 * len(test)) * 1000
    ds = data.splits["test"]
    gold = ("gold_chosen" in ds.column_names) or None
    accuracy = preference_accuracy(
        r_chosen.numpy(), r_rejected.numpy(), ds["domain"] if "domain" in ds.column_names else [""] * len(ds),
        ds["gold_chosen"] if gold else None, ds["gold_rejected"] if gold else None,
    )
    out = {"accuracy": accuracy, "data": inputs, "params": arch.param_counts(), "timing_s": timing,
           "train_log": [r for r in ctx.logs if "best_val_acc" in r]}
    out.update(arch.extra_metrics(test=test, dataset=ds))
    if benchmarks:
        t0 = time.perf_counter()
        scorer = RewardScorer(arch, backbone.tokenizer, prompt_template_of(backbone), backbone.max_length,
                              cfg.eval.batch_size)
        out["benchmarks"] = evaluate_benchmarks(scorer, benchmarks)
        timing["benchmarks"] = time.perf_counter() - t0
    if cfg.get("export", True):
        out["export"] = export_reward_model(arch, backbone, cfg.arch, job_dir / EXPORT_DIR, domains=data.domains,
                                            seed=seed, batch_size=cfg.eval.batch_size, backbone_cfg=cfg.backbone,
                                            dense=cfg.get("export_dense", True))
        timing["export"] = out["export"]["seconds"]
    if cfg.eval.lm_eval_tasks:
        from .lmeval import rm_lm_eval

        out["lm_eval_rm"] = rm_lm_eval(arch, backbone, list(cfg.eval.lm_eval_tasks), ds, job_dir,
                                       cfg.eval.lm_eval_limit, cfg.eval.batch_size, seed)

    curves: list[dict] = []
    if studies:
        from .optimize.study import run_studies

        t0 = time.perf_counter()
        results, curves = run_studies(studies, arch=arch, data=data, backbone=backbone, policy_cfg=cfg.policy,
                                      cache=cache, seed=seed, eval_batch_size=cfg.eval.batch_size,
                                      metric_logger=metric_logger, stages=stages)
        metric_logger.curve_rows(curves)
        out.update(results)
        timing["optimize"] = time.perf_counter() - t0
    write_curves(job_dir, curves)
    return out
