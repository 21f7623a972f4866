"""Scoring throughput per architecture (issue 11, item 2d): sequences/s of ``RewardModel.score`` (batched, length
order, under ``torch.inference_mode``) on the same test sequences, for every conf/arch/*.yaml.

    python benchmarks/score_throughput.py [--archs single,...] [--fit-pairs 400] [--repeats 3] [hydra overrides...]

Each architecture is built from its own YAML (as a job builds it) on the configured backbone and fitted on a tiny
budget: the first ``--fit-pairs`` training pairs, one epoch (its own phases keep their YAML settings). Scoring
speed depends on the architecture's shape (members, experts, adapters, routing), not on how well its weights are
trained, so a tiny fit measures the same scoring cost as a full one; its accuracy is meaningless and not printed.
Trained parts go to a scratch cache (deleted at the end), never into the real one. Data and backbone come from the
configured cache. Timed: scoring the test split's chosen and rejected sequences; ``--repeats`` rounds over all
architectures in turn (after one untimed warm-up round), median per architecture. Every number comes from this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from harness.archs.base import FitContext, TrainConfig  # noqa: E402
from harness.cache import ArtifactCache  # noqa: E402
from harness.data.schema import encode_pairs  # noqa: E402
from harness.job import build  # noqa: E402
from harness.seeds import set_seed  # noqa: E402

ALL_ARCHS = sorted(p.stem for p in (ROOT / "conf" / "arch").glob("*.yaml"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default=",".join(ALL_ARCHS), help="comma-separated conf/arch names (default: all)")
    p.add_argument("--fit-pairs", type=int, default=400, help="training pairs of the tiny fit")
    p.add_argument("--val-pairs", type=int, default=200, help="validation pairs of the tiny fit")
    p.add_argument("--repeats", type=int, default=3, help="timed scoring rounds over all architectures")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("overrides", nargs="*", help="hydra overrides of the job config (data, backbone, eval, ...)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = sorted(set(archs) - set(ALL_ARCHS))
    if unknown:
        raise SystemExit(f"--archs: unknown {unknown}; conf/arch has {ALL_ARCHS}")
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfgs = {a: compose("config", overrides=[f"arch={a}", *args.overrides]) for a in archs}
    cfg = cfgs[archs[0]]
    seed = int(cfg.seed)
    cache = ArtifactCache(cfg.cache_dir)
    data = build(cfg.data, "data").prepare(cache, seed)
    backbone = build(cfg.backbone, "backbone").prepare(cache, lambda n: data.corpus(n, seed), seed,
                                                       data.world_spec(seed))
    train_ds = data.splits["train"].select(range(min(args.fit_pairs, len(data.splits["train"]))))
    val_ds = data.splits["val"].select(range(min(args.val_pairs, len(data.splits["val"]))))

    def encode(ds):
        return encode_pairs(ds, backbone.tokenizer, backbone.join, data.domains, backbone.max_length)

    train, val, test = encode(train_ds), encode(val_ds), encode(data.splits["test"])
    n_seqs = 2 * len(test)
    train_cfg = TrainConfig(**{**cfg.train, "epochs": 1, "evals_per_epoch": 1})
    train_cfg.validate()
    batch_size = int(cfg.eval.batch_size)
    real_tokens = int(test.chosen.lengths.sum() + test.rejected.lengths.sum())
    print(f"backbone {cfg.backbone._target_.rsplit('.', 1)[-1]} hidden {backbone.hidden_size} | tiny fit on "
          f"{len(train)} pairs, 1 epoch | scoring {n_seqs} test sequences ({real_tokens:,} real tokens), batch "
          f"{batch_size} | threads {args.threads} | load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
          flush=True)

    fitted, fit_s = {}, {}
    with tempfile.TemporaryDirectory(prefix="score-bench-") as scratch:
        # Trained members/experts are keyed by the data spec, which does not know about the --fit-pairs subset:
        # a scratch cache keeps them out of the real one.
        scratch_cache = ArtifactCache(Path(scratch) / "cache")
        for a in archs:
            ctx = FitContext(backbone=backbone, train=train_cfg, cache=scratch_cache, seed=seed, domains=data.domains,
                             data_spec={**data.spec(seed), "fit_pairs": len(train)},
                             # the fitted subset as the train split: raw rows line up with the encoded pairs
                             data=SimpleNamespace(splits={"train": train_ds}, world=getattr(data, "world", None)),
                             artifact_dir=Path(scratch) / a)
            (Path(scratch) / a).mkdir()
            arch = build(cfgs[a].arch, "arch")
            set_seed(seed)
            t0 = time.perf_counter()
            arch.fit(train, val, ctx)
            fit_s[a] = time.perf_counter() - t0
            fitted[a] = arch
            print(f"fitted {a} in {fit_s[a]:.1f} s", flush=True)

        def score_all(arch) -> float:
            t0 = time.perf_counter()
            arch.score(test.chosen, batch_size)
            arch.score(test.rejected, batch_size)
            return time.perf_counter() - t0

        for a in archs:  # untimed warm-up round
            score_all(fitted[a])
        seconds: dict[str, list[float]] = {a: [] for a in archs}
        for rep in range(args.repeats):
            order = archs[rep % len(archs):] + archs[: rep % len(archs)]
            for a in order:
                seconds[a].append(score_all(fitted[a]))

        print(f"\n{'arch':<9} {'params total':>12} {'params active':>13} {'median s':>9} {'seq/s':>8} "
              f"{'vs single':>9} {'real tok/s':>10}")
        base = statistics.median(seconds["single"]) if "single" in seconds else None
        for a in archs:
            counts = fitted[a].param_counts()
            med = statistics.median(seconds[a])
            rel = f"{base / med:>9.3f}" if base else f"{'-':>9}"
            print(f"{a:<9} {counts['total']:>12,} {counts['active']:>13,} {med:>9.3f} {n_seqs / med:>8.0f} {rel} "
                  f"{real_tokens / med:>10,.0f}")
    print("vs single: seq/s relative to single's (1 = as fast, 0.2 = five times slower)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
