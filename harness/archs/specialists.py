"""specialists: one single RM per domain, each trained on its own domain's pairs only and asked only about its
domain (routed by the data's TRUE domain label: an oracle router). The measurement behind the multi-task
disturbance (issue 17): specialists beating one joint RM (`single`) in every domain means one model suffers from
mixing the domains' conflicting preferences. Same total training budget as `single` (each specialist makes
`train.epochs` passes over its 1/n of the pairs); not a deployable RM where the domain is unknown.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.schema import Batch, EncodedPairs
from .base import FitContext, RewardModel, RewardOutput, route_rows, train_bradley_terry


class SpecialistsRM(RewardModel):
    def __init__(self):
        super().__init__()
        self.experts = nn.ModuleList()  # one *ForSequenceClassification per domain, built in fit

    def forward(self, batch: Batch) -> RewardOutput:
        if (batch.domain < 0).any():
            raise ValueError("arch=specialists scores by the true domain: every sequence needs a domain label")
        reward = route_rows(batch, batch.domain, self.specialist_reward)
        return RewardOutput(reward=reward, info={"domain": batch.domain})

    def specialist_reward(self, d: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(b,) domain d's specialist on rows of that domain."""
        return self.experts[d](input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.squeeze(-1)

    def fit(self, train: EncodedPairs, val: EncodedPairs, ctx: FitContext) -> None:
        if (train.chosen.domain < 0).any() or (val.chosen.domain < 0).any():
            raise ValueError("arch=specialists needs a domain label on every training and validation pair")
        self.experts = nn.ModuleList(ctx.backbone.reward_model(ctx.seed + d) for d in range(len(ctx.domains)))
        for d, (name, expert) in enumerate(zip(ctx.domains, self.experts, strict=True)):
            rows = (train.chosen.domain == d).nonzero(as_tuple=True)[0]
            val_rows = (val.chosen.domain == d).nonzero(as_tuple=True)[0]
            result = train_bradley_terry(
                self, list(expert.parameters()), train.subset(rows), val.subset(val_rows) if len(val_rows) else None,
                ctx.train, ctx.seed + d, ctx, phase=f"specialist/{name}",
                forward=lambda b, d=d: RewardOutput(self.specialist_reward(d, b.input_ids, b.attention_mask)))
            ctx.log(result)

    def param_counts(self) -> dict[str, int]:
        """active: one domain's RM (a response is scored by its domain's specialist only)."""
        counts = super().param_counts()
        counts["active"] = sum(p.numel() for p in self.experts[0].parameters()) if len(self.experts) else 0
        return counts
