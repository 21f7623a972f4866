"""single: one reward model — the backbone with a scalar head, trained with the Bradley-Terry loss.

``train`` overrides the shared `train` settings for this RM alone: the compute-matched baseline
(conf/arch/single_compute.yaml) is this RM given the training budget of an ensemble."""

from __future__ import annotations

import dataclasses

from ..data.schema import Batch
from ..packing import sequence_logits
from ..seeds import Stream, derive_seed
from .base import FitContext, RewardModel, RewardOutput, TrainConfig
from .train import train_bradley_terry


class SingleRM(RewardModel):
    def __init__(self, train: dict | None = None):
        super().__init__()
        self.train_overrides = dict(train or {})
        unknown = set(self.train_overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise ValueError(f"arch.train: unknown keys {sorted(unknown)} (valid: the keys of `train`)")
        self.model = None  # built in fit: the backbone is only known then

    def build(self, ctx: FitContext, seed: int) -> SingleRM:
        self.model = ctx.backbone.reward_model(derive_seed(seed, Stream.RM_INIT, 0))  # *ForSequenceClassification
        return self

    def forward(self, batch: Batch) -> RewardOutput:
        # (B, 1) at the last real token; padding-free where compute.packing allows (harness/packing.py)
        logits = sequence_logits(self.model, batch.input_ids, batch.attention_mask, self.compute)
        return RewardOutput(reward=logits.squeeze(-1))

    def fit(self, train, val, ctx: FitContext) -> None:
        self.build(ctx, ctx.seed)
        cfg = dataclasses.replace(ctx.train, **self.train_overrides)
        cfg.validate("arch.train")
        result = train_bradley_terry(self, list(self.model.parameters()), train, val, cfg,
                                     derive_seed(ctx.seed, Stream.RM_ORDER, 0), ctx, phase="single")
        ctx.log(result)

    def dense_models(self) -> dict:
        return {"model": self.model}
