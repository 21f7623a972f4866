"""End-to-end jobs on a tiny configuration: the job writes its results, is deterministic, resumes, and a
killed multirun leaves nothing half-written and resumes without recomputing finished jobs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import CONF_DIR, TINY_OVERRIDES, compose

from harness.job import run_job

ROOT = Path(CONF_DIR).parent


def _job(tmp_path, name, overrides):
    cfg = compose([*TINY_OVERRIDES, f"cache_dir={tmp_path / 'cache'}", *overrides])
    return run_job(cfg, tmp_path / name, {"arch": "single"}, overrides)


def test_tiny_job_writes_metrics_and_is_deterministic(tmp_path):
    a = _job(tmp_path, "a", ["opt=none"])
    assert a["status"] == "ok", a["error"]
    on_disk = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert on_disk["status"] == "ok" and set(on_disk["accuracy"]) >= {"gold", "human"}
    assert set(on_disk["accuracy"]["gold"]["per_domain"]) == set(compose().data.world.domains)
    assert on_disk["params"]["total"] == on_disk["params"]["trainable"] > 0
    # The cost block: one backbone pass per scored response, labels = train + val pairs, no judge asked.
    cost = on_disk["cost"]
    assert cost["human_labels"] == 300 + 100 and cost["judge_queries"] == 0
    assert cost["backbone_passes_per_response"] == 1.0 and cost["wall_s"] > 0
    assert cost["train_backbone_sequences"] == 2 * 300  # one epoch: chosen and rejected of every pair, once
    # Per-pair test scores reproduce the job's gold accuracy (what harness.stats resamples).
    scores = pd.read_csv(tmp_path / "a" / "test_scores.csv")
    decided = scores[scores["gold_order"] != 0]
    right = (decided["chosen"] > decided["rejected"]) == (decided["gold_order"] > 0)
    assert right.mean() == pytest.approx(on_disk["accuracy"]["gold"]["overall"])
    # The same job again, now also answering lm-eval's test_prefs through the RM: same numbers, and lm-eval's
    # acc on the job's own test pairs is the job's gold accuracy.
    b = _job(tmp_path, "b", ["opt=none", "eval.lm_eval_tasks=[test_prefs]"])
    assert a["accuracy"] == b["accuracy"] and a["params"] == b["params"]
    assert b["lm_eval_rm"]["test_prefs"]["acc"] == pytest.approx(b["accuracy"]["gold"]["overall"], abs=1e-12)


def test_rerun_of_a_finished_job_is_not_recomputed(tmp_path):
    first = _job(tmp_path, "a", ["opt=none"])
    mtime = (tmp_path / "a" / "metrics.json").stat().st_mtime_ns
    again = _job(tmp_path, "a", ["opt=none"])
    assert again.get("resumed") and again["accuracy"] == first["accuracy"]
    assert (tmp_path / "a" / "metrics.json").stat().st_mtime_ns == mtime


def test_failed_job_leaves_a_status_row(tmp_path):
    out = _job(tmp_path, "bad", ["opt=none", "train.lr=-1"])
    assert out["status"] == "user_error" and "train.lr" in out["error"]
    assert json.loads((tmp_path / "bad" / "metrics.json").read_text())["status"] == "user_error"


def test_moved_and_read_only_cache_reuse_every_artifact(tmp_path, monkeypatch):
    """Before: the members' key held the backbone's absolute path (inside the cache), so a moved cache retrained
    every member, and a read-only copy failed on a lock file."""
    overrides = ["opt=none", "arch=ens_mean", "arch.k=2"]
    first = _job(tmp_path, "a", overrides)
    assert first["status"] == "ok" and first["fit"]["members_trained"] == 2, first["error"]
    moved = tmp_path / "moved"
    os.rename(tmp_path / "cache", moved)
    for manifest in moved.rglob("_manifest.json"):  # keys hash content: no location in any spec
        assert str(tmp_path) not in json.dumps(json.loads(manifest.read_text())["spec"]), manifest

    def entries():
        return sorted(p.relative_to(moved) for p in moved.glob("*/*") if p.is_dir())

    before = entries()
    cfg = compose([*TINY_OVERRIDES, f"cache_dir={moved}", *overrides])
    again = run_job(cfg, tmp_path / "b", {"arch": "ens_mean"}, overrides)
    assert again["status"] == "ok" and again["fit"]["members_cached"] == 2
    assert entries() == before and again["accuracy"] == first["accuracy"]  # nothing rebuilt, same numbers

    # A read-only copy: every write below it fails as on a read-only mount (monkeypatched: root ignores modes).
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and Path(path).resolve().is_relative_to(moved):
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    for lock in moved.rglob("*.lock"):
        lock.unlink()  # copied without its lock files
    monkeypatch.setattr(os, "open", read_only_open)
    read_only = run_job(cfg, tmp_path / "c", {"arch": "ens_mean"}, overrides)
    assert read_only["status"] == "ok" and read_only["fit"]["members_cached"] == 2, read_only["error"]
    assert read_only["accuracy"] == first["accuracy"]


@pytest.mark.slow
def test_killed_multirun_resumes_without_recomputing(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "harness", "-m", "seed=0,1,2", "opt=none", *TINY_OVERRIDES,
           f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = sweep / "0" / "metrics.json"
    deadline = time.time() + 600
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert first.exists(), "job 0 never finished"
    os.killpg(proc.pid, signal.SIGKILL)  # a real kill, mid-sweep
    proc.wait()
    mtime = first.stat().st_mtime_ns
    assert not (sweep / "2" / "metrics.json").exists(), "the sweep finished before it could be killed"
    # Nothing half-written: no temp files among results, no temp dirs in the cache.
    assert not [p for p in sweep.rglob("*") if ".tmp" in p.name]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert first.stat().st_mtime_ns == mtime  # finished job not recomputed
    for n in range(3):
        assert json.loads((sweep / str(n) / "metrics.json").read_text())["status"] == "ok"
    assert (sweep / "summary.csv").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp" in p.name]


@pytest.mark.slow
def test_joblib_launcher_gives_the_same_seeded_metrics(tmp_path):
    common = ["-m", "seed=0,1", "opt=none", *TINY_OVERRIDES, f"cache_dir={tmp_path / 'cache'}"]
    results = {}
    for launcher in ("basic", "joblib"):
        sweep = tmp_path / launcher
        extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
        proc = subprocess.run([sys.executable, "-m", "harness", *common, *extra, f"hydra.sweep.dir={sweep}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[launcher] = [json.loads((sweep / str(n) / "metrics.json").read_text()) for n in range(2)]
    for basic, joblib in zip(results["basic"], results["joblib"], strict=True):
        assert basic["status"] == joblib["status"] == "ok"
        assert basic["accuracy"] == joblib["accuracy"] and basic["params"] == joblib["params"]


@pytest.mark.slow
def test_smollm2_profile_runs_offline_end_to_end(tmp_path):
    """`+profile=smollm2` with every budget shrunk: the real model as LoRA RM and as policy, BoN and PPO, offline."""
    from harness.results import read_curves

    small = ["data.n_train=48", "data.n_val=16", "data.n_test=32", "data.world.calibration_pairs=300",
             "opt.bon.n_prompts=2", "opt.bon.n_samples=4", "opt.bon.ns=[1,2,4]", "opt.ppo.steps=2",
             "opt.ppo.eval_every=1", "opt.ppo.eval_prompts=2", "opt.ppo.rollout_batch=2",
             "opt.ppo.train_prompts=8", "policy.max_new_tokens=8", "threads=2"]
    cfg = compose(["+profile=smollm2", *small, f"cache_dir={tmp_path / 'cache'}"])
    out = run_job(cfg, tmp_path / "job", {"arch": "single"}, small)
    assert out["status"] == "ok", out["error"]
    # LoRA r on q_proj (H -> H) and v_proj (H -> kv heads x head dim) of every layer, plus the H-weight head.
    H, L, r, kv = 576, 30, cfg.backbone.lora_r, 3 * 64
    assert out["params"]["trainable"] == L * r * ((H + H) + (H + kv)) + H
    # SmolLM2's 134,515,008 weights (tied embeddings counted once), the new head and the adapters.
    assert out["params"]["total"] == 134_515_008 + out["params"]["trainable"]
    curves = read_curves(tmp_path / "job")
    assert set(curves["opt"]) == {"bon", "ppo"}
    assert curves[curves["opt"] == "ppo"]["kl"].iloc[-1] > 0  # two PPO steps moved the LoRA policy
