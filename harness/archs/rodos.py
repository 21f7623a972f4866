"""rodos (Namgoong et al., "Router for DOmain-specific reward modelS"): an external domain router plus n full
domain reward models; a (prompt, response) is scored by the RM of the domain the router picks (hard argmax).

The router is the backbone with a classification head over domains that reads the PROMPT only (real prompts do
not announce their task category: predicting it is the router's job). Each domain RM is a full copy of the
backbone with a scalar head, trained with the Bradley-Terry loss on its own domain's pairs only. Every model is
stored: total = router + n RMs; a scored response touches the router and one RM. The routing plumbing it shares
with arliss is in harness/archs/routed.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..data.schema import Batch, EncodedPairs
from ..packing import sequence_logits
from ..seeds import Stream, derive_seed
from . import routed
from .base import FitContext, RewardModel, RewardOutput, View
from .train import train_bradley_terry, train_classifier


class RODOS(RewardModel):
    def __init__(self):
        super().__init__()
        self.router = None  # *ForSequenceClassification with n_domains outputs, built in build()
        self.experts = nn.ModuleList()  # one full domain RM per domain
        self.domains: list[str] = []

    def build(self, ctx: FitContext, seed: int) -> RODOS:
        self.domains = routed.domains_to_route("rodos", ctx.domains)
        n = len(self.domains)
        self.router = ctx.backbone.reward_model(derive_seed(seed, Stream.ROUTER_INIT), num_labels=n)
        # Each domain RM's head starts from its own draw: domain d's RM is model d of the job.
        self.experts = nn.ModuleList(ctx.backbone.reward_model(derive_seed(seed, Stream.RM_INIT, d)) for d in range(n))
        return self

    # -- the two passes -----------------------------------------------------------------------------
    def router_logits(self, batch: Batch) -> torch.Tensor:
        """(B, n_domains) domain logits from the prompt alone, pooled at its last real token."""
        return sequence_logits(self.router, batch.prompt_ids, batch.prompt_mask, self.compute)

    def expert_reward(self, d: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(b,) rewards of domain d's RM."""
        return sequence_logits(self.experts[d], input_ids, attention_mask, self.compute).squeeze(-1)

    def forward(self, batch: Batch) -> RewardOutput:
        return routed.route_top1(self.router_logits(batch), batch, self.expert_reward)  # hard top-1: one RM per row

    # -- training -----------------------------------------------------------------------------------
    def fit(self, train: EncodedPairs, val: EncodedPairs, ctx: FitContext) -> None:
        routed.require_domain_labels("rodos", train, val, len(ctx.domains))
        self.build(ctx, ctx.seed)

        # Router: cross-entropy over domains on the training prompts (the chosen side carries prompt + domain).
        result = train_classifier(self, list(self.router.parameters()), self.router_logits, train.chosen,
                                  val.chosen, ctx.train, derive_seed(ctx.seed, Stream.ROUTER_ORDER), ctx,
                                  phase="rodos/router")
        ctx.log(result)

        # Domain RMs: each trained (and early-stopped) on its own domain's pairs only.
        for d, name in enumerate(self.domains):
            train_d, val_d = routed.domain_pairs(train, val, d, "rodos", name, "an RM")
            expert = self.experts[d]

            def forward(batch: Batch, expert=expert) -> RewardOutput:
                return RewardOutput(reward=expert(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                                  use_cache=False).logits.squeeze(-1))

            result = train_bradley_terry(self, list(expert.parameters()), train_d, val_d, ctx.train,
                                         derive_seed(ctx.seed, Stream.RM_ORDER, d), ctx, phase=f"rodos/{name}",
                                         forward=forward)
            ctx.log(result)

    # -- evaluation ---------------------------------------------------------------------------------
    def views(self) -> dict[str, View]:
        """``oracle_routing``: each pair scored by its TRUE domain's RM — the ceiling a perfect router would reach,
        so the gap to the RM's own accuracy is what routing errors cost."""
        return {"oracle_routing": routed.oracle_routing(self.expert_reward)}

    def routing(self) -> Callable[[Batch], torch.Tensor]:
        return routed.top1_routing(self.router_logits)  # forward's decision

    def param_counts(self) -> dict[str, int]:
        """total: router + every domain RM; active: router + the one RM a response is routed to."""
        counts = super().param_counts()
        router = sum(p.numel() for p in self.router.parameters())
        one_expert = max(sum(p.numel() for p in e.parameters()) for e in self.experts)  # all the same size
        counts["active"] = router + one_expert
        counts["active_per_token"] = counts["active"]  # every token of a response goes through the same model
        return counts

