"""Data-parallel training (harness/parallel.py): the batch split and its loss weights, and a 2-process job on the
CPU (torchrun, gloo) that trains the same reward model as the 1-process job."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, TINY_OVERRIDES, compose

from harness import parallel

ROOT = Path(CONF_DIR).parent


@pytest.mark.parametrize("world,n", [(2, 8), (3, 7), (4, 2)])
def test_shares_cover_the_batch_and_weights_give_its_mean(monkeypatch, world, n):
    """Each process's mean loss times its weight, averaged over processes (what DDP's gradient average does),
    is the whole batch's mean; a process left without an example still runs one, at weight 0."""
    idx = torch.arange(100, 100 + n)
    per_example = torch.randn(200, dtype=torch.float64)
    monkeypatch.setattr(parallel, "active", lambda: True)
    monkeypatch.setattr(parallel, "world_size", lambda: world)
    shares, total = [], 0.0
    for r in range(world):
        monkeypatch.setattr(parallel, "rank", lambda r=r: r)
        share, weight = parallel.shard(idx)
        assert len(share) >= 1
        if weight > 0:
            shares.append(share)
        total += weight * per_example[share].mean().item()
    assert sorted(torch.cat(shares).tolist()) == idx.tolist()
    assert total / world == pytest.approx(per_example[idx].mean().item(), rel=1e-12)


def test_one_process_is_todays_code():
    idx = torch.arange(5)
    share, weight = parallel.shard(idx)
    assert share is idx and weight == 1.0
    assert parallel.share_of(idx) is idx and parallel.batch_mean(0.25, 1.0) == 0.25
    assert parallel.world_size() == 1 and parallel.is_writer() and parallel.all_agree(True)
    forward, model = object(), torch.nn.Linear(2, 2)
    params = list(model.parameters())
    trainer = parallel.data_parallel(model, forward, params)
    assert trainer.forward is forward and trainer.evaluate is forward and trainer.params is params
    trainer.close()
    assert parallel.artifact_identity() is None


def test_strategy_is_an_optional_group_that_names_its_key():
    """parallel=fsdp selects conf/parallel/fsdp.yaml; without a selection a job's config has no parallel key (the
    configs of earlier jobs, and so their resumption, stay as they were) and the strategy is ddp."""
    assert "parallel" not in compose() and parallel.strategy_of(compose()) == "ddp"
    assert parallel.strategy_of(compose(["parallel=fsdp"])) == "fsdp"
    with pytest.raises(ValueError, match=r"parallel\.strategy='zero' must be one of ddp \| fsdp"):
        parallel.check_strategy("zero")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_train_what_one_process_trains(tmp_path, strategy):
    """~30-90 s on 2 shared cores: two torchrun processes (gloo) then one process, same config and cache. fsdp:
    FSDP2 shards the RM during training and gathers it back whole (the exported weights are the gathered ones)."""
    from safetensors.torch import load_file

    common = [*TINY_OVERRIDES, "opt=none", "device=cpu", f"cache_dir={tmp_path / 'cache'}"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "harness", *common, f"parallel={strategy}", f"hydra.run.dir={tmp_path / 'two'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    # Run second: its data and backbone come from the entries rank 0 wrote, so they are whole and sound.
    one = subprocess.run([sys.executable, "-m", "harness", *common, f"hydra.run.dir={tmp_path / 'one'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert m2["status"] == "ok" and m2["compute"]["processes"] == 2 and m1["compute"]["processes"] == 1
    assert m2["compute"]["strategy"] == strategy and m2["config"]["parallel"] == {"strategy": strategy}
    for split in ("gold", "human"):
        assert m2["accuracy"][split]["overall"] == pytest.approx(m1["accuracy"][split]["overall"], abs=0.02)
    assert [r["steps"] for r in m2["train_log"]] == [r["steps"] for r in m1["train_log"]]
    # The same updates up to the order of float sums: the trained weights agree closely.
    w1, w2 = (load_file(str(tmp_path / d / "reward_model" / "model.safetensors")) for d in ("one", "two"))
    assert w1.keys() == w2.keys()
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4
    # Rank 0 alone wrote the results; rank 1 only trained.
    assert len(list((tmp_path / "two").rglob("metrics.json"))) == 1
    assert "data_parallel" not in m2
