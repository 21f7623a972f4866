"""What a job checks before it computes anything, and what it trusts when it resumes (issue 21 items 2, 6, 7;
issue 20 item 3): a mistake in the input stops the job in seconds, before any data is prepared or model trained,
with one message naming the key or file (`status: user_error`, no traceback, not a result in summaries); a
resumed job is one whose config AND data content are unchanged; a failed job keeps what it had computed."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, TINY_OVERRIDES, compose

from harness.job import run_job
from harness.results import read_metrics, read_summary

ROOT = Path(CONF_DIR).parent

# A whole job on a small local preference file in seconds (the tiny backbone pre-trains on the file's text).
JSONL_OVERRIDES = ["data=jsonl", "opt=none", "backbone.hidden_size=32", "backbone.intermediate_size=64",
                   "backbone.pretrain_steps=20", "backbone.pretrain_sequences=200", "train.epochs=1",
                   "train.evals_per_epoch=1", "threads=1"]


def write_pairs(path: Path, n: int, swap: bool = False) -> Path:
    """n preference pairs on distinct prompts; the chosen reply is the longer one (``swap``: the shorter)."""
    rows = []
    for i in range(n):
        good, bad = f"a careful answer number {i} with detail", f"no {i}"
        rows.append({"prompt": f"question {i} about topic {i % 7}", "chosen": bad if swap else good,
                     "rejected": good if swap else bad})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def job(tmp_path: Path, name: str, overrides: list[str]) -> dict:
    cfg = compose([f"cache_dir={tmp_path / 'cache'}", *overrides])
    return run_job(cfg, tmp_path / name, {}, overrides)


# ------------------------------------------------------------------------------------ checked before training


@pytest.mark.parametrize("overrides,named", [
    (["opt.bon.ns=[1,2,512]"], "opt.bon.ns"),  # before: failed after the RM trained
    (["eval.batch_size=0"], "eval.batch_size"),  # before: failed after training, naming no key
    (["arch=dmoerm", "arch/labeler=openai", "arch.labeler.api_key_env=RMHARNESS_TEST_NO_SUCH_KEY"],
     "RMHARNESS_TEST_NO_SUCH_KEY"),
    (["seed=abc"], "seed"),  # before: a raw int() traceback, no metrics.json
    (["seed=1.7"], "seed"),  # before: silently seed 1
    (["+foo=1"], "foo"),  # before: silently accepted
    (["+arch.nope=1"], "arch.nope"),  # before: failed after ~22 s of preparing data and backbone
    (["+train.nope=1"], "train.nope"),
    (["+eval.nope=1"], "eval.nope"),
    (["data=jsonl"], "data.path is required: pass data.path=PATH"),  # before: a 35-line omegaconf traceback
    (["data=jsonl", "data.path=/no/such/file.jsonl"], "/no/such/file.jsonl"),
    (["train.lr=-1"], "train.lr"),
    (["threads=0"], "threads"),
])
def test_user_errors_stop_the_job_before_anything_is_prepared(tmp_path, monkeypatch, overrides, named):
    monkeypatch.delenv("RMHARNESS_TEST_NO_SUCH_KEY", raising=False)
    out = job(tmp_path, "run", overrides)
    assert out["status"] == "user_error" and named in out["error"], out["error"]
    assert "Traceback" not in out["error"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "user_error"
    assert not (tmp_path / "cache").exists()  # no data, no backbone, nothing trained


def test_result_path_taken_by_a_directory_is_found_before_training(tmp_path):
    (tmp_path / "run" / "curves.csv").mkdir(parents=True)  # before: found when writing, after training
    out = job(tmp_path, "run", ["opt=none"])
    assert out["status"] == "user_error" and "curves.csv" in out["error"]
    assert not (tmp_path / "cache").exists()


def test_failed_job_keeps_the_metrics_it_computed(tmp_path, monkeypatch, caplog):
    """A failure after evaluation (here: in the studies) keeps accuracy and parameters; an internal error keeps
    its traceback in the log."""
    import harness.optimize.study as study

    def broken(*args, **kwargs):
        raise RuntimeError("studies broke")

    monkeypatch.setattr(study, "run_studies", broken)
    with caplog.at_level(logging.ERROR):
        out = job(tmp_path, "run", [*TINY_OVERRIDES, "opt=bon"])
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["status"] == "failed" and "studies broke" in on_disk["error"]
    assert on_disk["accuracy"] == out["accuracy"] and on_disk["accuracy"]["gold"]["overall"] > 0
    assert on_disk["params"]["total"] > 0 and on_disk["timing_s"]["train"] > 0
    assert "Traceback" in caplog.text


# ------------------------------------------------------------------------------------ resume


def test_resume_needs_the_same_data_content_and_a_readable_metrics_file(tmp_path, caplog):
    data = write_pairs(tmp_path / "pairs.jsonl", 60)
    overrides = [*JSONL_OVERRIDES, f"data.path={data}"]
    first = job(tmp_path, "run", overrides)
    assert first["status"] == "ok" and not first.get("resumed"), first["error"]
    assert job(tmp_path, "run", overrides).get("resumed")  # nothing changed: not recomputed

    # The same path, other content (before: "job already done", the old metrics kept).
    write_pairs(data, 40, swap=True)
    changed = job(tmp_path, "run", overrides)
    assert changed["status"] == "ok" and not changed.get("resumed")
    assert changed["data_fingerprint"] != first["data_fingerprint"]
    assert changed["accuracy"]["human"]["n"] != first["accuracy"]["human"]["n"]

    # A truncated metrics.json (before: a JSONDecodeError naming no file) is named and the job recomputed.
    metrics = tmp_path / "run" / "metrics.json"
    metrics.write_text(metrics.read_text()[:100])
    with caplog.at_level(logging.WARNING):
        again = job(tmp_path, "run", overrides)
    assert again["status"] == "ok" and not again.get("resumed")
    assert str(metrics) in caplog.text and "recomputed" in caplog.text
    assert again["accuracy"] == changed["accuracy"]


# ------------------------------------------------------------------------------------ the command line


def harness(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=900,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def test_user_error_is_one_message_without_traceback(tmp_path):
    """Before: the message, an 8-line traceback, and the message again."""
    proc = harness("train.lr=-1", "threads=1", f"hydra.run.dir={tmp_path}/run", f"cache_dir={tmp_path}/cache")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert output.count("train.lr=-1 must be > 0") == 1 and "Traceback" not in output
    assert read_metrics(tmp_path / "run")["status"] == "user_error"  # a stopped job still leaves its status row
    # HYDRA_FULL_ERROR=1 shows everything.
    proc = harness("data=jsonl", "threads=1", f"hydra.run.dir={tmp_path}/run2", f"cache_dir={tmp_path}/cache",
                   env={"HYDRA_FULL_ERROR": "1"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "data.path is required: pass data.path=PATH" in output and "Traceback" in output


def test_user_error_jobs_are_not_results_in_the_summary(tmp_path):
    from harness.report import aggregate
    from harness.results import write_metrics

    write_metrics(tmp_path / "0", {"status": "ok", "error": None, "seed": 0, "accuracy": {"human": {"overall": 0.7}}})
    write_metrics(tmp_path / "1", {"status": "user_error", "error": "seed='abc' must be an integer", "seed": None})
    out = aggregate(tmp_path, figures=False)
    assert out["n_jobs"] == 1 and out["n_failed"] == 0
    assert out["user_errors"] == [{"job_dir": "1", "error": "seed='abc' must be an integer"}]
    assert list(read_summary(out["summary"])["job_dir"]) == ["0"]


@pytest.mark.slow
def test_sweep_with_a_user_error_still_summarises_the_other_jobs(tmp_path):
    """Before: `seed=abc` in a sweep raised out of the job, and the sweep wrote no summary.csv at all."""
    sweep = tmp_path / "sweep"
    proc = harness("-m", "seed=0,abc", "opt=none", *TINY_OVERRIDES, f"cache_dir={tmp_path / 'cache'}",
                   f"hydra.sweep.dir={sweep}")
    assert proc.returncode != 0
    assert "seed='abc' must be an integer" in proc.stdout + proc.stderr
    summary = read_summary(sweep / "summary.csv")
    assert list(summary["seed"]) == [0] and list(summary["status"]) == ["ok"]  # the user error is not a result


def test_a_target_that_names_nothing_is_a_user_error_but_a_broken_harness_module_is_not(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from harness.errors import UserError
    from harness.job import build

    for target in ("harness.archs.no_such_module.Arch", "harness.archs.single.NoSuchClass"):
        with pytest.raises(UserError, match="arch"):
            build(OmegaConf.create({"_target_": target}), "arch")
    # A module that exists but whose own imports fail (an internal bug) keeps its traceback.
    package = tmp_path / "brokenpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "arch.py").write_text("from harness.archs.base import no_such_name\nclass Arch: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Exception) as info:
        build(OmegaConf.create({"_target_": "brokenpkg.arch.Arch"}), "arch")
    assert not isinstance(info.value, UserError)
