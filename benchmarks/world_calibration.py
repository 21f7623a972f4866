"""Calibrate the synthetic world (issue 3): human-gold agreement, one RM's held-out accuracy against gold, and
the multi-task disturbance — one RM trained on all domains against one specialist RM per domain trained on
that domain's pairs only (same per-domain data, so each specialist gets 1/n of the joint model's steps).

    python benchmarks/world_calibration.py [hydra overrides...]     e.g. data.world.marker_rate=1.0

Prints a table; every number comes from this run.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from harness.archs.base import FitContext, TrainConfig  # noqa: E402
from harness.archs.single import SingleRM  # noqa: E402
from harness.cache import ArtifactCache  # noqa: E402
from harness.data.schema import encode_pairs  # noqa: E402
from harness.evaluate import preference_accuracy  # noqa: E402
from harness.job import build, set_seed  # noqa: E402


def main(overrides: list[str]) -> None:
    conf = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(version_base="1.3", config_dir=conf):
        cfg = compose("config", overrides=overrides)
    seed = int(cfg.seed)
    cache = ArtifactCache(cfg.cache_dir)
    data = build(cfg.data, "data").prepare(cache, seed)
    backbone = build(cfg.backbone, "backbone").prepare(cache, lambda n: data.corpus(n, seed), seed,
                                                      data.world_spec(seed))
    enc = {s: encode_pairs(data.splits[s], backbone.tokenizer, backbone.join, data.domains, backbone.max_length)
           for s in ("train", "val", "test")}
    train_cfg = TrainConfig(**cfg.train)
    ctx = FitContext(backbone=backbone, train=train_cfg, cache=cache, seed=seed, domains=data.domains,
                     data_spec=data.spec(seed))
    test_ds = data.splits["test"]
    domains = np.asarray(test_ds["domain"])

    set_seed(seed)
    t0 = time.perf_counter()
    joint = SingleRM()
    joint.fit(enc["train"], enc["val"], ctx)
    joint_s = time.perf_counter() - t0
    r_c, r_r = joint.score(enc["test"].chosen), joint.score(enc["test"].rejected)
    acc_joint = preference_accuracy(r_c, r_r, domains, test_ds["gold_chosen"], test_ds["gold_rejected"])

    spec_c, spec_r = torch.empty(len(domains)), torch.empty(len(domains))
    spec_s = 0.0
    for i in range(len(data.domains)):
        tr = enc["train"].subset(torch.nonzero(enc["train"].chosen.domain == i).squeeze(1))
        va = enc["val"].subset(torch.nonzero(enc["val"].chosen.domain == i).squeeze(1))
        te_idx = torch.nonzero(enc["test"].chosen.domain == i).squeeze(1)
        te = enc["test"].subset(te_idx)
        set_seed(seed)
        t0 = time.perf_counter()
        rm = SingleRM()
        rm.fit(tr, va, ctx)
        spec_s += time.perf_counter() - t0
        spec_c[te_idx], spec_r[te_idx] = rm.score(te.chosen), rm.score(te.rejected)
    acc_spec = preference_accuracy(spec_c, spec_r, domains, test_ds["gold_chosen"], test_ds["gold_rejected"])

    print(f"overrides: {overrides}")
    print(f"human-gold agreement (test pairs): {acc_joint['human_gold_agreement']:.3f}   "
          f"(BT temperature {data.world.human_temperature:.3f})")
    print(f"train time: joint {joint_s:.0f} s, specialists {spec_s:.0f} s in all")
    print(f"{'domain':<15}{'joint':>8}{'specialist':>12}{'spec-joint':>12}   (accuracy vs gold, test)")
    for d in data.domains:
        j, s = acc_joint["gold"]["per_domain"][d], acc_spec["gold"]["per_domain"][d]
        print(f"{d:<15}{j:>8.3f}{s:>12.3f}{s - j:>+12.3f}")
    j, s = acc_joint["gold"]["overall"], acc_spec["gold"]["overall"]
    print(f"{'overall':<15}{j:>8.3f}{s:>12.3f}{s - j:>+12.3f}")
    print(f"vs human labels: joint {acc_joint['human']['overall']:.3f}, specialists {acc_spec['human']['overall']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
