"""ens_mean / ens_wco / ens_uwo: Coste et al.'s reward-model ensembles against over-optimization.

k members, each an ordinary single RM (backbone + scalar head, Bradley-Terry loss) trained on the same data
with its own seeds for head initialisation and data order (``harness.seeds``: member i is model i of the job).
Their rewards combine as (methods.md §5.1):

- mean: (1/k) Σ_i R_i                                  — not conservative;
- wco:  min_i R_i                                       — worst-case optimization, no hyperparameter;
- uwo:  (1/k) Σ_i R_i − λ · (1/k) Σ_i (R_i − mean)²     — uncertainty-weighted, *population* variance here
  throughout. Coste et al.'s BoN code uses np.var (population) with λ = 0.5; their PPO code torch.var (the
  unbiased variance, 1/(k−1)) with λ = 0.1, which is λ = 0.1 · k/(k−1) = 0.125 on the population variance at
  k = 5. λ is set per study (``uwo_lambda: {bon, ppo}``, those two values by default); the RM's own reward
  (accuracy, export) uses BoN's, and each study optimises its own (``study_scorer``).

The Bradley-Terry loss fixes a member's reward only up to a constant, so members trained alone drift apart
(offsets of 0.02 to 0.49 on seed 0 made one member the minimum of 70% of samples, and WCO's choice of a
sample an accident of offsets). Two things pin them: ``train.score_l2`` (Coste et al.'s L2 penalty on the
scores, in the shared loop) and, before aggregation, each member is re-expressed on a reference set, the
validation pairs (``normalize``): ``standardize`` (the default) subtracts the member's mean reward over the
validation responses and divides by its within-pair s.d. there (``sqrt(mean((r_chosen − r_rejected)²) / 2)``,
the pooled within-prompt s.d. of two responses per prompt, the unit the studies read rewards in), so min and
variance compare members in one unit and λ means the same on any backbone; ``center`` subtracts the mean only;
``none`` aggregates raw rewards (the harness's earlier behaviour). Views ``member_<i>`` are the raw members.

Trained members live in the artifact cache, keyed by exactly what determines them (data, backbone, train
config, member seeds) and not by the aggregator or λ: the three aggregators — and any λ, and any smaller k —
share one set of trained members, so adding an aggregator costs no training.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .. import parallel
from ..cost import BackbonePasses
from ..data.schema import Batch
from ..device import CPU, Compute
from ..packing import sequence_logits
from ..seeds import Stream, derive_seed
from .base import FitContext, RewardModel, RewardOutput, View
from .train import train_bradley_terry

AGGREGATORS = ("mean", "wco", "uwo")
# How members are re-expressed on the reference set before they are aggregated (module docstring).
NORMALIZATIONS = ("standardize", "center", "none")
# The studies UWO's λ is set for; the RM's own reward uses the first's.
STUDIES = ("bon", "ppo")


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


def trained_member_spec(ctx: FitContext, compute: Compute, seeds: tuple[int, int]) -> dict:
    """Everything that determines a member trained by ``train_member`` from ``seeds`` (head init, data order) —
    and nothing else: ensemble members and WARM's share the artifact cache wherever their seeds agree."""
    spec = {
        "data": ctx.data_spec,
        # What the backbone's weights are (a content hash), never where they lie: weights replaced in place
        # retrain the members, a moved cache or model directory reuses them.
        "backbone": ctx.backbone.content_id(),
        # Truncation of the encoded training pairs: a backbone knob that is not always part of its path.
        "max_length": ctx.backbone.max_length,
        "finetune": ctx.backbone.finetune_spec,
        "train": dataclasses.asdict(ctx.train),
        "member_seeds": list(seeds),  # (head init, data order)
    }
    # Trained on the job's device, in its precision, packed or not, by one process or several: all of these
    # round differently; none of them enters the key of a one-process CPU fp32 job (its keys never moved).
    spec = compute.keyed(spec, reward_forwards=True)
    scale_out = parallel.artifact_identity()
    return spec if scale_out is None else {**spec, "parallel": scale_out}


def train_member(owner: RewardModel, member: nn.Module, seeds: tuple[int, int], train, val, ctx: FitContext,
                 phase: str, index: int) -> tuple[bool, dict]:
    """Train ``member`` (a single RM just built from ``seeds[0]`` and already part of ``owner``) with the shared loop
    in the data order of ``seeds[1]``, or load it from the artifact cache where an earlier job trained it (its log
    rows then join ``ctx.logs`` marked cached). Returns (built here, the cache entry's meta: the loop's result, its
    log rows and the backbone tokens it trained on)."""
    built = False

    def build():
        nonlocal built
        built = True
        first_row = len(ctx.logs)
        # The shared loop on this member alone, in its own data order.
        with BackbonePasses() as passes:  # what it cost, for the jobs that reuse it
            result = train_bradley_terry(owner, list(member.parameters()), train, val, ctx.train, seeds[1], ctx,
                                         phase=phase,
                                         forward=lambda batch: RewardOutput(member_reward(member, batch,
                                                                                          owner.compute)))
        state = {name: t.detach().clone() for name, t in member.state_dict().items()}
        return state, {"member": index, "seeds": list(seeds), "result": result, "log": ctx.logs[first_row:],
                       "train_backbone_tokens": passes.counts["train"]["tokens"]}

    state, meta = ctx.cache.tensors("ens_member", trained_member_spec(ctx, owner.compute, seeds), build)
    member.load_state_dict(state)  # a no-op in value when just built; the trained weights otherwise
    if not built:
        for row in meta["log"]:
            ctx.logs.append({**row, "cached": True})
    return built, meta


@torch.no_grad()
def reference_normalization(owner: RewardModel, members, reference, normalize: str) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """(shift, scale) (k,) that re-express each member's raw reward as (raw - shift) / scale, from its rewards on
    ``reference`` (encoded pairs: the validation split), per ``normalize`` (module docstring)."""
    k = len(members)
    shift, scale = torch.zeros(k), torch.ones(k)
    if normalize == "none":
        return shift, scale
    if reference is None or not len(reference):
        raise ValueError(f"arch.normalize={normalize} needs validation pairs to measure the members on; "
                         "there are none (data.n_val), or use arch.normalize=none")
    raw = {side: torch.stack([owner.score(seqs, scorer=lambda b, m=m: member_reward(m, b, owner.compute))
                              for m in members], dim=-1).double()  # (V, k)
           for side, seqs in (("chosen", reference.chosen), ("rejected", reference.rejected))}
    shift = torch.cat([raw["chosen"], raw["rejected"]]).mean(0).float()
    if normalize == "standardize":
        within = ((raw["chosen"] - raw["rejected"]) ** 2).mean(0).div(2).sqrt()
        if not bool((within > 0).all()):
            raise ValueError(f"ensemble: a member gives both sides of every validation pair the same reward "
                             f"(within-pair s.d. {within.tolist()}); cannot standardize it (arch.normalize)")
        scale = within.float()
    return shift, scale


class EnsembleRM(RewardModel):
    def __init__(self, aggregator: str, k: int = 5, uwo_lambda: float | dict = 0.5, normalize: str = "standardize"):
        super().__init__()
        if aggregator not in AGGREGATORS:
            raise ValueError(f"arch.aggregator={aggregator!r} is not one of {', '.join(AGGREGATORS)}")
        if k < 2:
            raise ValueError(f"arch.k={k} must be >= 2 (an ensemble of one is just its member)")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"arch.normalize={normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
        # One number: the same λ for every study; a mapping: one per study.
        lambdas = dict(uwo_lambda) if isinstance(uwo_lambda, dict) else dict.fromkeys(STUDIES, uwo_lambda)
        if set(lambdas) != set(STUDIES):
            raise ValueError(f"arch.uwo_lambda={uwo_lambda}: give one number or one per study "
                             f"({', '.join(STUDIES)})")
        for study, lam in lambdas.items():
            if isinstance(lam, bool) or not isinstance(lam, (int, float)) or lam < 0:
                raise ValueError(f"arch.uwo_lambda.{study}={lam!r} must be a number >= 0 (a negative weight rewards "
                                 "disagreement)")
        self.aggregator, self.k, self.uwo_lambda, self.normalize = aggregator, k, lambdas, normalize
        self.members = nn.ModuleList()  # built in fit: the backbone is only known then
        self.provenance: list[str] = []  # per member: "trained" here or "cached" from an earlier job
        # Each member's reward is (raw - shift) / scale before aggregation; set in fit from the reference set
        # (buffers: exported with the weights). Identity until then.
        self.register_buffer("member_shift", torch.zeros(k))
        self.register_buffer("member_scale", torch.ones(k))

    def member_rewards(self, batch: Batch) -> torch.Tensor:
        """(B, k): each member's reward, re-expressed on the reference set (``normalize``)."""
        raw = torch.stack([member_reward(m, batch, self.compute) for m in self.members], dim=-1)  # (B, k)
        return (raw.float() - self.member_shift) / self.member_scale

    def forward(self, batch: Batch) -> RewardOutput:
        rewards = self.member_rewards(batch)  # (B, k)
        reward = aggregate(rewards, self.aggregator, self.uwo_lambda[STUDIES[0]])  # (B,)
        return RewardOutput(reward=reward, info={"members": rewards, "aggregate": reward})

    def study_scorer(self, study: str):
        """UWO optimises its study's λ (Coste et al.: 0.5 for BoN, 0.1 on torch.var for PPO); other aggregators
        have nothing to set per study."""
        if study not in self.uwo_lambda:
            raise ValueError(f"ensemble: no UWO weight for study {study!r} "
                             f"(arch.uwo_lambda has {list(self.uwo_lambda)})")
        if self.aggregator != "uwo":
            return None
        return lambda batch: aggregate(self.member_rewards(batch), "uwo", self.uwo_lambda[study])

    def member_spec(self, ctx: FitContext, member: int) -> dict:
        """Everything that determines a trained member — and nothing else (no aggregator, λ or k)."""
        return trained_member_spec(ctx, self.compute, member_seeds(ctx.seed, member))

    def fit(self, train, val, ctx: FitContext) -> None:
        self.members = nn.ModuleList()
        self.provenance = []
        self.reused_tokens = 0
        for i in range(self.k):
            seeds = member_seeds(ctx.seed, i)
            member = ctx.backbone.reward_model(seeds[0])  # seeds the head init (and the global RNG for dropout)
            self.members.append(member)
            built, meta = train_member(self, member, seeds, train, val, ctx, phase=f"member{i}", index=i)
            # "trainable = updated in any phase": a cached member was trained, only in an earlier job.
            self.mark_trained(member.parameters())
            self.provenance.append("trained" if built else "cached")
            if not built:
                self.reused_tokens += int(meta.get("train_backbone_tokens", 0))
            ctx.log({**meta["result"], "member": i, "source": self.provenance[-1]})
        self.set_reference(val)

    @torch.no_grad()
    def set_reference(self, reference) -> None:
        """Each member's shift and scale from its raw rewards on ``reference`` (encoded pairs: the validation split),
        per ``normalize`` (module docstring)."""
        shift, scale = reference_normalization(self, self.members, reference, self.normalize)
        self.member_shift.copy_(shift)
        self.member_scale.copy_(scale)

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
        """How many members were trained in this job and how many came from the artifact cache, and each member's
        shift and scale on the reference set (the validation pairs)."""
        return {"members_trained": self.provenance.count("trained"), "members_cached": self.provenance.count("cached"),
                "normalize": self.normalize, "member_shift": self.member_shift.tolist(),
                "member_scale": self.member_scale.tolist()}
