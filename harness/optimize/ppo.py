"""A compact PPO for RLHF against a proxy reward (SPEC §7; methods.md §1.4, §5.2-5.3; ecosystem.md §3.3).

TRL 1.13+ ships no PPO, so this is our own, in the single-file style of cleanrl's ``ppo.py``:

- three models: the **policy** (a trainable copy of the initial policy), a **value model** and a frozen
  **reference** (another copy of the initial policy). The value model is a *separate* copy of the initial
  trunk with a scalar head, as in TRL's PPOTrainer, OpenRLHF and the feasibility loop — not a head on the
  policy's trunk: a shared trunk lets value-regression gradients move the policy's representation and adds a
  value-loss coefficient to tune; on the tiny policy the extra forward pass costs little;
- per token, reward ``r_t = -β (log π(a_t) - log π_ref(a_t))``, plus the standardised proxy score at the
  response's last token (its EOS, or the last token when it was cut off); β (``opt.ppo.kl_coef``) is fixed
  and recorded in metrics.json (0 by default, as in Gao et al.; Coste et al.'s ensemble results are at 0.01,
  with 0.1 for mean under label noise and 0.2 for a single RM);
- GAE(γ, λ) over response tokens, advantages whitened over the batch's response tokens; clipped surrogate
  objective (0.2) and clipped value loss (0.2); AdamW for each model;
- policy and value model in eval mode (no dropout) while sampling and computing the rollout's log-probabilities
  and values, in train mode only for the update; the reference is always in eval mode;
- KL measured with the k2 estimator ``½ (log π/π_ref)²`` summed over response tokens, averaged over samples
  (Coste App. C), on fresh samples of held-out prompts at every eval step, with proxy and gold there.

Diagnostics use cleanrl's names: ``ppo/approx_kl`` ((ratio - 1) - log ratio, policy vs rollout policy),
``ppo/clipfrac``, ``ppo/kl_to_ref`` (k2 on the rollout), ``ppo/policy_loss``, ``ppo/value_loss``,
``ppo/score`` (mean standardised proxy of the rollout).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import progress
from ..seeds import Stream, derive_seed
from .bon import REWARD_SCALES, reward_units, standardize
from .policy import Policy, response_mask

log = logging.getLogger(__name__)

# (prompts, responses, domains) -> raw scores (N,)
ScoreFn = Callable[[list[str], list[str], list[str]], np.ndarray]


@dataclass
class PPOConfig:
    steps: int
    rollout_batch: int
    ppo_epochs: int
    minibatches: int
    lr: float
    value_lr: float
    kl_coef: float
    gamma: float
    lam: float
    clip_range: float
    value_clip_range: float
    max_grad_norm: float
    eval_every: int
    eval_prompts: int
    eval_samples: int
    train_prompts: int
    # Reward units (harness.optimize.bon.reward_units): "within_prompt" (default) or "total".
    reward_scale: str = "within_prompt"
    # sqrt(KL) values at which every run's gold and proxy are read (metrics.json ppo.gold@sqrt_kl=x).
    sqrt_kl_grid: list[float] = field(default_factory=list)
    # The one sqrt(KL) of final_gold / final_gap / gold_auc; None: the run's own last point (not comparable).
    common_sqrt_kl: float | None = None

    def validate(self) -> None:
        for key in ("steps", "rollout_batch", "ppo_epochs", "minibatches", "eval_every", "eval_prompts",
                    "eval_samples", "train_prompts"):
            if getattr(self, key) < 1:
                raise ValueError(f"opt.ppo.{key}={getattr(self, key)} must be >= 1")
        if self.minibatches > self.rollout_batch:
            raise ValueError(f"opt.ppo.minibatches={self.minibatches} exceeds rollout_batch={self.rollout_batch}")
        for key in ("lr", "value_lr", "clip_range", "value_clip_range", "max_grad_norm"):
            if not getattr(self, key) > 0:
                raise ValueError(f"opt.ppo.{key}={getattr(self, key)} must be > 0")
        if self.kl_coef < 0:
            raise ValueError(f"opt.ppo.kl_coef={self.kl_coef} must be >= 0")
        for key in ("gamma", "lam"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"opt.ppo.{key}={getattr(self, key)} must be in [0, 1]")
        check_matched("opt.ppo", self.reward_scale, self.sqrt_kl_grid, self.common_sqrt_kl)


def check_matched(where: str, reward_scale: str, grid: list[float], common: float | None) -> None:
    """The unit and matched-KL settings every study shares (opt.bon, opt.ppo)."""
    if reward_scale not in REWARD_SCALES:
        raise ValueError(f"{where}.reward_scale={reward_scale!r} is not one of {', '.join(REWARD_SCALES)}")
    if any(not x > 0 for x in grid):
        raise ValueError(f"{where}.sqrt_kl_grid={grid}: every sqrt(KL) must be > 0")
    if common is not None and not common > 0:
        raise ValueError(f"{where}.common_sqrt_kl={common} must be > 0 (or null)")


# ------------------------------------------------------------------------------------------ pieces


def sequence_inputs(prompt_ids, prompt_mask, response_ids, eos_id):
    """Prompt + response as one left-padded batch: ids, attention mask, position ids, response mask."""
    rmask = response_mask(response_ids, eos_id)  # (B, R)
    attention = torch.cat([prompt_mask, rmask], 1)  # (B, P+R)
    # Positions count real tokens only, as generate() numbered them under left padding.
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    return torch.cat([prompt_ids, response_ids], 1), attention, positions, rmask


def token_logprobs(model, seq, attention, positions, P: int, temperature: float) -> torch.Tensor:
    """(B, R) log-probabilities of the response tokens under ``model`` at the sampling temperature."""
    logits = model(input_ids=seq, attention_mask=attention, position_ids=positions, use_cache=False).logits
    logits = logits[:, P - 1 : -1].float() / temperature  # position t predicts token t+1
    return torch.gather(F.log_softmax(logits, -1), 2, seq[:, P:, None]).squeeze(-1)


def token_values(value_model, seq, attention, positions, P: int) -> torch.Tensor:
    """(B, R) value of the state before each response token (read where that token is predicted)."""
    # base_model is the trunk whatever its attribute name (Llama/Qwen: .model, GPT-2: .transformer).
    hidden = value_model.base_model(input_ids=seq, attention_mask=attention, position_ids=positions,
                                    use_cache=False).last_hidden_state
    return value_model.score(hidden[:, P - 1 : -1]).squeeze(-1).float()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over (B, R) response tokens; after the last token value and reward
    are 0, so the recursion restarts cleanly at each sequence's end. Returns (advantages, returns)."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    R = rewards.shape[1]
    for t in reversed(range(R)):
        next_value = values[:, t + 1] if t + 1 < R else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    return advantages, advantages + values


def k2_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) ½ Σ_t (log π − log π_ref)² over response tokens: Schulman's k2, as Coste et al. log it."""
    return 0.5 * (((logp - ref_logp) ** 2) * mask).sum(1)


# ------------------------------------------------------------------------------------------ the loop


def run_ppo(cfg: PPOConfig, policy: Policy, score: ScoreFn, gold: ScoreFn | None,
            train_prompts: list[tuple[str, str]], eval_prompts: list[tuple[str, str]], seed: int,
            units: dict | None = None, on_eval: Callable[[dict, dict], None] | None = None) -> dict:
    """Optimise a copy of ``policy`` against ``score`` (raw proxy reward) with PPO.

    ``units`` is ``{"proxy": reward_units(...), "gold": reward_units(...)}`` of initial-policy samples (the
    study passes BoN's when BoN ran); without it they come from the step-0 eval samples, grouped by prompt,
    in ``cfg.reward_scale``. ``gold`` may be None (no gold curve).
    ``on_eval(row, diagnostics)`` sees each evaluation step as it happens (live curves).
    Returns ``{"rows": [{step, kl, sqrt_kl, proxy, gold, proxy_se, gold_se}], "log": [diagnostics], "units",
    "seconds", "model"}``, the last being the optimised policy (for samples or capability evals after
    optimisation). ``*_se``: standard errors over the eval prompts.
    """
    t_start = time.perf_counter()
    model = policy.trainable(policy.causal_lm())
    reference = policy.causal_lm().eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    value_model = policy.trainable(policy.value_model(derive_seed(seed, Stream.PPO_VALUE_INIT)))
    # With policy.finetune=lora only the adapters (and the value head) train.
    policy_params = [p for p in model.parameters() if p.requires_grad]
    value_params = [p for p in value_model.parameters() if p.requires_grad]
    policy_opt = torch.optim.AdamW(policy_params, lr=cfg.lr, weight_decay=0.0)
    value_opt = torch.optim.AdamW(value_params, lr=cfg.value_lr, weight_decay=0.0)
    prompt_rng = np.random.default_rng(derive_seed(seed, Stream.PPO_PROMPTS))
    minibatch_gen = torch.Generator().manual_seed(derive_seed(seed, Stream.PPO_MINIBATCHES))
    T = policy.temperature
    # The policy's device and precision (harness/device.py): its models are there, forwards autocast by it, and
    # fp16 scales the loss of the one backward for both optimisers.
    compute = policy.compute
    scaler = compute.grad_scaler()

    def rollout(prompts: list[str], model_seed: int):
        ids, mask = policy.encode_prompts(prompts)
        response = policy.generate(model, ids, mask, model_seed)
        seq, attention, positions, rmask = sequence_inputs(ids, mask, response, policy.eos_id)
        return seq, attention, positions, rmask.float(), ids.shape[1], policy.decode(response)

    @torch.no_grad()
    def evaluate(step: int) -> dict:
        """Fresh samples of the held-out prompts: raw proxy and gold, and k2 KL to the reference."""
        model.eval()
        prompts = [p for p, _ in eval_prompts for _ in range(cfg.eval_samples)]
        domains = [d for _, d in eval_prompts for _ in range(cfg.eval_samples)]
        texts, kl = [], []
        for chunk, start in enumerate(range(0, len(prompts), policy.generation_batch_size)):
            part = prompts[start : start + policy.generation_batch_size]
            seq, att, pos, rmask, P, out = rollout(part, derive_seed(seed, Stream.PPO_EVAL, step, chunk))
            with compute.autocast():
                logp = token_logprobs(model, seq, att, pos, P, T)
                ref_logp = token_logprobs(reference, seq, att, pos, P, T)
            kl.append(k2_kl(logp, ref_logp, rmask))
            texts += out
        proxy_raw = score(prompts, texts, domains)
        gold_raw = gold(prompts, texts, domains) if gold is not None else np.full(len(texts), np.nan)
        # One sample, to read what the policy has learnt to write (over-optimization is visible in text).
        log.debug("ppo step %d sample: %s => %s", step, prompts[0], texts[0])
        # (P, S): the samples are prompt-major, S per eval prompt.
        shape = (len(eval_prompts), cfg.eval_samples)
        return {"proxy_raw": proxy_raw.reshape(shape), "gold_raw": gold_raw.reshape(shape),
                "kl": float(torch.cat(kl).mean())}

    def row(step: int, ev: dict) -> dict:
        out = {"step": step, "kl": ev["kl"], "sqrt_kl": math.sqrt(max(ev["kl"], 0.0))}
        for k in ("proxy", "gold"):
            per_prompt = standardize(ev[f"{k}_raw"], units[k]).mean(1) if k in units else np.full(shape[0], np.nan)
            out[k] = float(per_prompt.mean())
            # Prompts are the independent units of an eval (its S samples of a prompt share the prompt).
            out[f"{k}_se"] = float(per_prompt.std(ddof=1) / math.sqrt(shape[0])) if shape[0] > 1 else math.nan
        return out

    shape = (len(eval_prompts), cfg.eval_samples)
    ev = evaluate(0)
    if units is None:
        try:
            units = {k: reward_units(ev[f"{k}_raw"], cfg.reward_scale)
                     for k in (("proxy", "gold") if gold is not None else ("proxy",))}
        except ValueError as e:
            raise ValueError(f"ppo: units from the step-0 samples (opt.ppo.eval_samples={cfg.eval_samples} per "
                             f"prompt): {e}") from e
    rows, logs, window = [row(0, ev)], [], []
    log.info("ppo step 0: kl=%.3f proxy=%.3f gold=%.3f", rows[0]["kl"], rows[0]["proxy"], rows[0]["gold"])
    if on_eval is not None:
        on_eval(rows[0], {})

    bar = progress(range(1, cfg.steps + 1), desc="policy: PPO", unit="step")
    for step in bar:
        # ---- rollout: one response per prompt from the current policy
        t_rollout = time.perf_counter()
        # Without replacement within a batch, unless the pool is smaller than a batch.
        pick = prompt_rng.choice(len(train_prompts), size=cfg.rollout_batch,
                                 replace=cfg.rollout_batch > len(train_prompts))
        prompts = [train_prompts[i][0] for i in pick]
        domains = [train_prompts[i][1] for i in pick]
        model.eval()
        value_model.eval()
        with torch.no_grad(), compute.autocast():
            seq, att, pos, rmask, P, texts = rollout(prompts, derive_seed(seed, Stream.PPO_ROLLOUT, step))
            old_logp = token_logprobs(model, seq, att, pos, P, T)
            ref_logp = token_logprobs(reference, seq, att, pos, P, T)
            old_values = token_values(value_model, seq, att, pos, P) * rmask
        proxy = standardize(score(prompts, texts, domains), units["proxy"])
        proxy = torch.as_tensor(proxy, dtype=torch.float32, device=rmask.device)  # (B,)

        # ---- rewards: -β·(log π − log π_ref) per token, the proxy score added at the last response token
        rewards = -cfg.kl_coef * (old_logp - ref_logp) * rmask
        last = rmask.sum(1).long() - 1
        rewards[torch.arange(len(prompts), device=rmask.device), last] += proxy
        advantages, returns = gae(rewards, old_values, rmask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, rmask)

        t_update = time.perf_counter()
        model.train()
        value_model.train()
        # ---- PPO epochs over minibatches of the rollout
        stats = {"ppo/approx_kl": [], "ppo/clipfrac": [], "ppo/policy_loss": [], "ppo/value_loss": []}
        for _ in range(cfg.ppo_epochs):
            for mb in torch.randperm(len(prompts), generator=minibatch_gen).chunk(cfg.minibatches):
                mb = mb.to(rmask.device)
                m = rmask[mb]
                with compute.autocast():
                    logp = token_logprobs(model, seq[mb], att[mb], pos[mb], P, T)
                    log_ratio = logp - old_logp[mb]
                    ratio = log_ratio.exp()
                    pg_losses = torch.maximum(-advantages[mb] * ratio,
                                              -advantages[mb] * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range))
                    policy_loss = masked_mean(pg_losses, m)
                    values = token_values(value_model, seq[mb], att[mb], pos[mb], P)
                    values_clipped = old_values[mb] + (values - old_values[mb]).clamp(-cfg.value_clip_range,
                                                                                       cfg.value_clip_range)
                    value_loss = 0.5 * masked_mean(torch.maximum((values - returns[mb]) ** 2,
                                                                 (values_clipped - returns[mb]) ** 2), m)
                if not (torch.isfinite(policy_loss) and torch.isfinite(value_loss)):
                    raise FloatingPointError(f"ppo: non-finite loss at step {step} (policy {policy_loss.item()}, "
                                             f"value {value_loss.item()}); try a lower opt.ppo.lr")
                policy_opt.zero_grad(set_to_none=True)
                value_opt.zero_grad(set_to_none=True)
                # The two models share no parameter: one backward fills both, each optimiser steps its own.
                if scaler is None:
                    (policy_loss + value_loss).backward()
                else:
                    scaler.scale(policy_loss + value_loss).backward()
                    scaler.unscale_(policy_opt)
                    scaler.unscale_(value_opt)
                torch.nn.utils.clip_grad_norm_(policy_params, cfg.max_grad_norm)
                torch.nn.utils.clip_grad_norm_(value_params, cfg.max_grad_norm)
                if scaler is None:
                    policy_opt.step()
                    value_opt.step()
                else:  # a step whose gradients overflowed is skipped, and the scale lowered
                    scaler.step(policy_opt)
                    scaler.step(value_opt)
                    scaler.update()
                with torch.no_grad():
                    stats["ppo/approx_kl"].append(masked_mean((ratio - 1) - log_ratio, m).item())
                    stats["ppo/clipfrac"].append(masked_mean(((ratio - 1).abs() > cfg.clip_range).float(), m).item())
                    stats["ppo/policy_loss"].append(policy_loss.item())
                    stats["ppo/value_loss"].append(value_loss.item())
        window.append({"ppo/kl_to_ref": float(k2_kl(old_logp, ref_logp, rmask).mean()),
                       "ppo/score": float(proxy.mean()),
                       "ppo/response_tokens": float(rmask.sum(1).mean()),
                       "time/rollout_s": t_update - t_rollout, "time/update_s": time.perf_counter() - t_update,
                       **{k: float(np.mean(v)) for k, v in stats.items()}})

        if step % cfg.eval_every == 0 or step == cfg.steps:
            rows.append(row(step, evaluate(step)))
            diag = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            logs.append({"step": step, **diag, "seconds": time.perf_counter() - t_start})
            window = []
            if on_eval is not None:
                on_eval(rows[-1], diag)
            bar.set_postfix(kl=f"{rows[-1]['kl']:.2f}", proxy=f"{rows[-1]['proxy']:.2f}",
                            gold=f"{rows[-1]['gold']:.2f}", refresh=False)
            log.info("ppo step %d/%d: kl=%.3f proxy=%.3f gold=%.3f", step, cfg.steps, rows[-1]["kl"],
                     rows[-1]["proxy"], rows[-1]["gold"])
            log.debug("ppo step %d diagnostics: %s", step, " ".join(f"{k}={v:.4g}" for k, v in diag.items()))
    model.eval()
    return {"rows": rows, "log": logs, "units": units, "seconds": time.perf_counter() - t_start, "model": model}
