"""Calibrate the synthetic world (issues 3 and 17): what the labels know about gold, and what a single RM makes of
them. Every number comes from this run (one seed, the default budgets unless overridden):

- human-gold agreement on the test pairs, and gold's unnamed share (the within-prompt variance of gold that no
  capability point names, measured on the test pairs' chosen-rejected gaps);
- the capability judges: kept fraction after swap-and-agree, kept labels' agreement with each point's true order,
  and how well the judge labels, aggregated per pair (a vote; the human-fitted weights of arch=single_judge),
  recover gold's order — against the human labels' agreement;
- Best-of-N of the joint `single` RM with the default policy and budget: gold and proxy per n (Gao units), the n
  where gold peaks and its drop from there to the largest n;
- the length/verbosity exploit (data.world.human_length_share): of the test pairs whose lengths differ, how often
  the human label, gold and the joint RM prefer the longer response; the within-prompt correlation with length of
  gold and of the joint RM on Best-of-N's samples, and the length of what Best-of-N picks at its largest n; the
  joint RM's style-controlled accuracy (harness/length_bias.py);
- the multi-task disturbance: one RM trained on all domains against one specialist RM per domain trained on that
  domain's pairs only (same per-domain data), test accuracy against gold per domain.

    python benchmarks/world_calibration.py [--skip-disturbance] [hydra overrides...]   e.g. data.world.unnamed_share=0.1

Prints a table; expect ~10 minutes on 2 cores with warm caches (the disturbance half of it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from harness.accuracy import preference_accuracy  # noqa: E402
from harness.archs.base import FitContext, TrainConfig  # noqa: E402
from harness.archs.single import SingleRM  # noqa: E402
from harness.archs.single_judge import fit_point_weights  # noqa: E402
from harness.cache import ArtifactCache  # noqa: E402
from harness.data.schema import encode_pairs  # noqa: E402
from harness.job import build  # noqa: E402
from harness.labelers.oracle import OracleLabeler  # noqa: E402
from harness.length_bias import sample_length_bias, style_controlled  # noqa: E402
from harness.optimize.study import BoNConfig, bon_study, proxy_scores  # noqa: E402
from harness.progress import quiet_third_party  # noqa: E402
from harness.seeds import set_seed  # noqa: E402
from harness.world.capabilities import response_length  # noqa: E402

JUDGE_PAIRS = 3000  # training pairs sent to the oracle for the judge statistics


def judge_report(data, seed: int) -> None:
    ds = data.splits["train"].select(range(min(JUDGE_PAIRS, len(data.splits["train"]))))
    result = OracleLabeler().label(ds, seed, world=data.world)
    s = result["stats"]
    print(f"judges ({len(ds)} train pairs, {s['asked']} labels): kept {s['kept_fraction']:.3f}, kept labels agree "
          f"with the true point order {s['agreement_with_truth']:.3f} (target data.world.judge_agreement="
          f"{data.world.config.judge_agreement}); kept on true ties {s['kept_on_true_ties']}")
    g_c, g_r = np.asarray(ds["gold_chosen"]), np.asarray(ds["gold_rejected"])
    decided, chosen_better = g_c != g_r, g_c > g_r
    domains = np.asarray(ds["domain"])
    for name in ("vote", "fitted"):
        says_chosen = np.ones(len(ds), dtype=bool)  # undecided: the human label (chosen) stands
        for d in sorted(set(domains)):
            rows = np.nonzero(domains == d)[0]
            labels = np.asarray([result["labels"][i] for i in rows], dtype=float)
            w = np.ones(labels.shape[1]) if name == "vote" else fit_point_weights(labels, 0.01, 25)
            score = labels @ w
            says_chosen[rows] = np.where(score != 0, score > 0, True)
        agree = (says_chosen == chosen_better)[decided].mean()
        print(f"  judge labels aggregated per pair ({name}) agree with gold {agree:.3f}; human labels "
              f"{chosen_better[decided].mean():.3f}")


def unnamed_report(data) -> None:
    ds = data.splits["test"]
    world = data.world
    named = np.array([sum(c) - sum(r) for c, r in zip(ds["cap_chosen"], ds["cap_rejected"], strict=True)])
    unnamed = np.array([world.unnamed(c, d) - world.unnamed(r, d)
                        for c, r, d in zip(ds["chosen"], ds["rejected"], ds["domain"], strict=True)])
    # Mean squares, not variances: a pair's gap has no sign of its own (the human label oriented these pairs).
    share = np.mean(unnamed ** 2) / np.mean((named + unnamed) ** 2)
    print(f"unnamed share of gold's within-prompt variance (test pairs): {share:.3f} (target "
          f"data.world.unnamed_share={world.config.unnamed_share}); scale per domain "
          + ", ".join(f"{d} {s:.2f}" for d, s in world.unnamed_scale.items()))


def bon_report(cfg, rm: SingleRM, data, backbone, cache: ArtifactCache, seed: int) -> dict:
    policy = instantiate(cfg.policy, _convert_="all")
    policy.prepare(cache, data, seed)
    bon_cfg = BoNConfig(**cfg.opt.bon)
    t0 = time.perf_counter()

    def score(prompts, responses, domains):
        return proxy_scores(rm, backbone, data, prompts, responses, domains, cfg.eval.batch_size)

    block, rows, initial = bon_study(bon_cfg, score, data, policy, cache, seed)
    golds = np.array([r["gold"] for r in rows])
    peak = int(np.argmax(golds))
    print(f"Best-of-N of the joint single RM ({bon_cfg.n_prompts} prompts x {bon_cfg.n_samples} samples, "
          f"{time.perf_counter() - t0:.0f} s), Gao et al.'s units ({bon_cfg.reward_scale} s.d.):")
    print("  n      " + "".join(f"{r['n']:>8d}" for r in rows))
    print("  proxy  " + "".join(f"{r['proxy']:>8.3f}" for r in rows))
    print("  gold   " + "".join(f"{r['gold']:>8.3f}" for r in rows))
    rising = bool(np.all(np.diff([r["proxy"] for r in rows]) >= 0))
    print(f"  gold peaks at n={rows[peak]['n']} ({golds[peak]:.3f}), then falls by {golds[peak] - golds[-1]:.3f} to "
          f"n={rows[-1]['n']}; proxy rises throughout: {rising}; within-prompt proxy-gold correlation "
          f"{block['within_prompt_corr']:.3f}")
    return initial


def length_report(rm: SingleRM, data, backbone, test_rewards, initial: dict, seed: int, batch_size: int) -> None:
    ds = data.splits["test"]
    n_c = np.array([response_length(r) for r in ds["chosen"]])
    n_r = np.array([response_length(r) for r in ds["rejected"]])
    g_c, g_r = np.asarray(ds["gold_chosen"]), np.asarray(ds["gold_rejected"])
    r_c, r_r = (np.asarray(r, dtype=float) for r in test_rewards)
    differ = n_c != n_r
    chosen_longer = n_c > n_r
    gold_decided = differ & (g_c != g_r)
    print(f"length exploit (data.world.human_length_share={data.world.config.human_length_share}): of the "
          f"{int(differ.sum())} test pairs whose lengths differ, the longer response is preferred by the human label "
          f"{chosen_longer[differ].mean():.3f}, by gold {((g_c > g_r) == chosen_longer)[gold_decided].mean():.3f}, "
          f"by the joint RM {((r_c > r_r) == chosen_longer)[differ & (r_c != r_r)].mean():.3f}")
    corr = sample_length_bias(rm, backbone, data, initial["texts"], initial["proxy"], initial["gold"], batch_size)
    proxy, gold = initial["proxy"], initial["gold"]
    lengths = np.array([response_length(r) for r in initial["texts"][1]], dtype=float).reshape(proxy.shape)
    best = proxy.argmax(1)
    rows = np.arange(len(proxy))
    print(f"  within-prompt correlation with length on the Best-of-N samples: gold {corr['gold']:.3f}, joint RM "
          f"{corr['reward']:.3f}; the RM's best of {proxy.shape[1]} has {lengths[rows, best].mean():.1f} words "
          f"(gold's best {lengths[rows, gold.argmax(1)].mean():.1f}, all samples {corr['mean_words']:.1f})")
    style = style_controlled(rm, backbone, data, seed, len(ds), batch_size)
    print(f"  style-controlled accuracy ({style['n_pairs']} same-content pairs, {style['words']['concise']:.1f} vs "
          f"{style['words']['verbose']:.1f} words, gold prefers the concise one in "
          f"{style['gold_prefers_concise']:.3f}): joint RM {style['accuracy']['overall']:.3f}")


def main(argv: list[str]) -> None:
    skip_disturbance = "--skip-disturbance" in argv
    quiet_third_party()
    overrides = [a for a in argv if a != "--skip-disturbance"]
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(version_base="1.3", config_dir=conf):
        cfg = compose("config", overrides=overrides)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
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

    print(f"overrides: {overrides}")
    set_seed(seed)
    t0 = time.perf_counter()
    joint = SingleRM()
    joint.fit(enc["train"], enc["val"], ctx)
    joint_s = time.perf_counter() - t0
    r_c, r_r = joint.score(enc["test"].chosen), joint.score(enc["test"].rejected)
    acc_joint = preference_accuracy(r_c, r_r, domains, test_ds["gold_chosen"], test_ds["gold_rejected"])
    print(f"human-gold agreement (test pairs): {acc_joint['human_gold_agreement']:.3f}   "
          f"(BT temperature {data.world.human_temperature:.3f})")
    unnamed_report(data)
    judge_report(data, seed)
    print(f"joint single RM: gold accuracy {acc_joint['gold']['overall']:.3f}, human "
          f"{acc_joint['human']['overall']:.3f} (train {joint_s:.0f} s)")
    initial = bon_report(cfg, joint, data, backbone, cache, seed)
    length_report(joint, data, backbone, (r_c, r_r), initial, seed, cfg.eval.batch_size)
    if skip_disturbance:
        return

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
    print(f"disturbance (train time: joint {joint_s:.0f} s, specialists {spec_s:.0f} s in all)")
    print(f"{'domain':<15}{'joint':>8}{'specialist':>12}{'spec-joint':>12}   (accuracy vs gold, test)")
    for d in data.domains:
        j, s = acc_joint["gold"]["per_domain"][d], acc_spec["gold"]["per_domain"][d]
        print(f"{d:<15}{j:>8.3f}{s:>12.3f}{s - j:>+12.3f}")
    j, s = acc_joint["gold"]["overall"], acc_spec["gold"]["overall"]
    print(f"{'overall':<15}{j:>8.3f}{s:>12.3f}{s - j:>+12.3f}")
    print(f"vs human labels: joint {acc_joint['human']['overall']:.3f}, specialists {acc_spec['human']['overall']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
