"""The smoke-size regression benchmark CI runs: a seeded tiny sweep checked against baselines/ci.json.

Regenerate the baseline after an intended change (and say why in the commit):
    python -m harness <CI_SWEEP from tests/conftest.py> hydra.sweep.dir=/tmp/ci cache_dir=/tmp/ci-cache
    python -m harness.regress /tmp/ci baselines/ci.json --update
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CI_SWEEP, CONF_DIR

ROOT = Path(CONF_DIR).parent
BASELINE = ROOT / "baselines" / "ci.json"


@pytest.fixture(scope="module")
def ci_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ci")
    sweep = tmp / "sweep"
    proc = subprocess.run([sys.executable, "-m", "harness", *CI_SWEEP, f"hydra.sweep.dir={sweep}",
                           f"cache_dir={tmp / 'cache'}"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def _regress(run: Path, baseline: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.regress", str(run), str(baseline)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_ci_sweep_matches_baseline(ci_sweep):
    proc = _regress(ci_sweep, BASELINE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_moved_baseline_value_is_a_regression(ci_sweep, tmp_path):
    baseline = json.loads(BASELINE.read_text())
    job = next(iter(baseline["jobs"]))
    metric = "accuracy.gold.overall"
    entry = baseline["jobs"][job][metric]
    entry["value"] = entry["value"] + entry["tol"] + 0.05  # the run now looks worse than tolerated
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(baseline))
    proc = _regress(ci_sweep, moved)
    assert proc.returncode == 1 and metric in proc.stdout
