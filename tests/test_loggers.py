"""The `logger` group: every option composes; tensorboard's event files read back with what the job logged (a real
job through `python -m harness`, whose output -- stage lines, the end-of-job table, nothing else -- is checked too);
wandb offline when it is installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, TINY_OVERRIDES, compose

from harness.job import build
from harness.loggers import MetricLogger, TensorBoardLogger

ROOT = Path(CONF_DIR).parent
LOGGERS = sorted(p.stem for p in Path(CONF_DIR, "logger").glob("*.yaml"))


def _events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc


def test_logger_options_compose_and_none_is_the_default():
    assert LOGGERS == ["none", "tensorboard", "wandb"]
    assert compose().logger._target_ == "harness.loggers.MetricLogger"
    for name in LOGGERS:
        assert compose([f"logger={name}"]).logger._target_.startswith("harness.loggers.")


def test_tensorboard_logger_writes_what_it_is_given(tmp_path):
    tb = build(compose(["logger=tensorboard"]).logger, "logger", job_dir=str(tmp_path))
    tb.log_config({"seed": 3, "logger": {"_target_": "harness.loggers.TensorBoardLogger"}})
    assert isinstance(tb, TensorBoardLogger)
    tb.train_row({"phase": "base_rm", "step": 5, "loss": 0.6, "val_acc": 0.7})
    tb.train_row({"phase": "base_rm", "steps": 5, "best_val_acc": 0.7})  # a phase summary: no step, not a point
    tb.curve_rows([{"opt": "bon", "n": 1, "kl": 0.0, "sqrt_kl": 0.0, "proxy": 0.0, "gold": 0.0},
                   {"opt": "bon", "n": 4, "kl": 0.64, "sqrt_kl": 0.8, "proxy": 1.0, "gold": 0.3},
                   {"opt": "ppo", "step": 2, "kl": 1.0, "sqrt_kl": 1.0, "proxy": 2.0, "gold": 0.1}])
    tb.ppo_eval({"step": 10, "kl": 4.0, "sqrt_kl": 2.0, "proxy": 1.5, "gold": 0.2}, {"ppo/clipfrac": 0.1})
    tb.final({"status": "ok", "accuracy": {"gold": {"overall": 0.71}}, "bon": {"gold_peak": None}, "config": {}})
    tb.close()
    ev = _events(tmp_path / "tensorboard")
    scalars = set(ev.Tags()["scalars"])
    assert {"train/base_rm/loss", "train/base_rm/val_acc", "bon/gold", "bon/proxy", "ppo/gold", "ppo/clipfrac",
            "final/accuracy.gold.overall"} <= scalars
    assert "train/base_rm/best_val_acc" not in scalars and "final/bon.gold_peak" not in scalars  # null: no point
    assert [(e.step, round(e.value, 6)) for e in ev.Scalars("bon/gold")] == [(1, 0.0), (4, 0.3)]
    assert [e.step for e in ev.Scalars("ppo/gold")] == [10]  # PPO rows arrive live, not again from curves.csv
    assert "config/text_summary" in ev.Tags()["tensors"]


def test_none_logger_does_nothing(tmp_path):
    none = build(compose().logger, "logger", job_dir=str(tmp_path))
    none.log_config({"seed": 0})
    assert type(none) is MetricLogger
    none.train_row({"phase": "x", "step": 1, "loss": 1.0})
    none.final({"status": "ok"})
    none.close()
    assert not any(tmp_path.iterdir())


def test_job_with_tensorboard_logs_training_bon_ppo_and_final_metrics(tmp_path):
    job = tmp_path / "job"
    small = [*TINY_OVERRIDES, "policy.hidden_size=32", "policy.intermediate_size=64", "policy.sft_steps=20",
             "policy.sft_sequences=300", "policy.max_new_tokens=8", "opt=[bon,ppo]", "opt.bon.n_prompts=3",
             "opt.bon.n_samples=8", "opt.bon.ns=[1,2,4,8]", "opt.ppo.steps=2", "opt.ppo.eval_every=1",
             "opt.ppo.eval_prompts=2", "opt.ppo.rollout_batch=4", "opt.ppo.train_prompts=8", "logger=tensorboard",
             f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={job}"]
    proc = subprocess.run([sys.executable, "-m", "harness", *small], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = _events(job / "tensorboard")
    scalars = set(ev.Tags()["scalars"])
    assert {"train/single/loss", "train/single/val_acc", "bon/gold", "bon/proxy", "ppo/gold", "ppo/proxy",
            "ppo/kl", "ppo/approx_kl", "final/accuracy.gold.overall", "final/params.total"} <= scalars
    assert [e.step for e in ev.Scalars("ppo/gold")] == [0, 1, 2]
    assert [e.step for e in ev.Scalars("bon/gold")] == [1, 2, 4, 8]
    # The end-of-job table, on the terminal: headline numbers with their unit lines, and where the files are.
    out = proc.stdout
    for text in ("job done: arch=single", "gold accuracy", "params total / active", "BoN R*", "PPO max gold",
                 "d = √KL", f"results: {job / 'metrics.json'}", f"results: {job / 'curves.csv'}"):
        assert text in out, out[-3000:]
    # Not on a terminal: stage lines and one line per step, each naming its model; no bars, no blank lines, no
    # third-party noise a user cannot act on.
    everything = proc.stdout + proc.stderr
    stages = [ln.split(" - ", 1)[1] for ln in out.splitlines() if " - stage " in ln]
    assert [s.split(":")[0] for s in stages] == [f"stage {k}/7" for k in range(1, 8)], stages
    assert "backbone pre-training: 20 steps" in out and "policy SFT: 20 steps" in out
    assert "pretrain step" not in everything and "%|" not in everything  # no per-step lines, no tqdm bars
    for noise in ("Loading weights", "Writing model shards", "Saving the dataset", "is_gradient_checkpointing"):
        assert noise not in everything, noise
    assert all(ln.strip() for ln in everything.splitlines()), "blank lines in the output"


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is optional (pip install wandb)")
def test_wandb_offline_writes_a_run_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    wb = build(compose(["logger=wandb"]).logger, "logger", job_dir=str(tmp_path))
    wb.log_config({"seed": 0})
    wb.train_row({"phase": "single", "step": 1, "loss": 0.69, "val_acc": 0.5})
    wb.final({"status": "ok", "accuracy": {"gold": {"overall": 0.7}}})
    wb.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
