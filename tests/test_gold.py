"""gold=rm: a reward model as the gold -- labels of policy-sample pairs (Bradley-Terry + label noise), the
proxy trained on them, BoN read against the gold RM."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES, compose

from harness.export import SequenceClassifierScorer, load_any_reward_model, load_reward_model
from harness.gold import RMGold, label_pairs
from harness.job import run_job

POLICY_OVERRIDES = ["policy.hidden_size=32", "policy.intermediate_size=64", "policy.sft_steps=40",
                    "policy.sft_sequences=400"]


def test_labels_follow_gold_then_noise():
    rng = np.random.default_rng(0)
    r_a, r_b = rng.normal(size=20000), rng.normal(size=20000)
    exact = label_pairs(r_a, r_b, temperature=0.0, label_noise=0.0, rng=np.random.default_rng(1))
    assert np.array_equal(exact, r_a > r_b)
    noisy = label_pairs(r_a, r_b, temperature=0.0, label_noise=0.25, rng=np.random.default_rng(1))
    assert abs(np.mean(noisy != exact) - 0.25) < 0.015  # Coste et al.'s 25% flips
    # Bradley-Terry sampling: P(a chosen) = sigmoid(r_a - r_b) at temperature 1.
    bt = label_pairs(r_a, r_b, temperature=1.0, label_noise=0.0, rng=np.random.default_rng(1))
    p = 1 / (1 + np.exp(-(r_a - r_b)))
    assert abs(bt.mean() - p.mean()) < 0.01 and abs(np.mean(bt[p > 0.8]) - p[p > 0.8].mean()) < 0.02
    ties = label_pairs(np.zeros(4000), np.zeros(4000), 0.0, 0.0, np.random.default_rng(2))
    assert 0.45 < ties.mean() < 0.55  # a gold tie is a coin flip


def test_a_dense_export_is_a_transformers_gold_with_the_same_scores(exported, tiny, tmp_path_factory):
    _, rm, out, _ = exported("single")
    folder = out / "dense" / "model"
    hf = load_any_reward_model(folder)
    assert isinstance(hf, SequenceClassifierScorer)
    ds = tiny.data.splits["test"]
    torch.testing.assert_close(hf.score(ds["prompt"], ds["chosen"]), rm.score(tiny.test.chosen), rtol=0, atol=1e-5)
    assert isinstance(load_any_reward_model(out), type(load_reward_model(out)))
    with pytest.raises(FileNotFoundError, match="neither a reward model exported by rmharness"):
        load_any_reward_model(tmp_path_factory.mktemp("empty"))


def test_responses_from_a_file_split_by_prompt_and_labelled_by_gold(exported, tiny, tmp_path):
    _, _, out, _ = exported("single")
    ds = tiny.data.splits["train"]
    rows = [{"prompt": p, "response": r, "domain": d}
            for p, c, rj, d in zip(ds["prompt"][:40], ds["chosen"][:40], ds["rejected"][:40], ds["domain"][:40],
                                   strict=True) for r in (c, rj)]
    path = tmp_path / "responses.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    gold = RMGold(str(out), label_noise=0.0, temperature=0.0, pairs_per_prompt=1, responses=str(path),
                  fractions={"train": 0.5, "val": 0.25, "test": 0.25})
    data = gold.apply(tiny.data, None, tiny.cache, seed=0)
    sizes = {s: len(data.splits[s]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == len({r["prompt"] for r in rows}) and sizes["train"] > sizes["test"] > 0
    train = data.splits["train"]
    assert set(train["prompt"]).isdisjoint(data.splits["test"]["prompt"])
    # No noise, no temperature: the chosen side is the gold RM's preferred one, and gold_* are its rewards.
    assert all(c >= r for c, r in zip(train["gold_chosen"], train["gold_rejected"], strict=True))
    scorer = load_reward_model(out)
    torch.testing.assert_close(torch.tensor(train["gold_chosen"], dtype=torch.float32),
                               scorer.score(train["prompt"], train["chosen"]), rtol=0, atol=1e-6)
    assert data.gold_batch(train["prompt"][:3], train["chosen"][:3], train["domain"][:3]).tolist() == \
        pytest.approx(train["gold_chosen"][:3], abs=1e-6)
    with pytest.raises(ValueError, match="gold.label_noise"):
        RMGold(str(out), 0.7, 0.0, 1, "policy", {"train": 1, "val": 1, "test": 1})
    with pytest.raises(FileNotFoundError, match="gold.path"):
        RMGold(str(tmp_path / "nope"), 0.2, 0.0, 1, "policy", {"train": 1, "val": 1, "test": 1})


def test_gold_rm_job_trains_on_gold_labels_and_reads_bon_against_the_gold_rm(exported, tmp_path):
    """The acceptance set-up at tiny size: an exported RM as gold, the tiny policy's samples as responses."""
    _, _, gold_dir, _ = exported("single")
    cache = tmp_path / "cache"
    overrides = [*TINY_OVERRIDES, *POLICY_OVERRIDES, f"cache_dir={cache}", "gold=rm", f"gold.path={gold_dir}",
                 "gold.label_noise=0", "opt=bon", "opt.bon.n_prompts=6", "opt.bon.n_samples=8", "opt.bon.ns=[1,2,4,8]"]
    out = run_job(compose(overrides), tmp_path / "job", {"arch": "single", "gold": "rm"}, overrides)
    assert out["status"] == "ok", out["error"]
    # Without noise the labels are the gold RM's order: human labels and gold agree on every decided pair.
    assert out["accuracy"]["human_gold_agreement"] == 1.0
    assert out["accuracy"]["gold"]["n"] > 0 and "bon" in out
    # BoN's gold is the gold RM's score of the BoN samples.
    [samples_file] = cache.glob("bon_samples/*/samples.json")
    samples = json.loads(samples_file.read_text())
    gold = load_reward_model(gold_dir)
    raw = [gold.score([p] * len(rs), rs).double() for p, rs in zip(samples["prompts"], samples["responses"],
                                                                   strict=True)]
    assert out["bon"]["units"]["gold"]["mean"] == pytest.approx(float(torch.stack(raw).mean()), abs=1e-6)
    assert (tmp_path / "job" / "curves.csv").read_text().count("bon,") == 4
