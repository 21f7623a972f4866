"""umm (UMM-RM, Fu & Xue, arXiv 2512.00724): upcycle to a shared-expert MoE, train it, merge it back to a dense RM.

1. Upcycle: the dense FFN of each chosen decoder layer stays on as an always-active shared expert, and E routed
   experts start as copies of it (sparse upcycling). Gates per token: g_shared = 1 - s_max and
   g_i = softmax_i * s_max for the top-k routed experts, where softmax_i is renormalised over the top-k (as in
   Mixtral) and s_max is the largest routed probability (or a fixed number: `s_max` knob). So the gates sum to 1
   and the MoE computes exactly the dense function at initialisation. (D) The paper's definition of s_max was
   not recovered (methods.md §4.2); this is the "plausible reading" recorded there.
2. Train the MoE end to end: Bradley-Terry + Switch load-balancing loss over the routed experts.
3. Merge: for every FFN weight W = rho * W_shared + (1 - rho) * sum_i a_i W_i, with rho = sigmoid(scalar) and
   a = softmax(logits per layer), initialised from the routing measured on the MoE's training data (rho from
   the mean shared gate, a from each expert's share of the routing). rho and the logits are then learned with
   the BT loss on a held-out slice of train carved off before step 2 (so the experts never saw it), everything
   else frozen; val stays clean for early stopping of both phases. (D) The paper gives no merge objective.
4. The result is an ordinary dense *ForSequenceClassification of the backbone's architecture and exact
   parameter count, saved with `save_pretrained` (safetensors + tokenizer) and loadable by
   `AutoModelForSequenceClassification.from_pretrained` alone. `score` uses it; the view `unmerged` exposes the
   MoE beside it, which the job evaluates like the merged model.

Experts and router are transformers' `MixtralExperts` / `MixtralTopKRouter` (fused weights); see more.py for why
not `MixtralSparseMoeBlock`. Upcycling, the balance loss and the expert bookkeeping are shared with more
(harness/archs/moe.py); the shared expert, its gate and the merge are umm's own.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralExperts, MixtralTopKRouter

from ..backbones import merge_lora
from ..data.schema import Batch, EncodedPairs
from ..seeds import Stream, derive_seed
from . import moe
from .base import FitContext, RewardModel, RewardOutput, View
from .train import train_bradley_terry

log = logging.getLogger(__name__)


class SharedExpertMoE(nn.Module):
    """Drop-in replacement for a decoder layer's `mlp`: the mlp itself as the always-on shared expert, plus a
    router and E fused routed experts upcycled from it. The routing of the last forward is kept on the module
    (`router_logits`, `top_k_index`, `shared_gate`): a decoder layer passes only hidden states through."""

    def __init__(self, mlp: nn.Module, config: MixtralConfig, expert_noise: float, router_init_std: float,
                 s_max: str | float, generator: torch.Generator):
        super().__init__()
        self.shared = mlp
        self.gate = MixtralTopKRouter(config)
        self.experts = MixtralExperts(config)
        self.s_max = s_max
        moe.upcycle(mlp, self.gate, self.experts, expert_noise, router_init_std, generator)
        self.router_logits: torch.Tensor | None = None  # (B*T, E) of the last forward
        self.top_k_index: torch.Tensor | None = None  # (B*T, k)
        self.shared_gate: torch.Tensor | None = None  # (B*T,)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        B, T, H = hidden_states.shape
        flat = hidden_states.reshape(B * T, H)
        router_logits, top_k_weights, top_k_index = self.gate(flat)  # weights: top-k probs renormalised to 1
        if self.s_max == "max":
            s_max = torch.softmax(router_logits.float(), dim=-1).max(-1).values  # (B*T,)
        else:
            s_max = torch.full((B * T,), float(self.s_max), device=flat.device)
        routed = self.experts(flat, top_k_index, (top_k_weights * s_max[:, None]).to(flat.dtype))
        out = (1 - s_max)[:, None].to(flat.dtype) * self.shared(flat) + routed
        self.router_logits, self.top_k_index, self.shared_gate = router_logits, top_k_index, 1 - s_max
        return out.reshape(B, T, H)


class UMMMoE(RewardModel):
    """The unmerged upcycled RM (phases 1-2): backbone with shared-expert MoE FFNs and a scalar head."""

    # As MoRE's: the balance loss and load counts are per token of the padded (B, T) layout.
    padded_because = "its MoE balance loss and load counts are computed on the padded (B, T) layout"

    def __init__(self, num_experts: int | None, top_k: int, layers: list[int] | None, expert_noise: float,
                 router_init_std: float, s_max: str | float, aux_loss_coef: float, experts_implementation: str):
        super().__init__()
        self.num_experts, self.top_k, self.layers = num_experts, top_k, layers
        self.expert_noise, self.router_init_std, self.s_max = expert_noise, router_init_std, s_max
        self.aux_loss_coef, self.experts_implementation = aux_loss_coef, experts_implementation
        self.model = None

    def build(self, ctx: FitContext, seed: int) -> UMMMoE:
        def block(mlp: nn.Module, config: MixtralConfig, generator: torch.Generator) -> nn.Module:
            return SharedExpertMoE(mlp, config, self.expert_noise, self.router_init_std, self.s_max, generator)

        self.model, self.E, self.moe_layers = moe.upcycled_model(ctx, seed, "umm", self.num_experts, self.top_k,
                                                                 self.layers, self.experts_implementation, block)
        return self

    def forward(self, batch: Batch) -> RewardOutput:
        # info (B, L, E): expert_tokens (real tokens each expert processed) and router_prob, per MoE layer.
        reward, balance, info = moe.upcycled_forward(self.model, self.blocks(), batch, self.E)
        mask = batch.attention_mask.float()  # (B, T)
        n_real = mask.sum(1).clamp_min(1)  # (B,)
        with torch.no_grad():  # (B, L): the mean gate of the always-on shared expert over the real tokens
            info["shared_gate"] = torch.stack([(block.shared_gate.reshape(mask.shape) * mask).sum(1) / n_real
                                               for block in self.blocks()], dim=1)
        for block in self.blocks():
            block.shared_gate = None
        return RewardOutput(reward=reward, aux_loss=self.aux_loss_coef * balance, info=info)

    def blocks(self) -> list[SharedExpertMoE]:
        return [self.model.model.layers[i].mlp for i in self.moe_layers]

    def explain(self, seqs, batch_size: int = 256) -> dict:
        """The forward's routing per sequence (``expert_tokens``, ``router_prob``: (N, L, E); ``shared_gate``:
        (N, L)), and ``moe_layers``: the decoder layer of each of the L entries."""
        return {**super().explain(seqs, batch_size), "moe_layers": list(self.moe_layers)}

    def param_counts(self) -> dict[str, int]:
        """active_per_token = everything but the E - k routed experts a token skips in each MoE layer: embeddings,
        attention, norms, head, routers, the shared expert and k routed experts per MoE layer (the Switch/Mixtral
        convention). Per response (SPEC §6) a response may use every routed expert, so ``active`` is the total here,
        and ``active_params`` counts what each response used."""
        counts = super().param_counts()
        return {**counts, "active_per_token": moe.active_per_token(counts["total"], self.blocks(), self.top_k)}

    def active_params(self, seqs, batch_size: int = 256) -> torch.Tensor:
        """(N,) per response: everything but the routed experts none of its tokens used, in each MoE layer."""
        tokens = self.explain(seqs, batch_size)["expert_tokens"]  # (N, L, E), routed experts only
        return moe.union_active_params(self.param_counts()["total"], tokens, moe.expert_numel(self.blocks()))


class UMMRM(RewardModel):
    # Phases 1-2 train UMMMoE (balance loss on the padded layout); the merge phase trains merge weights through
    # torch.func.functional_call of the unmerged model on padded batches.
    padded_because = "its MoE balance loss and load counts are computed on the padded (B, T) layout"

    def __init__(self, num_experts: int | None, top_k: int, layers: list[int] | None, expert_noise: float,
                 router_init_std: float, s_max: str | float, aux_loss_coef: float, experts_implementation: str,
                 merge_fraction: float, merge_train: dict):
        super().__init__()
        moe.check_knobs(num_experts, top_k, expert_noise, router_init_std, aux_loss_coef, experts_implementation)
        if s_max != "max" and not (isinstance(s_max, (int, float)) and 0 < s_max < 1):
            raise ValueError(f"arch.s_max={s_max!r} must be 'max' (largest routed probability) or a number in (0, 1)")
        if not 0 < merge_fraction < 1:
            raise ValueError(f"arch.merge_fraction={merge_fraction} must be in (0, 1)")
        self.merge_fraction, self.merge_train = merge_fraction, dict(merge_train)
        self.moe = UMMMoE(num_experts, top_k, layers, expert_noise, router_init_std, s_max, aux_loss_coef,
                          experts_implementation)
        self.model = None  # the merged dense model, built in fit
        self.rho_logit = None  # merge parameters, built in fit: one scalar, and (L, E) logits
        self.merge_logits = None
        self.merged_dir: Path | None = None
        self.report: dict = {}

    # -- the merge --------------------------------------------------------------------------------------------
    def merged_ffn(self) -> dict[str, torch.Tensor]:
        """The dense FFN weights W = rho W_shared + (1 - rho) sum_i a_i W_i of every MoE layer, keyed by the
        dense model's parameter names; differentiable in rho_logit and merge_logits."""
        rho = torch.sigmoid(self.rho_logit)
        weights = {}
        for j, i in enumerate(self.moe.moe_layers):
            block = self.moe.model.model.layers[i].mlp
            a = torch.softmax(self.merge_logits[j], dim=0)  # (E,)
            gate_up = torch.einsum("e,eoh->oh", a, block.experts.gate_up_proj)  # (2I, H)
            gate, up = gate_up.chunk(2, dim=0)  # (I, H) each: MixtralExperts stacks [gate; up]
            down = torch.einsum("e,ehi->hi", a, block.experts.down_proj)  # (H, I)
            prefix = f"model.layers.{i}.mlp."
            weights[prefix + "gate_proj.weight"] = rho * block.shared.gate_proj.weight + (1 - rho) * gate
            weights[prefix + "up_proj.weight"] = rho * block.shared.up_proj.weight + (1 - rho) * up
            weights[prefix + "down_proj.weight"] = rho * block.shared.down_proj.weight + (1 - rho) * down
        return weights

    def forward_merge(self, batch: Batch) -> RewardOutput:
        """The dense model with the current merged FFN weights swapped in (functional: gradients reach the
        merge parameters only)."""
        logits = functional_call(self.model, self.merged_ffn(),
                                 kwargs=dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                             use_cache=False)).logits
        return RewardOutput(reward=logits.squeeze(-1))

    def init_merge(self, train: EncodedPairs) -> None:
        """Merge parameters from the MoE's routing on its own training data: a_i = expert i's share of the
        routing slots (add-one smoothed, so no expert starts at -inf), rho = the mean shared gate."""
        tokens, shared, n_tok = 0, 0, 0
        for seqs in (train.chosen, train.rejected):
            info = self.moe.explain(seqs)
            per_seq = info["expert_tokens"].sum(-1) / self.moe.top_k  # (N, L) real tokens
            tokens = tokens + info["expert_tokens"].sum(0)  # (L, E)
            shared = shared + (info["shared_gate"] * per_seq).sum(0)  # (L,)
            n_tok = n_tok + per_seq.sum(0)  # (L,)
        freq = (tokens + 1) / (tokens.sum(-1, keepdim=True) + self.moe.E)  # (L, E)
        rho = float((shared / n_tok).mean())
        self.rho_logit = nn.Parameter(torch.tensor(math.log(rho / (1 - rho))))
        self.merge_logits = nn.Parameter(freq.log())
        self.report["init"] = self.merge_weights()

    def merge_weights(self) -> dict:
        names = [f"layer_{i}" for i in self.moe.moe_layers]
        a = torch.softmax(self.merge_logits.detach(), dim=-1)
        return {"rho": float(torch.sigmoid(self.rho_logit.detach())),
                "a": {n: [round(x, 4) for x in row.tolist()] for n, row in zip(names, a, strict=True)}}

    def dense_from_moe(self) -> nn.Module:
        """The dense model: the MoE model with each MoE block replaced by a plain copy of its shared FFN (the
        very module class the backbone had there); the merge overwrites its FFN weights."""
        dense = copy.deepcopy(self.moe.model)
        for i in self.moe.moe_layers:
            dense.model.layers[i].mlp = copy.deepcopy(dense.model.layers[i].mlp.shared)
        merge_lora(dense)  # backbone.finetune=lora: attention adapters folded in, so the dense count is exact
        return dense.requires_grad_(False)

    # -- export (harness.export) ------------------------------------------------------------------------------
    def restore(self, ctx: FitContext, structure: dict) -> None:
        """MoE, merge parameters and merged dense model, untrained, in their fitted shapes."""
        self.moe.build(ctx, ctx.seed)
        self.rho_logit = nn.Parameter(torch.zeros(()))
        self.merge_logits = nn.Parameter(torch.zeros(len(self.moe.moe_layers), self.moe.E))
        self.model = self.dense_from_moe()

    def dense_models(self) -> dict:
        return {"merged": self.model}

    # -- the recipe -------------------------------------------------------------------------------------------
    def build(self, ctx: FitContext, seed: int) -> UMMRM:
        """The upcycled MoE only (phase 1); until `fit` has merged it, the RM is that MoE."""
        self.moe.build(ctx, seed)
        return self

    def fit(self, train: EncodedPairs, val: EncodedPairs, ctx: FitContext) -> None:
        try:
            merge_cfg = dataclasses.replace(ctx.train, **self.merge_train)
        except TypeError as e:
            raise ValueError(f"arch.merge_train={self.merge_train}: keys must be train.* settings ({e})") from e
        merge_cfg.validate("arch.merge_train")
        # Held-out slice for learning the merge, carved off before the experts train, so they never saw it.
        subsample = torch.Generator().manual_seed(derive_seed(ctx.seed, Stream.SUBSAMPLE))
        perm = torch.randperm(len(train), generator=subsample)
        n_merge = max(1, round(self.merge_fraction * len(train)))
        heldout, moe_train = train.subset(perm[:n_merge]), train.subset(perm[n_merge:])

        self.build(ctx, ctx.seed)
        result = train_bradley_terry(self.moe, list(self.moe.model.parameters()), moe_train, val, ctx.train,
                                     derive_seed(ctx.seed, Stream.RM_ORDER, 0), ctx, phase="umm/moe")
        ctx.log(result)
        self.report["moe"] = {"train_pairs": len(moe_train), "best_val_acc": result["best_val_acc"],
                              "seconds": result["seconds"]}
        self.moe.requires_grad_(False)

        self.init_merge(moe_train)
        self.model = self.dense_from_moe()
        result = train_bradley_terry(self, [self.rho_logit, self.merge_logits], heldout, val, merge_cfg,
                                     derive_seed(ctx.seed, Stream.COMBINER_ORDER, 0), ctx, phase="umm/merge",
                                     forward=self.forward_merge)
        ctx.log(result)
        self.report["merge"] = {"train_pairs": len(heldout), "best_val_acc": result["best_val_acc"],
                                "seconds": result["seconds"]}
        with torch.no_grad():
            for name, weight in self.merged_ffn().items():
                self.model.get_parameter(name).copy_(weight)
        self.model.eval()

        out_root = ctx.artifact_dir if ctx.artifact_dir is not None else tempfile.mkdtemp(prefix="umm-")
        self.merged_dir = Path(out_root) / "umm_merged"
        self.model.save_pretrained(self.merged_dir)  # safetensors
        ctx.backbone.tokenizer.save_pretrained(self.merged_dir)
        log.info("umm: merged dense reward model saved to %s", self.merged_dir)

    def forward(self, batch: Batch) -> RewardOutput:
        if self.model is None:  # built, not merged yet: the MoE scores
            return self.moe(batch)
        logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            use_cache=False).logits  # (B, 1), the merged dense model
        return RewardOutput(reward=logits.squeeze(-1))

    def param_counts(self) -> dict[str, int]:
        """The merged model's: an ordinary dense model, so active = total; and every one of its weights came
        out of training (the MoE phase trained all of them, the merge learned the FFNs), so trainable = total.
        The MoE and the merge parameters are not stored in it (the view `unmerged` reports the MoE's)."""
        if self.model is None:  # built, not merged yet: the MoE is the RM
            return self.moe.param_counts()
        total = sum(p.numel() for p in {id(p): p for p in self.model.parameters()}.values())
        return {"total": total, "trainable": total, "active": total, "active_per_token": total}

    def active_params(self, seqs, batch_size: int = 256) -> torch.Tensor:
        if self.model is None:  # built, not merged yet: the MoE is the RM
            return self.moe.active_params(seqs, batch_size)
        return super().active_params(seqs, batch_size)

    def explain(self, seqs, batch_size: int = 256) -> dict:
        """The merged model routes nothing: this is the unmerged MoE's routing, from which the merge began."""
        return self.moe.explain(seqs, batch_size)

    def views(self) -> dict[str, View]:
        """``unmerged``: the MoE before the merge, a model of its own (its parameters reported beside it)."""
        return {"unmerged": View(lambda batch: self.moe(batch).reward, params=self.moe.param_counts(),
                                 active_params=self.moe.active_params)}

    def fit_report(self) -> dict:
        """``moe``: the MoE's training; ``merge``: rho and a, learned and at initialisation, and where the merged
        model was saved."""
        merge = {**self.merge_weights(), "init": self.report["init"], **self.report["merge"],
                 "params": self.rho_logit.numel() + self.merge_logits.numel(), "merged_dir": str(self.merged_dir)}
        return {"moe": dict(self.report["moe"]), "merge": merge}
