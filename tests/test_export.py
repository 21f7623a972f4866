"""Export and load of every architecture: the folder is self-describing (safetensors + JSON, no pickle), loads
with one call and scores exactly as the job did; dense RMs are plain transformers folders; a job exports by
default; the TRL reward callable drives TRL's own GRPOTrainer."""

import json
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, TINY_OVERRIDES, compose
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

import harness
from harness.export import META_FILE, WEIGHTS_FILE, export_reward_model, load_reward_model, trl_reward_func
from harness.job import run_job

ARCHS = sorted(p.stem for p in Path(CONF_DIR, "arch").glob("*.yaml"))
DATA = Path(CONF_DIR).parent / "tests" / "data"

@pytest.mark.parametrize("name", ARCHS)
def test_every_arch_loads_back_with_the_jobs_scores(exported, name, tiny):
    cfg, rm, out, info = exported(name)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {META_FILE, WEIGHTS_FILE, "backbone/config.json", "backbone/tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))]  # no pickle anywhere
    meta = json.loads((out / META_FILE).read_text())
    assert meta["arch"]["_target_"] == cfg.arch._target_ and meta["domains"] == tiny.data.domains
    assert meta["versions"]["rmharness"] and meta["params"] == rm.param_counts()

    loaded = harness.load_reward_model(out)
    # Every tensor comes back, bit for bit ...
    want, got = rm.state_dict(), loaded.rm.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    # ... and the texts score as the job scored them (the job: encoded test split, rm.score).
    ds = tiny.data.splits["test"]
    for side, seqs in (("chosen", tiny.test.chosen), ("rejected", tiny.test.rejected)):
        job = rm.score(seqs)
        assert torch.equal(loaded.score(ds["prompt"], ds[side]), job), f"{name}: {side} scores differ"


@pytest.mark.parametrize("name, members", [("single", ["model"]), ("umm", ["merged"]),
                                           ("ens_mean", ["member0", "member1"]), ("more", []), ("warm", ["model"]),
                                           ("single_judge_compute", ["model"]), ("armo", [])])
def test_dense_rms_are_plain_transformers_folders(exported, name, members, tiny):
    _, rm, out, info = exported(name)
    assert info["dense"] == sorted(members)
    ds = tiny.data.splits["test"]
    if name.startswith("ens"):  # (N, k): each member's own raw reward (the views; aggregation re-expresses them)
        expected = torch.stack([rm.score(tiny.test.chosen, scorer=view.score) for view in rm.views().values()], -1)
    for i, member in enumerate(members):
        folder = out / "dense" / member
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()  # no harness code involved
        tok = AutoTokenizer.from_pretrained(folder)
        template = model.config.rmharness_prompt_template
        texts = [template.format(prompt=p, response=r) for p, r in zip(ds["prompt"], ds["chosen"], strict=True)]
        enc = tok(texts, truncation=True, padding=True, return_tensors="pt")
        assert tok.model_max_length == tiny.backbone.max_length
        # An over-long text loses its prompt's start, not the response's end (the harness's truncation side).
        long_text = template.format(prompt=" ".join([ds["prompt"][0]] * 50), response=ds["chosen"][0])
        full, cut = tok(long_text)["input_ids"], tok(long_text, truncation=True)["input_ids"]
        assert len(full) > len(cut) == tiny.backbone.max_length and cut[-8:] == full[-8:]
        with torch.inference_mode():
            reward = model(**enc).logits.squeeze(-1)
        want = expected[:, i] if name.startswith("ens") else rm.score(tiny.test.chosen)
        torch.testing.assert_close(reward, want, rtol=0, atol=1e-5)


def test_loading_leaves_the_global_rng_alone(exported):
    _, _, out, _ = exported("single")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_reward_model(out)
    assert torch.equal(torch.rand(3), expected)


def test_not_an_export_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a reward model exported by rmharness"):
        load_reward_model(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"format": "rmharness-reward-model", "format_version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        load_reward_model(tmp_path)


def _job(tmp_path, name, overrides):
    cfg = compose([*TINY_OVERRIDES, f"cache_dir={tmp_path / 'cache'}", "opt=none", *overrides])
    return run_job(cfg, tmp_path / name, {"arch": "single"}, overrides)


def test_a_job_exports_by_default_and_benchmarks_its_rm(tmp_path):
    from harness.results import collect
    from harness.rewardbench import evaluate_benchmark

    rb1, rb2 = str(DATA / "rewardbench_eval.jsonl"), str(DATA / "rewardbench2.jsonl")
    out = _job(tmp_path, "a", [f"eval.benchmarks=[{rb1},{{path:{rb2},format:rewardbench2}}]"])
    assert out["status"] == "ok", out["error"]
    folder = tmp_path / "a" / "reward_model"
    assert out["export"]["path"] == str(folder) and out["timing_s"]["export"] < 60
    # The exported RM reproduces the job's own benchmark numbers, and they reach the sweep summary.
    loaded = harness.load_reward_model(folder)
    assert evaluate_benchmark(loaded, rb1) == out["benchmarks"]["rewardbench_eval"]
    assert evaluate_benchmark(loaded, rb2) == out["benchmarks"]["rewardbench2"]
    summary = collect(tmp_path)
    assert summary["benchmarks.rewardbench2.subsets.Ties.score"].iloc[0] == pytest.approx(
        out["benchmarks"]["rewardbench2"]["subsets"]["Ties"]["score"])
    assert "benchmarks.rewardbench_eval.sections.Chat" in summary.columns

    off = _job(tmp_path, "b", ["export=false"])
    assert off["status"] == "ok" and "export" not in off and not (tmp_path / "b" / "reward_model").exists()


def test_a_missing_benchmark_file_fails_before_training(tmp_path):
    out = _job(tmp_path, "a", [f"eval.benchmarks=[{tmp_path / 'nope.jsonl'}]"])
    assert out["status"] == "user_error" and "nope.jsonl is not a file" in out["error"]
    assert "train" not in out.get("timing_s", {})


def test_trl_reward_func_contract(exported, tiny):
    _, rm, out, _ = exported("single")
    scorer = load_reward_model(out)
    reward = trl_reward_func(scorer)
    ds = tiny.data.splits["test"]
    prompts, completions = ds["prompt"][:4], ds["chosen"][:4]
    rewards = reward(prompts=prompts, completions=completions, completion_ids=None, trainer_state=None)
    assert isinstance(rewards, list) and all(isinstance(r, float) for r in rewards)
    assert rewards == scorer.score(prompts, completions).tolist()
    assert rewards == pytest.approx(rm.score(tiny.test.chosen)[:4].tolist(), abs=1e-6)  # other batches, same RM
    # Conversational inputs: the last user turn and the assistant's answer.
    conv = reward(prompts=[[{"role": "system", "content": "be brief"}, {"role": "user", "content": p}]
                           for p in prompts],
                  completions=[[{"role": "assistant", "content": c}] for c in completions])
    assert conv == rewards
    assert reward.__name__ == "rmharness"
    with pytest.raises(TypeError, match="'user' turn"):
        reward(prompts=[[{"role": "assistant", "content": "x"}]], completions=["y"])


def test_trl_grpo_trainer_runs_two_steps_on_the_exported_rm(exported, tiny, tmp_path):
    """TRL's own GRPOTrainer (offline, CPU) with the exported RM as its reward function and the tiny backbone's
    causal LM as the policy: two optimizer steps, every reward it logged came from the RM."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    _, _, out, _ = exported("single")
    scorer = load_reward_model(out)
    reward, calls = trl_reward_func(scorer), []

    def recording(prompts, completions, **kwargs):
        rewards = reward(prompts, completions, **kwargs)
        calls.append((list(prompts), list(completions), rewards))
        return rewards

    recording.__name__ = "rm"
    policy = AutoModelForCausalLM.from_pretrained(tiny.backbone.path, dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=2, learning_rate=1e-3, report_to=[], use_cpu=True,
                      logging_steps=1, save_strategy="no", bf16=False, seed=0)
    trainer = GRPOTrainer(model=policy, reward_funcs=recording, args=args, processing_class=tiny.backbone.tokenizer,
                          train_dataset=Dataset.from_dict({"prompt": tiny.data.splits["train"]["prompt"][:8]}))
    trainer.train()
    assert trainer.state.global_step == 2 and len(calls) == 2
    for (prompts, completions, rewards), logged in zip(calls, [h for h in trainer.state.log_history
                                                                if "rewards/rm/mean" in h], strict=True):
        assert rewards == scorer.score(prompts, completions).tolist()
        assert logged["rewards/rm/mean"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-6)
    assert any(not torch.equal(before[n], p) for n, p in policy.named_parameters())  # the policy moved


def test_dense_copies_can_be_left_out(exported, tiny, tmp_path):
    cfg, rm, _, _ = exported("ens_mean")
    info = export_reward_model(rm, tiny.backbone, cfg.arch, tmp_path / "rm", domains=tiny.data.domains, seed=0,
                               dense=False)
    assert info["dense"] == [] and not (tmp_path / "rm" / "dense").exists()
    ds = tiny.data.splits["test"]
    assert torch.equal(load_reward_model(tmp_path / "rm").score(ds["prompt"], ds["chosen"]), rm.score(tiny.test.chosen))
