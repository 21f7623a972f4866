"""odin: ODIN (Chen et al., ICML 2024, "ODIN: Disentangled Reward Mitigates Hacking in RLHF"; code
Lichang-Chen/ODIN) — two linear heads on one backbone, a quality head and a length head, trained so that what the
labels owe to response length goes to the length head; the quality head alone is the reward (RL reads only it).

The loss of a batch of 2B sequences (chosen then rejected), as the repository's two-head reward model
(training/utils/model/two_head_rw.py) and its training loop (training/step2-reward-modeling/main.py) compute it:

- Bradley-Terry on the SUM of the heads, r_Q + r_L: together they explain the labels (the shared loop's BT loss);
- the length correlation loss, ``length_coef`` x [(1 - rho(r_L, len)) + |rho(r_Q, len)|], rho the Pearson
  correlation over the batch's sequences and len each sequence's response length in tokens: the length head follows
  length, the quality head does not;
- the orthogonality loss, ``orthogonality_coef`` x |cos(w_Q, w_L)| of the heads' weight vectors.

The heads project with centred, unit-norm weight vectors, as the repository's training script runs it
(``--normalized_proj``): the backbone's two-row score layer is parametrised so (``CentredUnitRows``), so a head's
scale lives in the trunk's features, and the orthogonality loss reads the product of the two rows.

A Pearson correlation is scale-free in the rewards, so its gradient grows as 1 / their s.d.: on a small backbone,
whose rewards vary little, the correlation terms outweigh the Bradley-Terry loss (conf/arch/odin.yaml says what
was measured), which is why ``length_coef`` is the repository's default 0.1 and not its 7B script's 1.0.

Where the repository differs: it also adds |rho(r_Q + r_L, len)| (a third term, not in the paper's loss, that works
against the length head; left out), and reads len as the whole sequence's length (prompt included; here the
response alone, so prompt lengths do not enter the correlations). Its RL reward (``forward_value``) reads the raw
score layer's first row, not the centred unit-norm row that training and its validation read; here the reward is
the head as trained, in scoring, export and the studies alike.

The forward gives the sum of the heads in training mode (what the loss reads) and the quality head in eval mode:
validation inside the loop (the best state is the quality head's, as the repository's evaluation picks it),
scoring, export and the studies all see the quality head. The views: ``quality`` (the reward itself),
``length`` and ``sum`` (what a single RM trained the same way would score).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..data.schema import Batch
from ..packing import sequence_logits
from ..seeds import Stream, derive_seed
from .base import FitContext, RewardModel, RewardOutput, TrainConfig, View
from .train import train_bradley_terry

# Columns of the backbone's two-label score layer.
QUALITY, LENGTH = 0, 1
# The smallest norm a head's centred weight vector is divided by (the repository's 1e-8).
HEAD_NORM_EPS = 1e-8
# Added under the square root of the correlation's denominator: a batch whose lengths (or rewards) are all equal has
# no correlation (0) rather than 0/0.
CORRELATION_EPS = 1e-12


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Pearson correlation of two (B,) tensors, differentiable; 0 when either is constant."""
    x, y = x - x.mean(), y - y.mean()
    return (x * y).sum() / torch.sqrt((x * x).sum() * (y * y).sum() + CORRELATION_EPS)


def length_correlation_loss(quality: torch.Tensor, length: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """ODIN's length loss (unweighted): (1 - rho(length head, len)) + |rho(quality head, len)|, over the batch."""
    return (1 - pearson(length, tokens)) + pearson(quality, tokens).abs()


def orthogonality_loss(weight: torch.Tensor) -> torch.Tensor:
    """ODIN's orthogonality loss (unweighted): |cos| of the two heads' weight vectors, the rows of ``weight``
    (2, hidden): 0 when orthogonal, 1 when parallel (for ODIN's unit rows, the absolute product the repository
    takes)."""
    w = F.normalize(weight.float(), dim=-1)
    return (w[QUALITY] * w[LENGTH]).sum().abs()


class CentredUnitRows(nn.Module):
    """The parametrisation of ODIN's heads (the repository's ``proj_with_normalized_weight``): each row of the score
    layer's weight centred on its mean and scaled to unit norm."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        centred = weight - weight.mean(dim=-1, keepdim=True)
        return centred / centred.norm(dim=-1, keepdim=True).clamp_min(HEAD_NORM_EPS)


def response_tokens(batch: Batch) -> torch.Tensor:
    """(B,) each sequence's response length in tokens: its tokens less its prompt's (the template's own tokens are
    the same for every sequence, so they shift every length alike and leave correlations unchanged)."""
    return (batch.attention_mask.sum(1) - batch.prompt_mask.sum(1)).float()


class ODINRM(RewardModel):
    def __init__(self, length_coef: float, orthogonality_coef: float, train: dict | None = None):
        super().__init__()
        for key, value in (("length_coef", length_coef), ("orthogonality_coef", orthogonality_coef)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"arch.{key}={value!r} must be a number >= 0")
        self.length_coef, self.orthogonality_coef = float(length_coef), float(orthogonality_coef)
        self.train_overrides = dict(train or {})
        unknown = set(self.train_overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise ValueError(f"arch.train: unknown keys {sorted(unknown)} (valid: the keys of `train`)")
        self.model = None  # built in fit: the backbone is only known then

    def build(self, ctx: FitContext, seed: int) -> ODINRM:
        # The trunk and the seed single's model starts from; the score layer has two rows, the two heads.
        self.model = ctx.backbone.reward_model(derive_seed(seed, Stream.RM_INIT, 0), num_labels=2)
        parametrize.register_parametrization(self.model.score, "weight", CentredUnitRows())
        return self

    def heads(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(quality, length), each (B,), read at the last real token (packed where compute.packing allows)."""
        logits = sequence_logits(self.model, batch.input_ids, batch.attention_mask, self.compute)
        return logits[:, QUALITY], logits[:, LENGTH]

    def forward(self, batch: Batch) -> RewardOutput:
        quality, length = self.heads(batch)
        info = {"quality": quality, "length": length}
        if not self.training:
            return RewardOutput(reward=quality, info=info)
        aux = (self.length_coef * length_correlation_loss(quality.float(), length.float(), response_tokens(batch))
               + self.orthogonality_coef * orthogonality_loss(self.model.score.weight))
        return RewardOutput(reward=quality + length, aux_loss=aux, info=info)

    def fit(self, train, val, ctx: FitContext) -> None:
        self.build(ctx, ctx.seed)
        cfg = dataclasses.replace(ctx.train, **self.train_overrides)
        cfg.validate("arch.train")
        result = train_bradley_terry(self, list(self.model.parameters()), train, val, cfg,
                                     derive_seed(ctx.seed, Stream.RM_ORDER, 0), ctx, phase="odin")
        ctx.log(result)

    def views(self) -> dict[str, View]:
        return {
            "quality": View(lambda batch: self.heads(batch)[QUALITY]),
            "length": View(lambda batch: self.heads(batch)[LENGTH]),
            "sum": View(lambda batch: sum(self.heads(batch))),
        }

    def fit_report(self) -> dict:
        """The heads' |cos| after training (what the orthogonality loss drove down)."""
        with torch.no_grad():
            return {"heads_abs_cos": float(orthogonality_loss(self.model.score.weight))}

    def dense_models(self) -> dict:
        """The quality head on the trunk: a copy of the model with a plain one-label score layer (the first row of
        the parametrised weight, as the forward uses it)."""
        quality = copy.deepcopy(self.model)
        head = quality.score
        quality.score = nn.Linear(head.in_features, 1, bias=False, device=head.weight.device, dtype=head.weight.dtype)
        with torch.no_grad():
            quality.score.weight.copy_(head.weight[QUALITY : QUALITY + 1].detach())
        quality.config.num_labels = quality.num_labels = 1
        return {"quality": quality}
