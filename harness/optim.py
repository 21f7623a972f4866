"""The one update rule of every gradient loop that trains a model from data — the reward models' phases and
routers (``harness.archs.train``), causal-LM pre-training of the tiny backbone and SFT of the tiny policy
(``backbones``): AdamW, linear warm-up then linear decay to 0, gradient-norm clipping. PPO keeps its own (two
optimisers, one backward, constant learning rate: ``optimize.ppo``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup


@dataclass(frozen=True)
class UpdateRule:
    """The rule's numbers; ``archs.base.TrainConfig`` carries the same four fields and can stand in for it."""

    lr: float
    weight_decay: float
    warmup: float  # fraction of the steps spent warming up
    max_grad_norm: float

    def validate(self, where: str, prefix: str = "") -> None:
        """Errors name the config key: ``{where}.{prefix}{field}`` (e.g. backbone.pretrain_lr)."""
        for key in ("lr", "weight_decay", "warmup", "max_grad_norm"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{where}.{prefix}{key}={v!r} must be a finite number")
        if not self.lr > 0:
            raise ValueError(f"{where}.{prefix}lr={self.lr} must be > 0")
        if self.weight_decay < 0:
            raise ValueError(f"{where}.{prefix}weight_decay={self.weight_decay} must be >= 0")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"{where}.{prefix}warmup={self.warmup} must be in [0, 1)")
        if not self.max_grad_norm > 0:  # 0 zeroes every gradient, a negative norm flips them
            raise ValueError(f"{where}.{prefix}max_grad_norm={self.max_grad_norm} must be > 0")


def make_optimizer_step(params: list[nn.Parameter], rule: UpdateRule, total_steps: int,
                        scaler: torch.amp.GradScaler | None = None) -> Callable:
    """AdamW, linear warm-up over ``rule.warmup * total_steps`` steps then decay to 0 at ``total_steps``,
    gradient-norm clipping. Returns ``step(loss)``: backward, clip, update, advance the schedule, clear gradients.
    With an fp16 ``scaler`` (device.Compute.grad_scaler) the loss is scaled before the backward and the gradients
    unscaled before clipping; a step whose gradients overflowed is skipped and the scale lowered."""
    opt = torch.optim.AdamW(params, lr=rule.lr, weight_decay=rule.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(rule.warmup * total_steps), total_steps)

    def step(loss: torch.Tensor) -> None:
        if scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, rule.max_grad_norm)
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, rule.max_grad_norm)
            scaler.step(opt)
            scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)

    return step
