"""PPO: the pieces against hand computations, KL from 0 upwards, and a toy bandit whose reward PPO raises."""


import numpy as np
import pytest
import torch
from conftest import make_policy

from harness.optimize.ppo import PPOConfig, gae, k2_kl, masked_whiten, run_ppo

UNIT = {"proxy": {"mean": 0.0, "scale": 1.0}, "gold": {"mean": 0.0, "scale": 1.0}}


def config(**overrides) -> PPOConfig:
    base = dict(steps=3, rollout_batch=16, ppo_epochs=2, minibatches=2, lr=3e-3, value_lr=1e-3, kl_coef=0.0,
                gamma=1.0, lam=0.95, clip_range=0.2, value_clip_range=0.2, max_grad_norm=1.0, eval_every=1,
                eval_prompts=4, eval_samples=4, train_prompts=32)
    cfg = PPOConfig(**{**base, **overrides})
    cfg.validate()
    return cfg


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.4, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 2 ended at its 2nd token
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    a2 = 1 - 0.3
    a1 = (0 + 0.3 - 0.2) + 0.95 * a2
    a0 = (0 + 0.2 - 0.1) + 0.95 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    b1 = 2.0 - 0.4  # what lies past the end (reward 5, value 9) must not leak in
    b0 = (0 + 0.4 - 0.5) + 0.95 * b1
    assert adv[1, :2].tolist() == pytest.approx([b0, b1]) and adv[1, 2] == 0
    # lam = 1, gamma = 1: returns are the Monte-Carlo sum of the rewards to come.
    _, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert ret[0].tolist() == pytest.approx([1.0, 1.0, 1.0]) and ret[1, :2].tolist() == pytest.approx([2.0, 2.0])


def test_whiten_and_k2():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    w = masked_whiten(x, mask)
    kept = w[mask.bool()]
    assert kept.mean().item() == pytest.approx(0, abs=1e-6) and kept.std(unbiased=False).item() == pytest.approx(
        1, abs=1e-4)
    assert w[0, 2] == 0
    logp, ref = torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[-1.5, -2.0, -9.0]])
    assert k2_kl(logp, ref, torch.tensor([[1.0, 1.0, 0.0]])).item() == pytest.approx(0.5 * 0.25)


def test_kl_is_zero_at_step_0_and_grows(tiny):
    policy = make_policy(tiny)
    prompts = tiny.data.eval_prompts(36, seed=0)

    def length(p, r, d):  # any reward that moves the policy
        return np.array([len(x.split()) for x in r], dtype=float)

    out = run_ppo(config(steps=3), policy, length, length, train_prompts=prompts[4:], eval_prompts=prompts[:4],
                  seed=0)
    kl = [r["kl"] for r in out["rows"]]
    assert [r["step"] for r in out["rows"]] == [0, 1, 2, 3]
    assert kl[0] == pytest.approx(0, abs=1e-6)
    assert 0 < kl[1] < kl[3]
    assert {"ppo/approx_kl", "ppo/clipfrac", "ppo/kl_to_ref"} <= set(out["log"][0])
    assert out["log"][0]["ppo/kl_to_ref"] >= 0


def test_models_in_eval_mode_for_rollouts_and_log_probs_train_mode_for_updates(tiny, monkeypatch):
    """Dropout must not act while sampling or computing the rollout's log-probs and values (hf policies have it)."""
    import harness.optimize.ppo as ppo

    seen = []
    for name in ("token_logprobs", "token_values"):
        real = getattr(ppo, name)

        def spy(model, *args, real=real, name=name):
            seen.append((name, model.training, torch.is_grad_enabled()))
            return real(model, *args)

        monkeypatch.setattr(ppo, name, spy)
    policy = make_policy(tiny)
    generate = policy.generate

    def spy_generate(model, *args, **kwargs):
        seen.append(("generate", model.training, torch.is_grad_enabled()))
        return generate(model, *args, **kwargs)

    monkeypatch.setattr(policy, "generate", spy_generate)
    prompts = tiny.data.eval_prompts(20, seed=0)
    length = lambda p, r, d: np.array([len(x.split()) for x in r], dtype=float)  # noqa: E731
    run_ppo(config(steps=1, rollout_batch=8, ppo_epochs=1, eval_prompts=2, eval_samples=2), policy, length, length,
            train_prompts=prompts[4:], eval_prompts=prompts[:4], seed=0, units=UNIT)
    no_grad = [(name, training) for name, training, grad in seen if not grad]
    with_grad = [(name, training) for name, training, grad in seen if grad]
    assert {name for name, _ in no_grad} == {"generate", "token_logprobs", "token_values"}
    assert not any(training for _, training in no_grad)
    assert {name for name, _ in with_grad} == {"token_logprobs", "token_values"} and all(t for _, t in with_grad)


def test_units_from_step0_samples_need_two_per_prompt(tiny):
    policy = make_policy(tiny)
    prompts = tiny.data.eval_prompts(12, seed=0)
    length = lambda p, r, d: np.array([len(x.split()) for x in r], dtype=float)  # noqa: E731
    with pytest.raises(ValueError, match="eval_samples=1"):
        run_ppo(config(steps=1, rollout_batch=4, eval_prompts=2, eval_samples=1), policy, length, length,
                train_prompts=prompts[2:], eval_prompts=prompts[:2], seed=0)


def bandit(tiny, steps: int, seed: int = 0):
    """One-token responses at a low temperature (so the arms are not ~300 near-uniform ones); reward 1 for the
    initial policy's most likely first word, 0 for any other. Returns (run, P(target) before, after)."""
    policy = make_policy(tiny, max_new_tokens=1, temperature=0.25)
    prompts = tiny.data.eval_prompts(80, seed=0)
    ids, mask = policy.encode_prompts([p for p, _ in prompts[:16]])

    def p_first(model):  # exact first-token distribution after each eval prompt, averaged (V,)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
        return torch.softmax(logits[:, -1] / policy.temperature, -1).mean(0)

    before = p_first(policy.model)
    words = before.clone()
    words[policy.tokenizer.all_special_ids] = 0  # the target must be a word: special tokens decode to ""
    target_id = int(words.argmax())
    target = policy.tokenizer.convert_ids_to_tokens(target_id)

    def reward(p, r, d):
        return np.array([float(x == target) for x in r])

    cfg = config(steps=steps, rollout_batch=64, ppo_epochs=4, minibatches=2, lr=3e-3, eval_every=steps,
                 eval_prompts=16, eval_samples=8, train_prompts=64)
    out = run_ppo(cfg, policy, reward, reward, train_prompts=prompts[16:], eval_prompts=prompts[:16], seed=seed,
                  units=UNIT)
    return out, before[target_id].item(), p_first(out["model"])[target_id].item()


def test_ppo_raises_the_reward_of_a_toy_bandit(tiny):
    out, before, after = bandit(tiny, steps=6)
    assert after > max(0.5, 2 * before)  # P(rewarded token), exactly
    share = [r["proxy"] for r in out["rows"]]  # its share among fresh eval samples (the mean reward)
    assert share[-1] > share[0] + 0.3


def test_same_seed_same_run(tiny):
    assert bandit(tiny, steps=2)[0]["rows"] == bandit(tiny, steps=2)[0]["rows"]
