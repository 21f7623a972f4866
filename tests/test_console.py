"""What a person reads: the end-of-job table, the end-of-sweep tables (CLI and callback alike) and --help."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from conftest import CONF_DIR, make_sweep
from omegaconf import OmegaConf

from harness import callbacks
from harness.console import job_line, job_summary, sweep_text, table_text
from harness.report import aggregate

ROOT = Path(CONF_DIR).parent

METRICS = {
    "choices": {"arch": "dmoerm", "data": "synthetic", "backbone": "tiny", "policy": "tiny"}, "seed": 1,
    "status": "ok", "job_dir": "/r/job",
    "accuracy": {"gold": {"overall": 0.7312, "n": 1200}, "human": {"overall": 0.6221, "n": 1200}},
    "params": {"total": 1_492_746, "trainable": 1_492_746, "active": 429_122, "active_per_token": 429_122},
    "fit": {"lora": {"r": 1, "hidden_size": 64, "r_fraction_of_hidden": 1 / 64, "set_by": "arch.r_fraction"}},
    "bon": {"gold_peak": 0.5712, "d_peak": 1.83, "final_gold": 0.55, "final_proxy": 1.6, "r2": 0.97,
            "peak_extrapolated": True, "units": {"gold": {"scale_kind": "within_prompt"}}},
    "ppo": {"observed_gold_peak": 0.45, "observed_gold_peak_se": 0.056, "observed_d_peak": 7.1, "final_gap": 0.7,
            "common_sqrt_kl": 4.0},
    "timing_s": {"prepare": 12.0, "train": 140.5, "optimize": 61.0, "total": 214.2},
}


def test_job_summary_has_numbers_units_and_files(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "curves.csv").write_text("")
    text = job_summary(METRICS, tmp_path)
    lines = text.splitlines()
    assert lines[0] == "job done: arch=dmoerm data=synthetic backbone=tiny policy=tiny seed=1"
    row = {ln.split("  ")[0].strip(): ln for ln in lines if "  " in ln}
    assert "0.731" in row["gold accuracy"] and "1200 test pairs" in row["gold accuracy"]
    assert "1,492,746 / 429,122; LoRA r=1 = 1.6% of hidden 64" in row["params total / active"]
    assert "0.571 at d = 1.83 (R² 0.97, extrapolated)" in row["BoN R* (fitted peak gold)"]
    assert "within-prompt s.d." in row["BoN R* (fitted peak gold)"]
    assert "0.450 ± 0.056 at d = 7.10" in row["PPO max gold"]
    assert "0.700" in row["PPO final proxy − gold gap at d = 4.00"]
    assert "3 min 34 s" in row["time"] and "train 2 min 20 s" in row["time"]
    # Each headline number's unit in one line; d explained; where the files are.
    assert any(ln.strip().startswith("BoN R*: peak of the fitted gold curve") for ln in lines)
    assert any(ln.strip().startswith("d = √KL") for ln in lines)
    assert f"results: {tmp_path / 'metrics.json'}" in lines and f"results: {tmp_path / 'curves.csv'}" in lines
    assert all(ln.strip() for ln in lines) and all(ln == ln.rstrip() for ln in lines)  # no blank lines


def test_job_summary_without_studies_or_gold_and_with_an_unbounded_fit(tmp_path):
    real = {**METRICS, "accuracy": {"human": {"overall": 0.66, "n": 50}}}
    del real["bon"], real["ppo"]
    text = job_summary(real, tmp_path)
    assert "human-label accuracy" in text and "gold accuracy" not in text
    assert "BoN" not in text and "√KL" not in text and "results:" not in text  # no files there yet
    unbounded = {**METRICS, "bon": {**METRICS["bon"], "gold_peak": None, "d_peak": None}}
    assert "no peak in reach" in job_summary(unbounded, tmp_path)
    unreached = {**METRICS, "ppo": {**METRICS["ppo"], "final_gap": None}}
    assert "not reached" in job_summary(unreached, tmp_path)
    assert job_line(METRICS) == "job done: arch=dmoerm seed=1 acc=0.731 BoN R*=0.571 3 min 34 s -> /r/job"


def test_table_text_does_not_read_cells_as_markup():
    text = table_text(["override"], [["opt=[bon,ppo]"], ["[bold]x[/bold]"]])
    assert "opt=[bon,ppo]" in text and "[bold]x[/bold]" in text


def test_sweep_end_logs_the_same_tables_as_the_cli(tmp_path, caplog):
    sweep = make_sweep(tmp_path / "s", archs=("single", "dmoerm"))
    cb = callbacks.AggregateOnMultirunEnd(figures=False)
    cb.on_multirun_start(OmegaConf.create({}))
    with caplog.at_level(logging.INFO, logger="harness.callbacks"):
        cb.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    logged = caplog.text
    text = sweep_text(aggregate(sweep, figures=False) | {"report": None})
    assert "over seeds (mean ± s.d.)" in text and "BoN R*: peak of the fitted gold curve" in text
    for line in text.splitlines():
        assert line in logged


def test_help_says_what_it_is_with_examples_groups_and_the_plus():
    proc = subprocess.run([sys.executable, "-m", "harness", "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("rmharness: benchmark reward-model architectures")
    examples = [ln for ln in out.splitlines() if ln.startswith("  python -m harness")]
    assert len(examples) == 5
    for needle in ("-m arch=", "+suite=", "data=jsonl data.path=", "+profile=smollm2"):
        assert any(needle in e for e in examples), needle
    assert "need a +" in out
    for group in ("arch", "data", "backbone", "policy", "arch/labeler", "opt", "logger", "suite", "profile"):
        assert any(ln.startswith(f"{group}: ") for ln in out.splitlines()), group


def test_job_summary_reads_the_verifier_pass_rate(tmp_path):
    rates = {"initial": 0.319, "peak": 0.319, "peak_n": 1, "at_max_n": 0.222, "max_n": 64, "overoptimized": True}
    verifier = {**METRICS, "bon": {**METRICS["bon"], "units": {"gold": {"scale_kind": "pass_rate"}},
                                   "pass_rate": rates}}
    row = {ln.split("  ")[0].strip(): ln for ln in job_summary(verifier, tmp_path).splitlines() if "  " in ln}
    line = row["BoN pass rate: initial / peak / largest n"]
    assert "0.319 / 0.319 (n = 1) / 0.222 (n = 64)" in line and "over-optimized" in line
    assert "pass-rate units" in row["BoN R* (fitted peak gold)"]
    assert "BoN pass rate" not in job_summary(METRICS, tmp_path)  # other golds have none
