"""ens_mean / ens_wco / ens_uwo: Coste et al.'s reward-model ensembles against over-optimization.

k members, each an ordinary single RM (backbone + scalar head, Bradley-Terry loss) trained on the same data
with its own seeds for head initialisation and data order (``harness.seeds``: member i is model i of the job).
Their rewards combine as (methods.md §5.1):

- mean: (1/k) Σ_i R_i                                  — not conservative;
- wco:  min_i R_i                                       — worst-case optimization, no hyperparameter;
- uwo:  (1/k) Σ_i R_i − λ · (1/k) Σ_i (R_i − mean)²     — uncertainty-weighted, *population* variance
  (Coste's BoN code uses np.var, ddof=0; their PPO code's torch.var is the unbiased one, i.e. λ·k/(k−1)).

Trained members live in the artifact cache, keyed by exactly what determines them (data, backbone, train
config, member seeds) and not by the aggregator or λ: the three aggregators — and any λ, and any smaller k —
share one set of trained members, so adding an aggregator costs no training.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..cost import BackbonePasses
from ..data.schema import Batch
from ..device import CPU, Compute
from ..packing import sequence_logits
from ..seeds import Stream, derive_seed
from .base import FitContext, RewardModel, RewardOutput, View, train_bradley_terry

AGGREGATORS = ("mean", "wco", "uwo")


def aggregate(rewards: torch.Tensor, aggregator: str, uwo_lambda: float) -> torch.Tensor:
    """Combine member rewards (B, k) into one reward (B,)."""
    if aggregator == "mean":
        return rewards.mean(dim=-1)
    if aggregator == "wco":
        return rewards.min(dim=-1).values
    if aggregator == "uwo":
        # unbiased=False: the population variance of the paper's Eq. 5, not the sample variance.
        return rewards.mean(dim=-1) - uwo_lambda * rewards.var(dim=-1, unbiased=False)
    raise ValueError(f"arch.aggregator={aggregator!r} is not one of {', '.join(AGGREGATORS)}")


def member_seeds(job_seed: int, member: int) -> tuple[int, int]:
    """Member i's (head init, data order) seeds: it is model i of the job (harness.seeds)."""
    return derive_seed(job_seed, Stream.RM_INIT, member), derive_seed(job_seed, Stream.RM_ORDER, member)


def member_reward(member: nn.Module, batch: Batch, compute: Compute = CPU) -> torch.Tensor:
    # (B, 1) at the last real token; padding-free where compute.packing allows (harness/packing.py)
    return sequence_logits(member, batch.input_ids, batch.attention_mask, compute).squeeze(-1)


class EnsembleRM(RewardModel):
    def __init__(self, aggregator: str, k: int = 5, uwo_lambda: float = 0.5):
        super().__init__()
        if aggregator not in AGGREGATORS:
            raise ValueError(f"arch.aggregator={aggregator!r} is not one of {', '.join(AGGREGATORS)}")
        if k < 2:
            raise ValueError(f"arch.k={k} must be >= 2 (an ensemble of one is just its member)")
        if uwo_lambda < 0:
            raise ValueError(f"arch.uwo_lambda={uwo_lambda} must be >= 0 (a negative weight rewards disagreement)")
        self.aggregator, self.k, self.uwo_lambda = aggregator, k, uwo_lambda
        self.members = nn.ModuleList()  # built in fit: the backbone is only known then
        self.provenance: list[str] = []  # per member: "trained" here or "cached" from an earlier job

    def forward(self, batch: Batch) -> RewardOutput:
        rewards = torch.stack([member_reward(m, batch, self.compute) for m in self.members], dim=-1)  # (B, k)
        reward = aggregate(rewards, self.aggregator, self.uwo_lambda)  # (B,)
        return RewardOutput(reward=reward, info={"members": rewards, "aggregate": reward})

    def member_spec(self, ctx: FitContext, member: int) -> dict:
        """Everything that determines a trained member — and nothing else (no aggregator, λ or k)."""
        return {
            "data": ctx.data_spec,
            # What the backbone's weights are (a content hash), never where they lie: weights replaced in place
            # retrain the members, a moved cache or model directory reuses them.
            "backbone": ctx.backbone.content_id(),
            # Truncation of the encoded training pairs: a backbone knob that is not always part of its path.
            "max_length": ctx.backbone.max_length,
            "finetune": ctx.backbone.finetune_spec,
            "train": dataclasses.asdict(ctx.train),
            "member_seeds": list(member_seeds(ctx.seed, member)),  # (head init, data order)
        }

    def fit(self, train, val, ctx: FitContext) -> None:
        self.members = nn.ModuleList()
        self.provenance = []
        self.reused_tokens = 0
        for i in range(self.k):
            seeds = member_seeds(ctx.seed, i)
            member = ctx.backbone.reward_model(seeds[0])  # seeds the head init (and the global RNG for dropout)
            self.members.append(member)
            built = False

            def build(member=member, seeds=seeds, i=i):
                nonlocal built
                built = True
                first_row = len(ctx.logs)
                # The shared loop on this member alone, in its own data order.
                with BackbonePasses() as passes:  # what it cost, for the jobs that reuse it
                    result = train_bradley_terry(self, list(member.parameters()), train, val, ctx.train, seeds[1],
                                                 ctx, phase=f"member{i}",
                                                 forward=lambda batch: RewardOutput(member_reward(member, batch,
                                                                                                  self.compute)))
                state = {name: t.detach().clone() for name, t in member.state_dict().items()}
                return state, {"member": i, "seeds": list(seeds), "result": result, "log": ctx.logs[first_row:],
                               "train_backbone_tokens": passes.counts["train"]["tokens"]}

            state, meta = ctx.cache.tensors("ens_member", self.member_spec(ctx, i), build)
            member.load_state_dict(state)  # a no-op in value when just built; the trained weights otherwise
            # "trainable = updated in any phase": a cached member was trained, only in an earlier job.
            self.mark_trained(member.parameters())
            self.provenance.append("trained" if built else "cached")
            if not built:
                self.reused_tokens += int(meta.get("train_backbone_tokens", 0))
                for row in meta["log"]:
                    ctx.logs.append({**row, "cached": True})
            ctx.log({**meta["result"], "member": i, "source": self.provenance[-1]})

    def cost(self) -> dict:
        """Members taken from the cache were trained by an earlier job: their training tokens count here too."""
        return {"reused_train_backbone_tokens": getattr(self, "reused_tokens", 0)}

    def restore(self, ctx: FitContext, structure: dict) -> None:
        """The k untrained members (harness.export fills them from the exported weights)."""
        self.members = nn.ModuleList(ctx.backbone.reward_model(member_seeds(ctx.seed, i)[0]) for i in range(self.k))

    def dense_models(self) -> dict:
        return {f"member{i}": m for i, m in enumerate(self.members)}

    def views(self) -> dict[str, View]:
        """``member_<i>``: each member alone (what an aggregator is compared to)."""
        return {f"member_{i}": View(lambda batch, member=member: member_reward(member, batch, self.compute))
                for i, member in enumerate(self.members)}

    def fit_report(self) -> dict:
        """How many members were trained in this job and how many came from the artifact cache."""
        return {"members_trained": self.provenance.count("trained"), "members_cached": self.provenance.count("cached")}
