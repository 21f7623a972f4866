"""Does a ranking of architectures transfer from one sweep to another (issue 28: the synthetic world's ranking of
reward models against the one on real text with a verifiable gold)?

For one metric -- by default ``bon.final_gold``, Best-of-N gold at the largest n, each sweep in its own gold's
units (a rank correlation needs none in common) -- every arch with ok jobs in both sweeps gets its mean over its
seeds in each; the Spearman rank correlation of the two columns of means, over the archs, is the estimate. Its 95%
interval is a percentile bootstrap that resamples each arch's seeds with replacement, independently in each sweep
(the sweeps share no pairing of seeds: they are different worlds), ``N_RESAMPLES`` times from ``BOOTSTRAP_SEED``.
With a handful of archs the interval is wide by construction; it is reported as it is.

    python -m harness.transfer results/suites/paper/main results/suites/verifiable [--metric bon.gold_drop]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from .stats import BOOTSTRAP_SEED, CONFIDENCE, N_RESAMPLES, load_jobs


def arch_values(jobs: pd.DataFrame, metric: str) -> dict[str, np.ndarray]:
    """Each arch's finite values of ``metric``, one per ok job (seed)."""
    if metric not in jobs:
        return {}
    out = {}
    for arch, rows in jobs.groupby("arch"):
        v = pd.to_numeric(rows[metric], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size:
            out[str(arch)] = v
    return out


def rank_transfer(values_a: dict[str, np.ndarray], values_b: dict[str, np.ndarray], n_resamples: int = N_RESAMPLES,
                  rng_seed: int = BOOTSTRAP_SEED) -> dict:
    """The Spearman correlation over the archs both sides have, of their seed means, with its bootstrap interval
    (module docstring). ``rho`` is None with fewer than 3 common archs or a side whose means all tie."""
    archs = sorted(set(values_a) & set(values_b))
    out = {"archs": archs, "seeds_a": {a: int(values_a[a].size) for a in archs},
           "seeds_b": {a: int(values_b[a].size) for a in archs},
           "mean_a": {a: float(values_a[a].mean()) for a in archs},
           "mean_b": {a: float(values_b[a].mean()) for a in archs},
           "rho": None, "ci_low": None, "ci_high": None, "confidence": CONFIDENCE, "n_resamples": n_resamples}
    if len(archs) < 3:
        return out
    mean_a, mean_b = (np.array([side[a].mean() for a in archs]) for side in (values_a, values_b))
    if np.ptp(mean_a) == 0 or np.ptp(mean_b) == 0:
        return out
    out["rho"] = float(sps.spearmanr(mean_a, mean_b).statistic)
    rng = np.random.default_rng(rng_seed)
    rhos = []
    for _ in range(n_resamples):
        ra = np.array([rng.choice(values_a[a], values_a[a].size).mean() for a in archs])
        rb = np.array([rng.choice(values_b[a], values_b[a].size).mean() for a in archs])
        if np.ptp(ra) > 0 and np.ptp(rb) > 0:  # a resample whose means all tie has no ranking
            rhos.append(sps.spearmanr(ra, rb).statistic)
    if rhos:
        tail = (1 - CONFIDENCE) / 2 * 100
        out["ci_low"], out["ci_high"] = (float(x) for x in np.percentile(rhos, [tail, 100 - tail]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_a", type=Path)
    parser.add_argument("sweep_b", type=Path)
    parser.add_argument("--metric", default="bon.final_gold", help="a summary.csv column (default bon.final_gold)")
    args = parser.parse_args(argv)
    result = rank_transfer(*(arch_values(load_jobs(d), args.metric) for d in (args.sweep_a, args.sweep_b)))
    print(json.dumps({"metric": args.metric, "sweep_a": str(args.sweep_a), "sweep_b": str(args.sweep_b), **result},
                     indent=2))
    return 0 if result["rho"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
