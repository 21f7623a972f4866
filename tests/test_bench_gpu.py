"""benchmarks/gpu.py --smoke: the GPU benchmark's every section runs at tiny sizes on the CPU and prints JSON."""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import CONF_DIR
from transformers.utils import logging as hf_logging

SCRIPT = Path(CONF_DIR).parent / "benchmarks" / "gpu.py"


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    verbosity = hf_logging.get_verbosity()
    spec.loader.exec_module(module)
    yield module
    hf_logging.set_verbosity(verbosity)  # the script quiets transformers for its own run
    hf_logging.enable_progress_bar()


def test_smoke_run_prints_every_section(bench, capsys, tmp_path):
    out = tmp_path / "bench.json"
    report = bench.main(["--smoke", "--threads", "1", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert printed == report == json.loads(out.read_text())
    assert report["smoke"] and report["environment"]["device"].startswith("cpu")
    (shape,) = report["shapes"].values()
    training = shape["training"]
    assert training["pairs"] == 64 and training["real_tokens"] > 0
    # Bucketing pads less than random batches: the number the padding-free and bucketed variants act on.
    assert 0 <= training["padding_share"]["bucketed_batches"] < training["padding_share"]["random_batches"] < 1
    for name in ("harness", "harness_packed"):
        variant = training["variants"][name]
        assert variant["pairs_per_s"] > 0 and variant["real_tokens_per_s"] > 0 and variant["peak_gib"] is None
    if importlib.util.find_spec("trl") is None:
        assert "trl" not in training["variants"] and any("trl" in n for n in training["notes"])
    else:
        assert training["variants"]["trl"]["pairs_per_s"] > 0
        assert training["goal"]["met"] is None  # judged on a GPU only
        assert training["variants"]["harness"]["speedup_vs_trl"] > 0
    assert shape["scoring"]["sequences_per_s"] > 0 and shape["scoring"]["sequences"] == 32
    (gen,) = shape["generation"]["batches"]
    assert gen["batch"] == 4 and 0 < gen["new_tokens"] <= 4 * 8 and gen["new_tokens_per_s"] > 0


def test_smoke_without_trl_says_so(bench, capsys):
    report = bench.main(["--smoke", "--threads", "1", "--no-trl", "--gen-batches", "2"])
    (shape,) = report["shapes"].values()
    assert "trl" not in shape["training"]["variants"] and shape["training"]["goal"] is None
    assert shape["training"]["notes"] == ["trl: skipped (--no-trl)"]
