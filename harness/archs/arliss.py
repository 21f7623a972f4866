"""arliss (Namgoong et al., "Adapter Router Lightweight Integrated rewardS Switching"): ONE frozen backbone
carrying a router LoRA adapter with a classification head over domains and n reward LoRA adapters, each with
its own scalar head; scoring switches adapters inside the same model.

Everything adapter-related is peft's multi-adapter API: ``get_peft_model(..., adapter_name="router")``, then
``add_adapter`` per domain and ``set_adapter`` to switch. For task_type="SEQ_CLS" peft wraps the model's head
(``score`` on Llama, ``classifier`` on BERT) in a ``ModulesToSaveWrapper`` that keeps one trainable copy of the
head per adapter and runs the active adapter's copy.

Heads of different sizes: the backbone is loaded with ``num_labels=1``, so every per-adapter copy is a scalar
head — right for the reward adapters, wrong for the router, which needs n_domains outputs. We replace the router
adapter's copy inside the wrapper (``wrapper.modules_to_save["router"]``) by a fresh ``Linear(H, n_domains)``
right after ``get_peft_model``, before any reward adapter exists. That is the cleanest working option: the
router pass is then the ordinary sequence-classification forward (same last-real-token pooling as the reward
heads, logits (B, n)), the head is switched, frozen and unfrozen by ``set_adapter`` like every other adapter's
head, and ``add_adapter`` still deep-copies the untouched scalar original for each reward adapter. (A separate
``Linear`` on ``output_hidden_states`` would need a second pooling code path and would leave peft's unused
scalar router copy stored beside it.) Only the wrapper's ``original_module`` — the scalar head the model was
loaded with — is stored but never run once every adapter has its copy; it is counted in ``total`` (it is
stored) and not in ``active``. The routing plumbing it shares with rodos is in harness/archs/routed.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from peft import LoraConfig, get_peft_model
from peft.utils import ModulesToSaveWrapper
from torch import nn

from ..data.schema import Batch, EncodedPairs
from ..seeds import Stream, derive_seed
from . import routed
from .base import (
    FitContext,
    RewardModel,
    RewardOutput,
    View,
    lora_rank,
    lora_report,
)
from .train import train_bradley_terry, train_classifier

ROUTER = "router"


def reward_adapter(d: int) -> str:
    # Indexed, not named after the domain: adapter names become module keys, and a data set's domain names may
    # hold characters (".", spaces) a ModuleDict key cannot.
    return f"reward_{d}"


def adapter_of(param_name: str) -> str | None:
    """The adapter a parameter belongs to, from peft's naming (``...lora_A.<adapter>.weight``,
    ``...modules_to_save.<adapter>.weight``); None for the shared backbone."""
    parts = param_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.startswith("lora_") or part == "modules_to_save":
            return parts[i + 1]
    return None


class ARLISS(RewardModel):
    # One peft model switches adapters per domain: its forwards go through peft's PeftModel, not a transformers
    # *ForSequenceClassification that packing.sequence_logits can pack (can_pack).
    padded_because = "its forwards go through peft's multi-adapter PeftModel, which packing cannot split"

    def __init__(self, r: int | None, r_fraction: float, lora_scaling: float, lora_dropout: float,
                 target_modules: list[str] | None, lr: float):
        super().__init__()
        if r is not None and r < 1:
            raise ValueError(f"arch.r={r} must be >= 1 (or null: arch.r_fraction of the hidden size)")
        if not 0 < r_fraction <= 1 or not lora_scaling > 0:
            raise ValueError(f"arch.r_fraction={r_fraction} must be in (0, 1] and arch.lora_scaling={lora_scaling} > 0")
        if not 0 <= lora_dropout < 1:
            raise ValueError(f"arch.lora_dropout={lora_dropout} must be in [0, 1)")
        if not lr > 0:
            raise ValueError(f"arch.lr={lr} must be > 0")
        self.r, self.r_fraction, self.lora_scaling, self.lora_dropout = r, r_fraction, lora_scaling, lora_dropout
        self.rank: int | None = None  # the rank used, set in build() from the backbone's hidden size
        self.hidden_size: int | None = None
        self.target_modules = None if target_modules is None else list(target_modules)
        self.lr = lr
        self.peft = None  # the PeftModel, built in build(): the backbone is only known then
        self.domains: list[str] = []

    def lora_config(self, targets: list[str]) -> LoraConfig:
        return LoraConfig(task_type="SEQ_CLS", r=self.rank, lora_alpha=self.lora_scaling * self.rank,
                          lora_dropout=self.lora_dropout, target_modules=targets)

    def build(self, ctx: FitContext, seed: int) -> ARLISS:
        self.domains = routed.domains_to_route("arliss", ctx.domains)
        n = len(self.domains)
        targets = self.target_modules or ctx.backbone.lora_targets
        self.hidden_size = ctx.backbone.hidden_size
        self.rank = lora_rank(self.r, self.r_fraction, self.hidden_size)
        # adapt=False: arliss places its own adapters. reward_model seeds the global RNG: LoRA A inits follow it.
        base = ctx.backbone.reward_model(derive_seed(seed, Stream.RM_INIT, 0), num_labels=1, adapt=False)
        self.peft = get_peft_model(base, self.lora_config(targets), adapter_name=ROUTER)  # freezes the backbone
        heads = [m for m in self.peft.modules() if isinstance(m, ModulesToSaveWrapper)]
        assert len(heads) == 1, f"expected peft to wrap exactly one sequence-classification head, got {len(heads)}"
        head = heads[0]
        scalar = head.original_module
        if not isinstance(scalar, nn.Linear):
            raise ValueError(f"arch=arliss: the backbone's classification head is a {type(scalar).__name__}; "
                             f"only a Linear head can be resized for the router")
        # The router's own head: n_domains outputs instead of the scalar copy peft made (see module docstring).
        head.modules_to_save[ROUTER] = nn.Linear(scalar.in_features, n, bias=scalar.bias is not None)
        for d in range(n):
            self.peft.add_adapter(reward_adapter(d), self.lora_config(targets))
        return self

    # -- the two passes (same backbone, different adapter) -------------------------------------------
    def router_logits(self, batch: Batch) -> torch.Tensor:
        """(B, n_domains) domain logits from the prompt alone: backbone + router adapter + router head."""
        self.peft.set_adapter(ROUTER)
        return self.peft(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, use_cache=False).logits

    def adapter_reward(self, d: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(b,) rewards from backbone + reward adapter d + its scalar head."""
        self.peft.set_adapter(reward_adapter(d))
        return self.peft(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.squeeze(-1)

    def forward(self, batch: Batch) -> RewardOutput:
        # Hard top-1, grouped by routed domain: one adapter switch and one forward per domain present.
        return routed.route_top1(self.router_logits(batch), batch, self.adapter_reward)

    # -- training -----------------------------------------------------------------------------------
    def fit(self, train: EncodedPairs, val: EncodedPairs, ctx: FitContext) -> None:
        routed.require_domain_labels("arliss", train, val, len(ctx.domains))
        self.build(ctx, ctx.seed)
        cfg = dataclasses.replace(ctx.train, lr=self.lr)  # LoRA wants its own (usually larger) learning rate

        # Router adapter + router head: cross-entropy over domains on the training prompts.
        self.peft.set_adapter(ROUTER)  # also makes exactly this adapter's LoRA weights and head trainable
        result = train_classifier(self, self.adapter_parameters(ROUTER), self.router_logits, train.chosen,
                                  val.chosen, cfg, derive_seed(ctx.seed, Stream.ROUTER_ORDER), ctx,
                                  phase="arliss/router")
        ctx.log(result)

        # Reward adapter d + its head: Bradley-Terry on domain d's pairs only, early-stopped on val's domain d.
        for d, name in enumerate(self.domains):
            train_d, val_d = routed.domain_pairs(train, val, d, "arliss", name, "an adapter")

            def forward(batch: Batch, d=d) -> RewardOutput:
                return RewardOutput(reward=self.adapter_reward(d, batch.input_ids, batch.attention_mask))

            self.peft.set_adapter(reward_adapter(d))
            result = train_bradley_terry(self, self.adapter_parameters(reward_adapter(d)), train_d, val_d, cfg,
                                         derive_seed(ctx.seed, Stream.RM_ORDER, d), ctx, phase=f"arliss/{name}",
                                         forward=forward)
            ctx.log(result)

    def adapter_parameters(self, adapter: str) -> list[nn.Parameter]:
        """The LoRA weights and the head copy of one adapter."""
        return [p for name, p in self.peft.named_parameters() if adapter_of(name) == adapter]

    # -- evaluation ---------------------------------------------------------------------------------
    def views(self) -> dict[str, View]:
        """``oracle_routing``: each pair scored by its TRUE domain's adapter — the ceiling a perfect router would
        reach, so the gap to the RM's own accuracy is what routing errors cost."""
        return {"oracle_routing": routed.oracle_routing(self.adapter_reward)}

    def fit_report(self) -> dict:
        """``lora``: the adapters' rank and its share of the hidden size."""
        return {"lora": lora_report(self.rank, self.r, self.hidden_size)}

    def routing(self) -> Callable[[Batch], torch.Tensor]:
        return routed.top1_routing(self.router_logits)  # forward's decision

    def param_counts(self) -> dict[str, int]:
        """total: backbone once + every adapter + every head (+ peft's stored, unused original scalar head);
        active: backbone + router adapter + router head + one reward adapter + its head.

        These are parameters, not FLOPs: a scored response runs the backbone twice (router pass on the prompt,
        reward pass on prompt + response) but its weights are counted once."""
        counts = super().param_counts()
        per_adapter: dict[str | None, int] = {}
        for name, p in self.peft.named_parameters():  # each parameter once
            if ".original_module." in name:  # the unused original head: stored, never active
                continue
            per_adapter[adapter_of(name)] = per_adapter.get(adapter_of(name), 0) + p.numel()
        one_reward = max(per_adapter[reward_adapter(d)] for d in range(len(self.domains)))  # all the same size
        counts["active"] = per_adapter[None] + per_adapter[ROUTER] + one_reward
        counts["active_per_token"] = counts["active"]  # every token of a response goes through the same model
        return counts

