"""armo (ArmoRM: Wang, Xiong, Xie, Zhao, Zhang 2024, "Interpretable Preferences via Multi-Objective Reward Modeling
and Mixture-of-Experts", arXiv 2406.12845; code RLHFlow/RLHF-Reward-Modeling ``armo-rm/``; methods.md §7.1).

ArmoRM reads a frozen reward-model backbone in two stages; here, on the information DMoERM and ``single_judge``
get (every human label, and the same judge's swap-and-agree labels on every capability point of every training
pair, asked exactly as they ask them), so that armo against dmoerm is aggregation, not information:

0. The backbone RM. ArmoRM's frozen backbone is itself a Bradley-Terry RM (FsfairX-LLaMA3-RM); here it is the
   backbone + scalar head trained on the human labels with the shared loop (model 0's seeds: the very ``single``
   RM of the same job), then frozen (``finetune_backbone: false`` probes the pre-trained backbone instead).
1. Multi-objective regression. One linear probe w_j (no bias) on the last-token final hidden state h(x, y) per
   objective j = (domain, capability point), 28 on the default world (as ArmoRM's 19 attributes come from
   different data sources, each objective is fitted on its own domain's pairs only). ArmoRM fits ridge regression
   on absolute ratings; a judge gives pairwise labels, so the probe is the pairwise counterpart: L2-penalised
   Bradley-Terry (logistic) regression on h(chosen) - h(rejected), oriented by the label (0: left out), solved by
   Newton's method. Its penalty α is chosen per objective from ``l2_grid`` by held-out loss on a
   ``probe_val_fraction`` split of the objective's labels and the probe fitted on the rest, as ArmoRM's stage 1
   chooses its ridge α (80/20, the loss on the 20 %).
2. Gating. An MLP on the PROMPT's embedding (the frozen backbone's last-token state of the prompt alone) gives
   softmax(logits / T) over the J objectives — gates g(x) >= 0 summing to 1 — and the reward is
   R(x, y) = β · Σ_j g_j(x) · w_j · h(x, y), β a learnable scalar (ArmoRM's ``logit_scale``, initialised to 1).
   Trained with the Bradley-Terry loss on the human-labelled training pairs, backbone and probes frozen (ArmoRM:
   ReLU hidden layers, dropout, T = 10, BT loss on its preference pairs).

A response costs two backbone passes: the response (for h) and its prompt alone (for the gates; ArmoRM reads the
prompt's state from the same pass, at the last prompt token, which this harness's templates do not mark). The
frozen features are computed once per sequence while the gating trains.

Not reproduced: ArmoRM's verbosity de-correlation of the objectives (its training loop does not apply it either,
methods.md §7.1; the world has no verbosity objective). Explain: ``gates`` (N, J) per sequence — the routing view —
and ``attributes`` (N, J), the objectives' scores; fit_report: each domain's mean gates on its validation prompts.
Views: ``backbone_rm`` (stage 0 alone) and ``capability/<domain>/<point>`` (each probe alone, the capability heat
map DMoERM's experts fill too).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.schema import Batch, EncodedPairs, EncodedSequences
from ..packing import sequence_logits
from ..seeds import Stream, derive_seed
from .base import FitContext, RewardModel, RewardOutput, TrainConfig, View, capability_points
from .single_judge import request_judge_labels
from .train import train_bradley_terry


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(b, T, H) -> (b, H): the state at each row's last real token (right padding)."""
    last = (attention_mask.sum(1) - 1).clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def fit_probe(diffs: np.ndarray, l2: float, max_steps: int, tol: float = 1e-14) -> np.ndarray:
    """w (H,) minimising Σ_i softplus(-diffs_i · w) + l2/2 |w|^2: the L2-penalised Bradley-Terry fit of pairs whose
    preferred side comes first (``diffs`` (n, H): features of the preferred minus the other). Newton's method with a
    backtracking line search (the objective is strictly convex for l2 > 0), in float64."""
    X = diffs.astype(np.float64)
    n, H = X.shape
    w = np.zeros(H)

    def objective(v: np.ndarray) -> float:
        return float(np.logaddexp(0.0, -(X @ v)).sum() + 0.5 * l2 * v @ v)

    value = objective(w)
    for _ in range(max_steps):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))  # P(preferred side wins) under w, (n,)
        grad = -X.T @ (1.0 - p) + l2 * w
        hess = (X.T * (p * (1.0 - p))) @ X + l2 * np.eye(H)
        step = np.linalg.solve(hess, grad)
        decrease = float(grad @ step)  # the Newton decrement squared: how much a full step can still gain
        if decrease / 2 <= tol * max(1.0, abs(value)):
            break
        t = 1.0
        while t > 1e-8:
            candidate = w - t * step
            new = objective(candidate)
            if new <= value - 0.25 * t * decrease:  # Armijo: enough of the predicted decrease
                w, value = candidate, new
                break
            t *= 0.5
        else:  # no step decreases it any more (rounding): converged as far as float64 goes
            break
    return w


def probe_loss(diffs: np.ndarray, w: np.ndarray) -> float:
    """Mean Bradley-Terry loss -log σ(diffs · w) of pairs whose preferred side comes first."""
    return float(np.logaddexp(0.0, -(diffs.astype(np.float64) @ w)).mean())


class GatingNetwork(nn.Module):
    """ArmoRM's gating: ``n_hidden`` Linear + ReLU (+ dropout) layers, a Linear to one logit per objective, then
    softmax(logits / temperature) — the gates, summing to 1 — and the learnable scale β (``logit_scale``)."""

    def __init__(self, in_features: int, objectives: int, hidden: int, n_hidden: int, dropout: float,
                 temperature: float, logit_scale: float):
        super().__init__()
        dims = [in_features] + [hidden] * n_hidden
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.out = nn.Linear(dims[-1], objectives)
        self.dropout, self.temperature = dropout, temperature
        self.logit_scale = nn.Parameter(torch.full((1,), float(logit_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, J) gates, each row non-negative and summing to 1."""
        for layer in self.hidden:
            x = F.dropout(F.relu(layer(x)), self.dropout, self.training)
        return torch.softmax(self.out(x).float() / self.temperature, dim=-1)


class ArmoRM(RewardModel):
    # Scoring reads hidden states of two trunk passes (response, prompt), not a *ForSequenceClassification logit
    # that packing.sequence_logits packs.
    padded_because = "it reads the frozen trunk's hidden states of the response and of the prompt"

    def __init__(self, labeler, finetune_backbone: bool, backbone_train: dict, l2_grid: list[float],
                 probe_val_fraction: float, newton_steps: int, gating: dict, gating_train: dict,
                 label_pairs_per_domain: int | None, capabilities: dict[str, list[str]] | None):
        super().__init__()
        self.labeler = labeler  # harness.labelers.*, the same config group as dmoerm's and single_judge's
        train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
        for where, overrides in (("backbone_train", backbone_train), ("gating_train", gating_train)):
            unknown = set(overrides) - train_keys
            if unknown:
                raise ValueError(f"arch.{where}: unknown keys {sorted(unknown)} (valid: the keys of `train`)")
        self.backbone_train, self.gating_train = dict(backbone_train), dict(gating_train)
        grid = [float(a) for a in l2_grid]
        if not grid or any(not a > 0 for a in grid):
            raise ValueError(f"arch.l2_grid={l2_grid} must list penalties > 0")
        if not 0 < probe_val_fraction < 1:
            raise ValueError(f"arch.probe_val_fraction={probe_val_fraction} must be in (0, 1)")
        if newton_steps < 1:
            raise ValueError(f"arch.newton_steps={newton_steps} must be >= 1")
        if label_pairs_per_domain is not None and label_pairs_per_domain < 1:
            raise ValueError(f"arch.label_pairs_per_domain={label_pairs_per_domain} must be >= 1 or null")
        gating = dict(gating)
        expected = {"hidden_fraction", "hidden", "n_hidden", "dropout", "temperature", "logit_scale"}
        if set(gating) != expected:
            raise ValueError(f"arch.gating needs exactly the keys {sorted(expected)}, got {sorted(gating)}")
        if not gating["temperature"] > 0 or not 0 <= gating["dropout"] < 1 or gating["n_hidden"] < 0:
            raise ValueError(f"arch.gating={gating}: temperature > 0, dropout in [0, 1) and n_hidden >= 0")
        self.gating_cfg = gating
        self.finetune_backbone = bool(finetune_backbone)
        self.l2_grid, self.probe_val_fraction, self.newton_steps = grid, probe_val_fraction, newton_steps
        self.label_pairs_per_domain = label_pairs_per_domain
        self.capabilities = {k: list(v) for k, v in capabilities.items()} if capabilities else None
        self.model = None  # the backbone RM (*ForSequenceClassification), built in build()
        self.regression = None  # Linear(H, J, bias=False): row j is objective j's probe
        self.gating = None
        self.domains: list[str] = []
        self.points: list[list[str]] = []
        self.objectives: list[tuple[str, str]] = []  # (domain, point) of each objective, in order
        self.report: dict = {}

    # -- structure ------------------------------------------------------------------------------------------
    def build(self, ctx: FitContext, seed: int) -> ArmoRM:
        self.domains = list(ctx.domains)
        if not self.points:  # fit starts afresh; restore gives the points the fitted model had
            self.points = capability_points("armo", self.capabilities, self.domains,
                                            ctx.data.splits["train"] if ctx.data else None)
        self.objectives = [(d, p) for d, points in zip(self.domains, self.points, strict=True) for p in points]
        self.model = ctx.backbone.reward_model(derive_seed(seed, Stream.RM_INIT, 0))  # model 0: single's init
        H = ctx.backbone.hidden_size
        self.regression = nn.Linear(H, len(self.objectives), bias=False).requires_grad_(False)
        with torch.no_grad():
            self.regression.weight.zero_()  # no objective scores anything until stage 1 fits it
        hidden = self.gating_cfg["hidden"] or max(1, round(self.gating_cfg["hidden_fraction"] * H))
        torch.manual_seed(derive_seed(seed, Stream.COMBINER_INIT, 0))
        self.gating = GatingNetwork(H, len(self.objectives), hidden, self.gating_cfg["n_hidden"],
                                    self.gating_cfg["dropout"], self.gating_cfg["temperature"],
                                    self.gating_cfg["logit_scale"])
        return self

    def export_structure(self) -> dict:
        return {"points": self.points}  # the objectives per domain: from the data's cap_names, not the config

    def restore(self, ctx: FitContext, structure: dict) -> None:
        self.points = [list(p) for p in structure["points"]]
        self.build(ctx, ctx.seed)

    # -- features of the frozen backbone --------------------------------------------------------------------
    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(b, H) the backbone RM's last-token final hidden state: what its own scalar head reads."""
        out = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return last_token(out.last_hidden_state, attention_mask).float()

    @torch.no_grad()
    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memo: dict | None = None):
        """``hidden`` of a batch, without gradients (the backbone is frozen once stage 0 is done). ``memo`` (the
        gating's training): features by token content, so a sequence seen in an earlier epoch is looked up."""
        if memo is None:
            return self.hidden(input_ids, attention_mask)
        lengths = attention_mask.sum(1).cpu()
        ids_cpu = input_ids.cpu()
        keys = [ids_cpu[i, : lengths[i]].numpy().tobytes() for i in range(len(lengths))]
        todo = [i for i, key in enumerate(keys) if key not in memo]
        if todo:
            rows = torch.tensor(todo, device=input_ids.device)
            T = int(lengths[todo].max().clamp(min=1))
            was_training = self.model.training
            self.model.eval()
            fresh = self.hidden(input_ids[rows, :T], attention_mask[rows, :T])
            self.model.train(was_training)
            for j, i in enumerate(todo):
                memo[keys[i]] = fresh[j]
        return torch.stack([memo[key] for key in keys])

    def attributes_and_gates(self, batch: Batch, memo: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, J) the objectives' scores w_j · h(x, y) and (B, J) the gates g(x) from the prompt."""
        h = self.features(batch.input_ids, batch.attention_mask, memo)
        prompt = self.features(batch.prompt_ids, batch.prompt_mask, memo)
        return self.regression(h), self.gating(prompt)

    def forward(self, batch: Batch, memo: dict | None = None) -> RewardOutput:
        attributes, gates = self.attributes_and_gates(batch, memo)
        reward = self.gating.logit_scale * (gates * attributes).sum(-1)
        return RewardOutput(reward=reward, info={"gates": gates, "attributes": attributes,
                                                 "reward": reward.detach()})

    def backbone_reward(self, batch: Batch) -> torch.Tensor:
        """Stage 0 alone: the backbone RM's own scalar head (single's forward)."""
        return sequence_logits(self.model, batch.input_ids, batch.attention_mask, self.compute).squeeze(-1)

    # -- training --------------------------------------------------------------------------------------------
    def phase_config(self, ctx: FitContext, overrides: dict, where: str) -> TrainConfig:
        cfg = dataclasses.replace(ctx.train, **overrides)
        cfg.validate(f"arch.{where}")
        return cfg

    def fit(self, train: EncodedPairs, val: EncodedPairs, ctx: FitContext) -> None:
        self.points = []
        self.build(ctx, ctx.seed)
        self.report = {}
        gen = torch.Generator().manual_seed(derive_seed(ctx.seed, Stream.SUBSAMPLE))

        # Stage 0: the backbone RM on the human labels (single's model, seeds and loop), then frozen.
        if self.finetune_backbone:
            result = train_bradley_terry(self, list(self.model.parameters()), train, val,
                                         self.phase_config(ctx, self.backbone_train, "backbone_train"),
                                         derive_seed(ctx.seed, Stream.RM_ORDER, 0), ctx, phase="armo/backbone",
                                         forward=lambda b: RewardOutput(self.backbone_reward(b)))
            ctx.log(result)
            self.report["backbone_val_acc"] = result["best_val_acc"]
        self.model.requires_grad_(False)
        self.model.eval()

        # Stage 1: one probe per (domain, point) on the judge labels DMoERM is given.
        order, labels, points, stats = request_judge_labels("armo", self.labeler, self.capabilities,
                                                            self.label_pairs_per_domain, train, ctx, gen)
        if points != self.points:
            raise ValueError(f"arch=armo: the labeler was asked about {points}, the model has {self.points}")
        self.report["labeler"] = stats
        memo: dict = {}  # frozen features by token content, shared by both stages
        chosen, rejected = self.sequence_features(train.chosen, memo), self.sequence_features(train.rejected, memo)
        self.fit_probes(order, labels, chosen - rejected, gen)
        ctx.log({"phase": "armo/probes", "objectives": len(self.objectives),
                 "mean_val_acc": float(np.nanmean([e.get("val_acc", np.nan) for d in self.report["probes"].values()
                                                   for e in d.values()]))})

        # Stage 2: the gating network, BT on the human-labelled pairs, backbone and probes frozen.
        result = train_bradley_terry(self, list(self.gating.parameters()), train, val,
                                     self.phase_config(ctx, self.gating_train, "gating_train"),
                                     derive_seed(ctx.seed, Stream.COMBINER_ORDER, 0), ctx, phase="armo/gating",
                                     forward=lambda b: self(b, memo))
        ctx.log(result)
        self.report["gating_val_acc"] = result["best_val_acc"]
        self.eval()
        if val is not None and len(val):
            self.report["gates"] = self.mean_gates(val.chosen)

    @torch.no_grad()
    def sequence_features(self, seqs: EncodedSequences, memo: dict, batch_size: int = 256) -> torch.Tensor:
        """(N, H) frozen features of every sequence, in length-sorted batches on the RM's device (kept in ``memo``)."""
        compute = self.compute
        self.to(compute.device)
        out = torch.empty(len(seqs), self.regression.in_features)
        for idx in seqs.length_sorted_batches(batch_size):
            batch = seqs.batch(idx).to(compute.device)
            with compute.autocast():
                out[idx] = self.features(batch.input_ids, batch.attention_mask, memo).float().cpu()
        return out

    @torch.no_grad()
    def fit_probes(self, order: torch.Tensor, labels: list[torch.Tensor], diffs: torch.Tensor,
                   gen: torch.Generator) -> None:
        """Stage 1: objective (d, k)'s probe from domain d's labels on point k (``labels[d][:, k]``, rows
        ``order``'s block d; ``diffs`` (N, H) chosen minus rejected features of every training pair). Each α of
        ``l2_grid`` is fitted on a (1 - probe_val_fraction) share of the kept labels and scored by the BT loss on
        the rest; the α with the lowest loss keeps its probe (ArmoRM's stage 1). An objective with fewer than two
        kept labels keeps a zero probe (it scores nothing)."""
        weights = torch.zeros_like(self.regression.weight, dtype=torch.float64, device="cpu")
        probes, start, j = {}, 0, 0
        for d, domain_labels in enumerate(labels):
            rows = order[start : start + len(domain_labels)]
            start += len(domain_labels)
            X_d = diffs[rows].double().numpy()
            for k, point in enumerate(self.points[d]):
                y = domain_labels[:, k].numpy()
                kept = y != 0
                X = X_d[kept] * y[kept, None]  # every row's preferred side first
                entry = probes.setdefault(self.domains[d], {})[point] = {"pairs": int(kept.sum())}
                if len(X) >= 2:
                    perm = torch.randperm(len(X), generator=gen).numpy()
                    n_val = min(len(X) - 1, max(1, round(self.probe_val_fraction * len(X))))
                    held, fit_rows = X[perm[:n_val]], X[perm[n_val:]]
                    fits = {l2: fit_probe(fit_rows, l2, self.newton_steps) for l2 in self.l2_grid}
                    losses = {l2: probe_loss(held, w) for l2, w in fits.items()}
                    best = min(self.l2_grid, key=losses.__getitem__)  # the first of equal losses
                    weights[j] = torch.from_numpy(fits[best])
                    entry.update(fitted=True, l2=best, val_loss=losses[best],
                                 val_acc=float((held @ fits[best] > 0).mean()), val_pairs=n_val)
                else:
                    entry["fitted"] = False
                j += 1
        self.regression.weight.copy_(weights.to(self.regression.weight))
        self.report["probes"] = probes

    @torch.no_grad()
    def mean_gates(self, seqs: EncodedSequences) -> dict:
        """Per domain of the given (validation) prompts: the gates' mean over them, per objective, and the share of
        gate mass on the domain's own objectives."""
        gates = self.explain(seqs)["gates"].double()  # (N, J)
        out = {}
        for d, name in enumerate(self.domains):
            rows = seqs.domain == d
            if not bool(rows.any()):
                continue
            mean = gates[rows].mean(0)
            own = torch.tensor([o[0] == name for o in self.objectives])
            out[name] = {"own_domain_mass": float(mean[own].sum()),
                         "mean": {f"{od}/{op}": round(float(g), 4) for (od, op), g in zip(self.objectives, mean,
                                                                                           strict=True)}}
        return out

    # -- reporting -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def explain(self, seqs: EncodedSequences, batch_size: int = 256) -> dict:
        """Per sequence: ``gates`` (N, J), the routing over objectives from its prompt (rows sum to 1),
        ``attributes`` (N, J), each objective's score, and the ``reward``; ``objectives`` names column j."""
        out = super().explain(seqs, batch_size)
        out["objectives"] = [f"{d}/{p}" for d, p in self.objectives]
        return out

    def views(self) -> dict[str, View]:
        """``backbone_rm``: stage 0 alone (the single RM the probes read; when it was fine-tuned);
        ``capability/<domain>/<point>``: each objective's probe alone, on its own domain (the capability heat map)."""
        views = {}
        if self.finetune_backbone:
            views["backbone_rm"] = View(self.backbone_reward)
        for j, (domain, point) in enumerate(self.objectives):
            views[f"capability/{domain}/{point}"] = View(
                lambda b, j=j: self.regression(self.features(b.input_ids, b.attention_mask))[:, j],
                capability=(domain, point))
        return views

    def head(self) -> nn.Module:
        """The backbone RM's scalar head (stage 0's; scoring does not run it)."""
        return self.model.score if hasattr(self.model, "score") else self.model.classifier

    def param_counts(self) -> dict[str, int]:
        """total: backbone RM + probes + gating; trainable: what the loops trained (the backbone RM when fine-tuned,
        the gating) and the probes (fitted by Newton's method, not by a loop); active: all but the backbone RM's
        own head, which scoring does not run. A response costs two backbone passes (response, prompt)."""
        counts = super().param_counts()
        counts["trainable"] = min(counts["total"], counts["trainable"] + self.regression.weight.numel())
        counts["active"] = counts["active_per_token"] = counts["total"] - sum(p.numel() for p in
                                                                              self.head().parameters())
        return counts

    def cost(self) -> dict:
        """Every capability label is one question asked twice (swap-and-agree): 2 judge queries per label."""
        return {"judge_queries": 2 * int(self.report.get("labeler", {}).get("asked", 0))}

    def fit_report(self) -> dict:
        """``labeler``: its statistics; ``backbone_val_acc``: stage 0's; ``probes``: per domain and point the kept
        label pairs, the chosen α, held-out loss and accuracy; ``gating_val_acc``; ``gates``: per validation domain
        the mean gates and the mass on its own objectives; ``gating_hidden``: the gating MLP's width."""
        return {**self.report, "objectives": len(self.objectives), "gating_hidden": self.gating.out.in_features
                if self.gating_cfg["n_hidden"] else None}
