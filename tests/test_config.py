"""Every option of every config group composes and instantiates; bad names and values fail clearly."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from harness.archs.base import RewardModel, TrainConfig
from harness.job import build, run_job
from harness.results import read_metrics

GROUPS = ["arch", "data", "backbone", "policy", "arch/labeler", "gold", "opt"]
# A nested group is chosen under its parent's option that declares it.
PARENT = {"arch/labeler": ["arch=dmoerm"]}
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted(Path(CONF_DIR, g).glob("*.yaml"))]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option):
    cfg = compose([*PARENT.get(group, []), f"{group}={option}"])
    assert cfg.seed == 0 and "cache_dir" in cfg
    if group == "opt":
        # opt/<study>_<profile>.yaml are budgets of <study> (same package): bon_smollm2 fills opt.bon.
        assert option == "none" and not cfg.opt or option.split("_")[0] in cfg.opt


@pytest.mark.parametrize("option", [o for g, o in OPTIONS if g == "arch"])
def test_every_arch_instantiates_a_reward_model(option):
    arch = build(compose([f"arch={option}"]).arch, "arch")
    assert isinstance(arch, RewardModel)


def test_default_composition_and_multi_select_opt():
    cfg = compose()
    assert cfg.arch._target_.endswith("SingleRM") and cfg.data._target_.endswith("SyntheticData")
    cfg = compose(["opt=[bon,ppo]"]) if Path(CONF_DIR, "opt", "ppo.yaml").exists() else compose(["opt=[bon]"])
    assert "bon" in cfg.opt


def test_results_go_under_results_dir():
    cfg = compose(return_hydra_config=True)
    assert cfg.hydra.run.dir.startswith("results/") and cfg.hydra.sweep.dir.startswith("results/")


def test_unknown_top_level_key_is_an_error():
    with pytest.raises(Exception, match="foo"):
        compose(["foo=1"])


def _run_harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120,
                          cwd=Path(CONF_DIR).parent)


def test_unknown_arch_lists_valid_choices():
    proc = _run_harness("arch=nope")
    assert proc.returncode != 0
    assert "arch" in proc.stderr and "single" in proc.stderr and "nope" in proc.stderr


@pytest.mark.parametrize("override,key", [("train.lr=-1", "train.lr"), ("data.world.human_flip_rate=0.7",
                                          "human_flip_rate"), ("data.world.domains=[]", "domains"),
                                         ("data.n_train=0", "n_train")])
def test_bad_values_name_the_key(override, key, tmp_path):
    # In process (the job as the CLI runs it); test_job_checks' test_user_error_is_one_message_without_traceback
    # runs one of them through the command line.
    cfg = compose([override, "opt=none", f"cache_dir={tmp_path}/cache"])
    out = run_job(cfg, tmp_path, {}, [override])
    assert out["status"] == "user_error" and key in out["error"]
    assert read_metrics(tmp_path)["status"] == "user_error"  # a stopped job still leaves its status row


def test_train_config_validation():
    good = dict(lr=1e-3, weight_decay=0.0, batch_size=32, epochs=1, warmup=0.0, max_grad_norm=1.0,
                evals_per_epoch=1, patience=1, bucket_chunks=1)
    TrainConfig(**good).validate()
    for key, bad in [("lr", 0.0), ("batch_size", 0), ("warmup", 1.0), ("weight_decay", -1.0)]:
        with pytest.raises(ValueError, match=f"train.{key}"):
            TrainConfig(**{**good, key: bad}).validate()


@pytest.mark.parametrize("suite", ["smoke", "paper"])
def test_suites_sweep_every_arch_config_without_a_hand_list(suite):
    arch = compose([f"+suite={suite}"], return_hydra_config=True).hydra.sweeper.params.arch
    choice = OverridesParser.create().parse_overrides([f"arch={arch}"])[0].value()
    shipped = [o for g, o in OPTIONS if g == "arch"]
    assert choice.filter(shipped) == shipped and len(shipped) >= 2


def test_only_the_arch_that_asks_for_labels_carries_a_labeler():
    assert "labeler" not in compose() and "labeler" not in compose(["arch=rodos"]).arch
    cfg = compose(["arch=dmoerm", "arch/labeler=openai", "arch.labeler.model=m"])
    assert cfg.arch.labeler._target_.endswith("OpenAILabeler") and cfg.arch.labeler.model == "m"


def test_instantiate_with_unknown_argument_names_group():
    cfg = compose()
    node = cfg.arch.copy()
    with open_dict(node):
        node["bogus"] = 1
    with pytest.raises(ValueError, match="arch"):
        build(node, "arch")


def test_smollm2_profile_composes_real_models_with_both_studies():
    cfg = compose(["+profile=smollm2", "arch=ens_wco"])
    assert cfg.backbone.name == "smollm2" and cfg.policy.name == "smollm2" and cfg.arch.aggregator == "wco"
    assert set(cfg.opt) == {"bon", "ppo"} and cfg.backbone.finetune == cfg.policy.finetune == "lora"
    assert cfg.opt.ppo.steps < compose(["opt=[ppo]"]).opt.ppo.steps  # the CPU-sized budget, not the default
    assert max(cfg.opt.bon.ns) <= cfg.opt.bon.n_samples
    assert not compose(["+profile=smollm2", "opt=none"]).opt  # the profile's budgets leave with their studies
    assert list(compose(["+profile=smollm2", "opt=[bon]"]).opt) == ["bon"]
