"""Result files, summary.csv and the aggregate CLI / callback, on hand-written fake sweeps (conftest.make_sweep)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAKE_ARCHS, FAKE_FAILED, make_sweep
from omegaconf import OmegaConf

from harness import callbacks, results
from harness.aggregate import main as aggregate_main
from harness.report import aggregate

# ------------------------------------------------------------------------------------ metrics/curves


def test_write_metrics_is_strict_json_with_nan_as_null(tmp_path):
    m = {"accuracy": {"gold": {"overall": np.float32(0.5), "per_domain": {"a": float("nan")}}},
         "bon": {"alpha": float("inf"), "beta": np.float64(-0.25)}, "params": {"total": np.int64(7)},
         "ppo": {"grid": np.array([1.0, float("nan")])}}
    results.write_metrics(tmp_path, m)
    text = (tmp_path / "metrics.json").read_text()
    # json.loads accepts NaN by default; a strict parser must accept the file too.
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert back["accuracy"]["gold"]["per_domain"]["a"] is None
    assert back["bon"] == {"alpha": None, "beta": -0.25}
    assert back["params"]["total"] == 7 and isinstance(back["params"]["total"], int)
    assert back["ppo"]["grid"] == [1.0, None]
    assert results.read_metrics(tmp_path) == back
    assert not [p for p in tmp_path.iterdir() if p.name != "metrics.json"]  # no temp file left behind


def test_curves_round_trip_and_reject_unknown_columns(tmp_path):
    rows = [{"opt": "bon", "n": 4, "kl": 0.636, "sqrt_kl": 0.797, "proxy": 0.5, "gold": 0.3},
            {"opt": "ppo", "step": 100, "kl": 1.0, "sqrt_kl": 1.0, "proxy": 0.9, "gold": float("nan")}]
    results.write_curves(tmp_path, rows)
    assert (tmp_path / "curves.csv").read_text().splitlines()[0] == "opt,n,step,kl,sqrt_kl,proxy,gold,proxy_se,gold_se"
    df = results.read_curves(tmp_path)
    assert list(df["opt"]) == ["bon", "ppo"]
    assert df.loc[0, "n"] == 4 and pd.isna(df.loc[0, "step"])
    assert df.loc[1, "step"] == 100 and pd.isna(df.loc[1, "n"]) and pd.isna(df.loc[1, "gold"])
    with pytest.raises(ValueError, match="sqrtkl"):
        results.write_curves(tmp_path, [{"opt": "bon", "n": 1, "sqrtkl": 0.0}])
    assert results.read_curves(tmp_path / "nowhere").empty


def test_flatten_dots_keys_skips_config_and_explain_joins_lists():
    flat = results.flatten({
        "choices": {"arch": "umm", "opt": ["bon", "ppo"]}, "seed": 1, "overrides": ["arch=umm", "seed=1"],
        "accuracy": {"gold": {"overall": 0.8, "per_domain": {"chat": 0.9}}},
        "views": {"unmerged": {"params": {"total": 5}}}, "config": {"big": 1},
        "explain": {"capability_scores": {}}, "fit": {"experts": {"a": {"p": {"pairs": 3}}}, "cost": {"passes": 2}},
        "bon": None, "train_log": [{"step": 1, "loss": 0.6}],
    })
    assert flat == {
        "choices.arch": "umm", "choices.opt": "bon,ppo", "seed": 1, "overrides": "arch=umm,seed=1",
        "accuracy.gold.overall": 0.8, "accuracy.gold.per_domain.chat": 0.9, "views.unmerged.params.total": 5,
        "fit.cost.passes": 2, "bon": None,
    }


# ------------------------------------------------------------------------------------------ collect


def test_collect_one_row_per_job_failed_rows_kept(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", crashed=True)
    df = results.collect(sweep)
    n_jobs = len(FAKE_ARCHS) * 2 + 1
    assert len(df) == n_jobs
    assert list(df["job_dir"]) == [str(i) for i in range(n_jobs)]  # natural order: 10 after 9
    assert list(df.columns[:4]) == ["job_dir", "status", "error", "seed"]
    assert df.columns[4] == "choices.arch"
    for col in ("accuracy.gold.overall", "accuracy.gold.per_domain.roleplay", "accuracy.human.overall",
                "params.total", "params.active", "bon.alpha", "bon.gold_peak", "ppo.gold_peak",
                "timing_s.train", "views.unmerged.params.total", "overrides", "choices.opt"):
        assert col in df.columns, col
    assert not [c for c in df.columns if c.startswith(("config", "explain", "fit.experts"))]
    assert list(df.columns[4:6]) == ["choices.arch", "choices.arch/labeler"]  # a nested group follows its parent

    failed = df[df["status"] != "ok"]
    assert len(failed) == 2
    oom = failed[failed["choices.arch"] == "more"].iloc[0]
    assert "out of memory" in oom["error"] and oom["seed"] == FAKE_FAILED[1]
    assert pd.isna(oom["accuracy.gold.overall"])
    crashed = failed[failed["choices.arch"] == "rodos"].iloc[0]  # named from its .hydra/ files
    assert "no metrics.json" in crashed["error"] and crashed["seed"] == 3
    assert "choices.hydra/launcher" not in df.columns

    ok = df[df["status"] == "ok"]
    assert ok["accuracy.gold.overall"].notna().all() and ok["error"].isna().all()
    assert ok["ppo.final_gap"].isna().all()  # NaN written as null comes back missing, not as a number
    single0 = ok[(ok["choices.arch"] == "single") & (ok["seed"] == 0)].iloc[0]
    assert single0["params.total"] == FAKE_ARCHS["single"][1]
    assert single0["overrides"] == "arch=single,seed=0,opt=[bon,ppo]"


def test_collect_finds_nested_jobs_and_unreadable_metrics(tmp_path):
    make_sweep(tmp_path / "a" / "b", archs=("single",), seeds=(0,))
    bad = tmp_path / "c"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"status": "ok", "accur')  # torn write from a killed process
    df = results.collect(tmp_path)
    assert list(df["job_dir"]) == ["a/b/0", "c"]
    assert df.set_index("job_dir").loc["c", "status"] == "failed"
    assert "unreadable" in df.set_index("job_dir").loc["c", "error"]


def test_aggregate_writes_summary_that_reads_back(tmp_path):
    sweep = make_sweep(tmp_path, crashed=True)
    out = aggregate(sweep, figures=False)
    assert out["n_jobs"] == len(FAKE_ARCHS) * 2 + 1 and out["n_failed"] == 2 and out["figures"] == []
    summary = results.read_summary(out["summary"])
    direct = results.collect(sweep)
    assert list(summary.columns) == list(direct.columns)
    assert summary["job_dir"].tolist() == direct["job_dir"].tolist()  # "0" stays text
    gold = direct["accuracy.gold.overall"].astype(float)
    np.testing.assert_allclose(summary["accuracy.gold.overall"], gold, rtol=1e-12)
    assert summary["choices.opt"].iloc[0] == "bon,ppo"


def test_aggregate_keeps_summary_when_figures_fail(tmp_path, monkeypatch):
    from harness import plots

    def broken(sweep_dir):
        raise RuntimeError("plotting broke")

    monkeypatch.setattr(plots, "make_figures", broken)
    sweep = make_sweep(tmp_path, archs=("single",))
    with pytest.raises(RuntimeError, match="plotting broke"):
        aggregate(sweep)
    assert len(results.read_summary(sweep / "summary.csv")) == 2


def test_aggregate_of_empty_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        aggregate(tmp_path)


# ------------------------------------------------------------------------------------ CLI, callback


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.aggregate", *map(str, args)],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])


def _main(capsys, *args) -> subprocess.CompletedProcess:
    """The CLI's main in process (no interpreter start-up), answered like _cli."""
    code = aggregate_main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_aggregate_cli_exit_codes(tmp_path, capsys):
    ok_sweep = make_sweep(tmp_path / "ok", archs=("single", "dmoerm"))
    r = _cli(ok_sweep, "--no-figures")  # the command line itself, once
    assert r.returncode == 0, r.stderr
    assert "single" in r.stdout and "gold acc" in r.stdout and "4 jobs, 0 failed" in r.stdout
    assert (ok_sweep / "summary.csv").is_file() and not (ok_sweep / "figures").exists()

    bad_sweep = make_sweep(tmp_path / "bad", archs=("single", "more"))
    r = _main(capsys, bad_sweep, "--no-figures")
    assert r.returncode == 1, r.stderr
    assert "RuntimeError: CUDA out of memory" in r.stdout  # the traceback's last line, not its first
    assert "4 jobs, 1 failed" in r.stdout

    (tmp_path / "empty" / "0" / ".hydra").mkdir(parents=True)
    r = _main(capsys, tmp_path / "empty")
    assert r.returncode == 2 and "no metrics.json" in r.stderr
    assert _main(capsys, tmp_path / "missing").returncode == 2


def test_callback_aggregates_and_records_failure(tmp_path):
    cb = callbacks.AggregateOnMultirunEnd(figures=False)
    good = make_sweep(tmp_path / "good", archs=("single",))
    bad = make_sweep(tmp_path / "bad", archs=("more",))

    cb.on_multirun_start(OmegaConf.create({}))
    cb.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(bad)}}}))
    assert callbacks.LAST_SWEEP_FAILED is True
    assert (bad / "summary.csv").is_file()

    cb.on_multirun_start(OmegaConf.create({}))
    assert callbacks.LAST_SWEEP_FAILED is False
    cb.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(good)}}}))
    assert callbacks.LAST_SWEEP_FAILED is False

    # Aggregation itself breaking (nothing to aggregate) must also count as a failed sweep, not raise.
    cb.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "void")}}}))
    assert callbacks.LAST_SWEEP_FAILED is True
    cb.on_run_end(OmegaConf.create({}))


def test_seed_table_pools_seeds_per_configuration(tmp_path, capsys):
    from harness.console import seed_table

    df = results.read_summary(aggregate(make_sweep(tmp_path, archs=("single", "dmoerm")),
                                                figures=False)["summary"])
    table = seed_table(df).set_index("arch")
    assert list(table.index) == ["single", "dmoerm"] and (table["n"] == 2).all()
    gold = df[df["choices.arch"] == "single"]["accuracy.gold.overall"]
    assert table.loc["single", "gold acc"] == f"{gold.mean():.3f} ± {gold.std(ddof=1):.3f}"
    assert table.loc["single", "params"] == f"{FAKE_ARCHS['single'][1]:,}"
    assert table.loc["single", "PPO gap at common d"] == ""  # NaN in every seed: blank, not "nan"
    assert seed_table(df[df["seed"] == 0]) is None  # one seed per configuration: nothing to pool
    r = _main(capsys, tmp_path, "--no-figures")
    assert r.returncode == 0 and "over seeds (mean ± s.d.)" in r.stdout
