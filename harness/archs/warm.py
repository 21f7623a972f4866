"""warm (Ramé et al. 2024, "WARM: On the Benefits of Weight Averaged Reward Models", arXiv 2401.12187).

M reward models — each the backbone with a scalar head, Bradley-Terry loss, as ``single`` — are fine-tuned from ONE
shared initialisation (the same pre-trained backbone and the same head init: model 0's, the one ``single`` starts
from), each in its own data order; their weights are then averaged linearly into one dense RM,

    θ_WARM = (1/M) Σ_i θ_i,

of the backbone's own architecture and size. Sharing the initialisation is what makes the average a good model:
weights fine-tuned from one pre-trained point stay linearly mode connected, so their mean lies in the same basin
(heads drawn from different random inits, as an ensemble's are, have no such common point). Scoring costs one RM;
training costs M, counted like every other job's (metrics.json ``cost.train_backbone_tokens``, members taken from
the cache included).

Member i trains from seeds (head init of model 0, data order of model i): member 0 is the ``single`` RM of the same
job, and ensemble member 0 too. Trained members live in the artifact cache under the ensembles' key
(``ensemble.train_member``), so a sweep with ens_* and warm trains that member once.

Views (evaluated like the RM itself): ``member_<i>``, each member alone; ``ens_mean``, the members' prediction
ensemble aggregated exactly as ``arch=ens_mean`` does (each member standardized on the validation pairs, then the
mean), a model of its own with M RMs' parameters. So WARM against the ensemble of predictions — the paper's
comparison — is paired on the very same members.

With ``backbone.finetune=lora`` each member's adapters are folded into its weights before averaging: the average
of the members' updates B_i A_i, not the product of averaged factors.

Ramé et al. diversify the members by hyperparameters (learning rate, dropout) and data order, and propose Baklava
(initialisations taken along the SFT trajectory); here only the data order differs, so any diversity is that of
the order alone.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..backbones import merge_lora
from ..data.schema import Batch, EncodedPairs
from ..packing import sequence_logits
from ..seeds import Stream, derive_seed
from .base import FitContext, RewardModel, RewardOutput, View
from .ensemble import (
    NORMALIZATIONS,
    aggregate,
    member_reward,
    reference_normalization,
    train_member,
)
from .train import evaluate_pairs


def warm_member_seeds(job_seed: int, member: int) -> tuple[int, int]:
    """Member i's (head init, data order) seeds: every member starts from model 0's head (the shared
    initialisation) and trains in model i's data order."""
    return derive_seed(job_seed, Stream.RM_INIT, 0), derive_seed(job_seed, Stream.RM_ORDER, member)


def dense_state(member: nn.Module) -> dict[str, torch.Tensor]:
    """The member's weights as a plain model of the backbone's architecture: LoRA adapters folded in (on a copy)."""
    if any("lora_" in name for name, _ in member.named_parameters()):
        member = merge_lora(copy.deepcopy(member))
    return member.state_dict()


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """(1/M) Σ_i state_i, tensor by tensor, accumulated in float64 and returned in each tensor's dtype (so the mean of
    M equal tensors is that tensor, bit for bit). Tensors that are not floating point must agree across states."""
    if not states:
        raise ValueError("warm: no member states to average")
    keys = list(states[0])
    for i, state in enumerate(states[1:], start=1):
        if list(state) != keys:
            raise ValueError(f"warm: member {i} has other tensors than member 0 "
                             f"({sorted(set(state) ^ set(keys))[:5]}...)")
    out = {}
    for key in keys:
        tensors = [state[key] for state in states]
        if tensors[0].is_floating_point():
            out[key] = torch.stack([t.double() for t in tensors]).mean(0).to(tensors[0].dtype)
        elif all(torch.equal(t, tensors[0]) for t in tensors):
            out[key] = tensors[0].clone()
        else:
            raise ValueError(f"warm: members disagree on the non-float tensor {key!r}; cannot average it")
    return out


def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


class WARM(RewardModel):
    def __init__(self, m: int = 5, normalize: str = "standardize"):
        super().__init__()
        if isinstance(m, bool) or not isinstance(m, int) or m < 2:
            raise ValueError(f"arch.m={m!r} must be an integer >= 2 (the average of one model is that model)")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"arch.normalize={normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
        self.m, self.normalize = m, normalize
        self.members = nn.ModuleList()  # built in fit: the backbone is only known then
        self.model = None  # the weight average, a plain *ForSequenceClassification
        self.provenance: list[str] = []  # per member: "trained" here or "cached" from an earlier job
        self.reused_tokens = 0
        self.report: dict = {}
        # The ens_mean view's re-expression of each member, (raw - shift) / scale, as arch=ens_mean's (buffers:
        # exported with the weights).
        self.register_buffer("member_shift", torch.zeros(m))
        self.register_buffer("member_scale", torch.ones(m))

    # -- structure ------------------------------------------------------------------------------------------
    def new_member(self, ctx: FitContext) -> nn.Module:
        """A single RM at the shared initialisation (building it seeds the head init and the global RNG)."""
        return ctx.backbone.reward_model(warm_member_seeds(ctx.seed, 0)[0])

    def shared_init(self, ctx: FitContext) -> nn.Module:
        """The averaged model's shell: the shared initialisation as a plain model (no adapters), frozen — its
        weights come from averaging, never from a gradient."""
        return ctx.backbone.reward_model(warm_member_seeds(ctx.seed, 0)[0], adapt=False).requires_grad_(False)

    def build(self, ctx: FitContext, seed: int) -> WARM:
        """Every module, untrained: M members and the averaged model, all at the shared initialisation."""
        self.members = nn.ModuleList(self.new_member(ctx) for _ in range(self.m))
        self.model = self.shared_init(ctx)
        return self

    def dense_models(self) -> dict:
        return {"model": self.model}

    # -- scoring ---------------------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> RewardOutput:
        # (B, 1) at the last real token of the averaged model; padding-free where compute.packing allows
        logits = sequence_logits(self.model, batch.input_ids, batch.attention_mask, self.compute)
        return RewardOutput(reward=logits.squeeze(-1))

    def ensemble_reward(self, batch: Batch) -> torch.Tensor:
        """(B,) the members' prediction ensemble, as arch=ens_mean aggregates it."""
        raw = torch.stack([member_reward(m, batch, self.compute) for m in self.members], dim=-1)  # (B, M)
        return aggregate((raw.float() - self.member_shift) / self.member_scale, "mean", 0.0)

    # -- training --------------------------------------------------------------------------------------------
    def fit(self, train: EncodedPairs, val: EncodedPairs, ctx: FitContext) -> None:
        # The average's shell first, so that the RM scores (at the shared initialisation) before any member trained.
        self.model = self.shared_init(ctx)
        self.members, self.provenance, self.reused_tokens = nn.ModuleList(), [], 0
        member_acc = []
        for i in range(self.m):
            seeds = warm_member_seeds(ctx.seed, i)
            member = self.new_member(ctx)  # built right before it trains, as an ensemble member is
            self.members.append(member)
            built, meta = train_member(self, member, seeds, train, val, ctx, phase=f"warm/member{i}", index=i)
            self.provenance.append("trained" if built else "cached")
            if not built:
                self.reused_tokens += int(meta.get("train_backbone_tokens", 0))
                # A cached member was trained, only in an earlier job: its trained parameters are this RM's too.
                self.mark_trained(p for p in member.parameters() if p.requires_grad)
            ctx.log({**meta["result"], "member": i, "source": self.provenance[-1]})
            member_acc.append(meta["result"]["best_val_acc"])

        init = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        average = average_state_dicts([dense_state(m) for m in self.members])
        with torch.no_grad():
            self.model.load_state_dict(average)
        shift, scale = reference_normalization(self, self.members, val, self.normalize)
        self.member_shift.copy_(shift)
        self.member_scale.copy_(scale)
        self.eval()

        self.report = {"member_val_acc": member_acc, "spread": weight_spread(init, average, self.members)}
        if val is not None and len(val):
            self.report["average_val_acc"] = evaluate_pairs(self, val, self)
            self.report["ens_mean_val_acc"] = evaluate_pairs(lambda b: RewardOutput(self.ensemble_reward(b)), val,
                                                             self)
        ctx.log({"phase": "warm/average", **{k: v for k, v in self.report.items() if isinstance(v, float)}})

    def cost(self) -> dict:
        """Members taken from the cache were trained by an earlier job: their training tokens count here too."""
        return {"reused_train_backbone_tokens": self.reused_tokens}

    # -- reporting -------------------------------------------------------------------------------------------
    def param_counts(self) -> dict[str, int]:
        """The averaged model's: one dense RM, every parameter active (the members are stored beside it for the
        views, not used to score). trainable: what each member's training updated (its LoRA factors and head with
        backbone.finetune=lora; every weight otherwise)."""
        total = numel(self.model)
        trainable = sum(p.numel() for p in self.members[0].parameters() if p.requires_grad) if len(
            self.members) else total
        return {"total": total, "trainable": min(trainable, total), "active": total, "active_per_token": total}

    def views(self) -> dict[str, View]:
        """``member_<i>``: each member alone (raw rewards); ``ens_mean``: their prediction ensemble (arch=ens_mean's
        rule), with M RMs' parameters."""
        views = {f"member_{i}": View(lambda batch, member=member: member_reward(member, batch, self.compute))
                 for i, member in enumerate(self.members)}
        one = self.param_counts()
        stored = sum(numel(m) for m in self.members)
        views["ens_mean"] = View(self.ensemble_reward,
                                 params={"total": stored, "trainable": self.m * one["trainable"], "active": stored,
                                         "active_per_token": stored})
        return views

    def fit_report(self) -> dict:
        """Members trained here and taken from the cache; each member's best validation accuracy, the average's and
        the prediction ensemble's on the same validation pairs; how far the members lie from their average relative
        to how far they moved from the shared initialisation (``spread``); the ens_mean view's shift and scale."""
        return {"members_trained": self.provenance.count("trained"), "members_cached": self.provenance.count("cached"),
                **self.report, "normalize": self.normalize, "member_shift": self.member_shift.tolist(),
                "member_scale": self.member_scale.tolist()}


@torch.no_grad()
def weight_spread(init: dict[str, torch.Tensor], average: dict[str, torch.Tensor], members) -> dict:
    """``to_average``: mean over members of ||θ_i - θ̄||; ``from_init``: mean of ||θ_i - θ_0||; ``ratio`` of the two
    (0: the members are one model; near 1: they moved apart as far as they moved at all). Over floating tensors."""
    def distance(a: dict, b: dict) -> float:
        return float(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a if a[k].is_floating_point()).sqrt())

    states = [dense_state(m) for m in members]
    to_average = sum(distance(s, average) for s in states) / len(states)
    from_init = sum(distance(s, init) for s in states) / len(states)
    return {"to_average": to_average, "from_init": from_init,
            "ratio": to_average / from_init if from_init > 0 else float("nan")}
