"""Cost of Best-of-N at K samples per prompt (issue 26, item 6): how much sampling K = 256 ... 4096 responses per
prompt from the paper suite's tiny SFT policy costs, in CPU seconds per sample (``time.process_time``: it does not
count the waits of a shared machine, which wall time does), and the projection to a paper-suite seed.

    python benchmarks/bon_cost.py [--seed 0] [--prompts 2] [--ks 256,1024,4096] [--cache-dir DIR] [--sweep DIR]

The policy is the paper suite's (``+suite=paper`` budgets: 800 SFT steps), prepared from ``--cache-dir`` (SFT-
trained there first if missing: minutes). Sampling is one ``Policy.sample`` call per K over ``--prompts`` held-out
prompts x K, as ``harness.optimize.study.bon_samples`` does for its 50. Scoring cost scales with the samples
scored too: with ``--sweep`` (the paper suite's jobs, e.g. the unpacked results/paper_suite_jobs.tar.xz) it
prints each arch's BoN scoring seconds per 1,000 samples from their metrics.json (``bon.seconds_score``, wall;
those jobs ran two at a time on 2 cores, one thread each) and the per-seed projection at each K.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The paper suite's BoN prompts per seed (conf/opt/bon.yaml n_prompts).
SUITE_PROMPTS = 50


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", type=int, default=2, help="held-out prompts sampled at each K")
    p.add_argument("--ks", default="256,1024,4096", help="samples per prompt, comma-separated")
    p.add_argument("--cache-dir", default=None, help="artifact cache (default: the config's cache_dir)")
    p.add_argument("--sweep", type=Path, default=None, help="paper-suite jobs to read BoN scoring times from")
    return p.parse_args()


def policy_and_data(seed: int, cache_dir: str | None):
    import torch
    from hydra import compose, initialize_config_dir

    from harness.cache import ArtifactCache
    from harness.job import validate
    from harness.optimize.study import check_studies

    torch.set_num_threads(1)
    overrides = ["+suite=paper", f"seed={seed}", "threads=1", "opt=[bon]"]
    overrides += [f"cache_dir={cache_dir}"] if cache_dir else []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    job = validate(cfg, Path(tempfile.mkdtemp(prefix="bon_cost_")))
    cache = ArtifactCache(cfg.cache_dir)
    data = job.data.prepare(cache, seed)
    _, policy = check_studies(job.studies, cfg.policy, True, getattr(data, "name", "synthetic"))
    policy.prepare(cache, data, seed)
    return policy, data


def sampling_costs(policy, data, seed: int, n_prompts: int, ks: list[int]) -> list[dict]:
    from harness.seeds import Stream

    held_out = data.eval_prompts(n_prompts, seed)
    rows = []
    for k in ks:
        flat = [p for p, _ in held_out for _ in range(k)]
        cpu, wall = time.process_time(), time.perf_counter()
        texts = policy.sample(flat, seed, Stream.BON_SAMPLES)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        words = sum(len(t.split()) for t in texts) / len(texts)
        rows.append({"k": k, "samples": len(flat), "cpu_s": cpu, "wall_s": wall,
                     "cpu_ms_per_sample": 1e3 * cpu / len(flat), "words_per_response": words})
    return rows


def scoring_rates(sweep: Path) -> dict[str, float]:
    """Mean BoN scoring seconds per 1,000 samples per arch, from the jobs' metrics.json."""
    per_arch = defaultdict(list)
    for path in sweep.rglob("metrics.json"):
        m = json.loads(path.read_text(encoding="utf-8"))
        bon = m.get("bon") or {}
        if m.get("status") == "ok" and bon.get("seconds_score") and bon.get("n_samples"):
            samples = bon["n_samples"] * bon["n_prompts"]
            per_arch[(m.get("choices") or {}).get("arch")].append(1e3 * bon["seconds_score"] / samples)
    return {arch: sum(v) / len(v) for arch, v in sorted(per_arch.items())}


def main() -> None:
    args = parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    policy, data = policy_and_data(args.seed, args.cache_dir)
    rows = sampling_costs(policy, data, args.seed, args.prompts, ks)
    print(f"sampling, seed {args.seed}, {args.prompts} prompts x K, 1 thread:")
    print(f"{'K':>6} {'samples':>8} {'cpu s':>8} {'wall s':>8} {'cpu ms/sample':>14} {'words/resp':>10} "
          f"{'cpu s per seed (50 prompts)':>28}")
    for r in rows:
        print(f"{r['k']:>6} {r['samples']:>8} {r['cpu_s']:>8.1f} {r['wall_s']:>8.1f} {r['cpu_ms_per_sample']:>14.3f} "
              f"{r['words_per_response']:>10.1f} {r['cpu_ms_per_sample'] * SUITE_PROMPTS * r['k'] / 1e3:>28.0f}")
    if args.sweep is not None:
        rates = scoring_rates(args.sweep)
        print("\nBoN scoring per arch (s per 1,000 samples, from the sweep's jobs) and per seed at each K "
              f"({SUITE_PROMPTS} prompts):")
        print(f"{'arch':<16} {'s/1k':>6} " + " ".join(f"{'K=' + str(k):>8}" for k in ks))
        for arch, rate in rates.items():
            print(f"{arch:<16} {rate:>6.2f} " + " ".join(f"{rate * SUITE_PROMPTS * k / 1e3:>8.0f}" for k in ks))
        total = sum(rates.values())
        print(f"{'all archs':<16} {total:>6.2f} " + " ".join(f"{total * SUITE_PROMPTS * k / 1e3:>8.0f}" for k in ks))


if __name__ == "__main__":
    main()
