"""lm-eval capability of a policy (harness/optimize/capability.py): the harness's own world_facts task runs offline
on an in-memory tiny policy; a wrong task name is a clear error."""

import pytest
from conftest import make_policy

from harness.optimize.capability import LOCAL_TASKS, CapabilityConfig, policy_capability, world_facts_rows
from harness.world.vocab import COLOURS

CFG = CapabilityConfig(tasks=["world_facts"], limit=None, batch_size=64, questions_per_entity=1)


def test_world_facts_rows_ask_every_entity_its_true_colour(tiny):
    world = tiny.data.world
    rows = world_facts_rows(world, questions_per_entity=2, seed=0)
    assert len(rows) == 2 * len(world.knowledge)
    for row in rows:
        # The world's objective-QA prompt: its marker ("fact", or the neutral "prompt"), topics, the question.
        assert row["prompt"].split(" : ")[0] in ("fact", "prompt") and " : tell me about " in row["prompt"]
        assert row["prompt"].endswith(f"what colour is {row['entity']} ?")
        assert row["choices"][row["label"]] == f"answer is {world.knowledge[row['entity']]}"
        assert len(row["choices"]) == len(COLOURS)
    assert rows == world_facts_rows(world, questions_per_entity=2, seed=0)


def test_world_facts_runs_offline_on_the_in_memory_policy(tiny):
    policy = make_policy(tiny)
    local = {"world_facts": LOCAL_TASKS["world_facts"](tiny.data, tiny.cache, 0, CFG)}
    out = policy_capability(policy.model, policy.tokenizer, ["world_facts"], local=local, limit=12, batch_size=64)
    block = out["world_facts"]
    assert block["n_samples"] == 12
    assert 0.0 <= block["acc"] <= 1.0 and 0.0 <= block["acc_norm"] <= 1.0
    # Accuracy is a whole number of right answers out of 12.
    assert abs(block["acc"] * 12 - round(block["acc"] * 12)) < 1e-9


def test_unknown_task_is_a_clear_error(tiny, lm_eval_index):
    policy = make_policy(tiny)
    with pytest.raises(ValueError, match="unknown lm-eval task.*no_such_task.*world_facts"):
        policy_capability(policy.model, policy.tokenizer, ["no_such_task"], local={})


@pytest.mark.slow
def test_hub_task_offline_is_a_clear_error(tiny, monkeypatch):
    """A bundled lm-eval task reads its dataset from the hub: offline, the error says so (~30 s: task indexing)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    policy = make_policy(tiny)
    with pytest.raises(RuntimeError, match="arc_easy.*hub.*OFFLINE"):
        policy_capability(policy.model, policy.tokenizer, ["arc_easy"], limit=4)
