"""metrics.json says what produced it: package versions and the harness's git commit + dirty flag, never failing."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch
from conftest import compose

from harness import provenance
from harness.job import run_job

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def test_package_versions_name_every_package():
    versions = provenance.package_versions()
    assert set(versions) == {"python", "torch", "transformers", "peft", "hydra", "harness"}
    assert versions["torch"] == torch.__version__
    assert all(isinstance(v, str) and v for v in versions.values())


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@needs_git
def test_git_state_reads_commit_and_dirty_flag(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert provenance.git_state(tmp_path) == {"commit": head.strip(), "dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert provenance.git_state(tmp_path) == {"commit": head.strip(), "dirty": True}


def test_no_git_or_no_checkout_reads_null(tmp_path, monkeypatch):
    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None}  # not a checkout
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    assert provenance.git_state() == {"commit": None, "dirty": None}


def test_a_stopped_job_still_records_versions_and_git(tmp_path):
    metrics = run_job(compose(["threads=0"]), tmp_path, {"arch": "single"}, ["threads=0"])
    assert metrics["status"] == "user_error" and "threads=0" in metrics["error"]  # a bad value, stopped early
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["versions"] == provenance.package_versions()
    assert set(written["git"]) == {"commit", "dirty"}
