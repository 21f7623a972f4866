"""Where a job's time goes (issue 17: make the paper suite affordable), from the timings every job already records.

    python benchmarks/job_profile.py JOB_DIR_OR_SWEEP_DIR [...]

One row per job (arch, seed): prepare (world data + backbone; built once per seed, then cached), train (fit),
test scoring, export, policy (SFT once per seed, then cached), BoN samples (generated once per seed) and scoring,
PPO split into rollouts (generation + old/ref log-probs + proxy scoring), updates (PPO epochs) and evaluations
(fresh held-out samples every eval_every steps), and the rest; then the mean per arch. Seconds, wall clock.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.results import METRICS_FILE, read_metrics  # noqa: E402


def profile(metrics: dict) -> dict:
    t = metrics.get("timing_s", {})
    bon, ppo = metrics.get("bon") or {}, metrics.get("ppo") or {}
    row = {"arch": (metrics.get("choices") or {}).get("arch"), "seed": metrics.get("seed"),
           "total": t.get("total"), "prepare": t.get("prepare"), "train": t.get("train"),
           "test_score": (t.get("score_per_1k") or 0) * 2 * (metrics.get("accuracy", {}).get("human", {}).get("n") or 0)
           / 1000, "export": t.get("export", 0.0), "bon_samples": bon.get("seconds_samples", 0.0),
           "bon_score": bon.get("seconds_score", 0.0)}
    log = metrics.get("ppo_log") or []
    rollout = update = 0.0
    previous_step = 0
    for entry in log:  # each entry averages per-step times over the steps since the previous eval
        steps = entry["step"] - previous_step
        rollout += steps * entry.get("time/rollout_s", 0.0)
        update += steps * entry.get("time/update_s", 0.0)
        previous_step = entry["step"]
    ppo_s = ppo.get("seconds", 0.0)
    row.update(ppo_rollout=rollout, ppo_update=update, ppo_eval=max(0.0, ppo_s - rollout - update))
    optimize = t.get("optimize", 0.0)
    row["policy"] = max(0.0, optimize - row["bon_samples"] - row["bon_score"] - ppo_s) if optimize else 0.0
    accounted = sum(row[k] or 0 for k in ("prepare", "train", "test_score", "export", "policy", "bon_samples",
                                          "bon_score", "ppo_rollout", "ppo_update", "ppo_eval"))
    row["other"] = (row["total"] or 0) - accounted
    return row


def main(paths: list[str]) -> None:
    rows = []
    for p in paths:
        for f in sorted(Path(p).rglob(METRICS_FILE)):
            m = read_metrics(f.parent)
            if m.get("status") == "ok":
                rows.append(profile(m))
    if not rows:
        print("no ok job under", paths)
        return
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.round(0).to_string(index=False))
    print("\nmean per arch (s):")
    print(df.drop(columns="seed").groupby("arch").mean().round(0).to_string())
    print(f"\nall jobs: {df['total'].sum():.0f} s of job time; two at a time: ~{df['total'].sum() / 2 / 3600:.2f} h")


if __name__ == "__main__":
    main(sys.argv[1:])
