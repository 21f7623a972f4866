"""Progress bars: drawn only on a terminal (or when forced), named after their model; stage lines."""

from __future__ import annotations

import logging

from omegaconf import OmegaConf

from harness import progress as progress_module
from harness.progress import Stages, config_name, progress


def test_no_bar_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv(progress_module.ENV_SWITCH, raising=False)
    monkeypatch.setattr(progress_module, "BAR_DELAY_S", 0.0)
    assert sum(progress(range(50), desc="policy SFT", unit="step")) == sum(range(50))
    assert capsys.readouterr().err == ""  # pytest's captured stderr is no tty


def test_forced_bar_shows_name_rate_and_count(capsys, monkeypatch):
    monkeypatch.setenv(progress_module.ENV_SWITCH, "1")
    monkeypatch.setattr(progress_module, "BAR_DELAY_S", 0.0)
    monkeypatch.setattr(progress_module, "BAR_MIN_INTERVAL_S", 0.0)
    bar = progress(total=50, desc="policy SFT", unit="step")
    bar.miniters = 1  # every update redraws (tqdm otherwise skips redraws of fast loops)
    for _ in range(50):
        bar.update()
    bar.close()
    err = capsys.readouterr().err
    assert "policy SFT" in err and "50/50" in err and "step/s" in err


def test_switch_hides_bars_on_a_terminal_too(capsys, monkeypatch):
    monkeypatch.setenv(progress_module.ENV_SWITCH, "0")
    monkeypatch.setattr(progress_module, "BAR_DELAY_S", 0.0)
    assert progress(range(3), desc="x").disable


def test_stages_count_and_names(caplog):
    stages = Stages(3)
    with caplog.at_level(logging.INFO, logger="harness"):
        stages.next("data: synthetic")
        stages.next("backbone: tiny")
    assert [r.getMessage() for r in caplog.records] == ["stage 1/3: data: synthetic", "stage 2/3: backbone: tiny"]


def test_config_name_prefers_name_then_class():
    assert config_name(OmegaConf.create({"_target_": "harness.backbones.TinyBackbone"})) == "tiny"
    assert config_name(OmegaConf.create({"_target_": "harness.data.synthetic.SyntheticData"})) == "synthetic"
    assert config_name(OmegaConf.create({"_target_": "x.PretrainedBackbone", "name": "smollm2"})) == "smollm2"
