"""more (MoRE, Namgoong et al. 2024): a sparse mixture of experts inside one reward model.

The dense FFN of each chosen decoder layer is upcycled (sparse upcycling: every expert starts as a copy of that
FFN, optionally jittered) into E experts with a token-level softmax router and top-2 routing, Mixtral style;
the scalar head pools the last real token as for `single`. Trained end to end with the Bradley-Terry loss plus a
Switch-style load-balancing loss. (D) The paper's abstract fixes only "sparse MoE with k = 2"; E = number of
domains, upcycling and the balance loss are our decisions (SPEC §6, methods.md §3.2).

The experts are transformers' own `MixtralExperts` (fused `gate_up_proj (E, 2I, H)` / `down_proj (E, H, I)`,
dispatched through `experts_implementation`) and the router is `MixtralTopKRouter` (softmax over E, top-k,
renormalised). A Llama FFN is exactly one such expert: `down(act(gate(x)) * up(x))` with `[gate; up]` stacked.
We do not use `MixtralSparseMoeBlock` itself: it returns only hidden states (router logits travel through
transformers' output recorder, which a Llama model does not have), and the loss needs them. Upcycling, the balance
loss and the expert bookkeeping are shared with umm (harness/archs/moe.py).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralExperts, MixtralTopKRouter

from ..data.schema import Batch
from ..seeds import Stream, derive_seed
from . import moe
from .base import FitContext, RewardModel, RewardOutput
from .train import train_bradley_terry


class SparseMoE(nn.Module):
    """Drop-in replacement for a decoder layer's `mlp`: router + E fused experts upcycled from that mlp.

    A decoder layer only passes hidden states through its mlp, so the routing of the last forward is kept on
    the module (`router_logits`, `top_k_index`) for the reward model to turn into its loss and `info`."""

    def __init__(self, mlp: nn.Module, config: MixtralConfig, expert_noise: float, router_init_std: float,
                 generator: torch.Generator):
        super().__init__()
        self.gate = MixtralTopKRouter(config)
        self.experts = MixtralExperts(config)
        moe.upcycle(mlp, self.gate, self.experts, expert_noise, router_init_std, generator)
        self.router_logits: torch.Tensor | None = None  # (B*T, E) of the last forward
        self.top_k_index: torch.Tensor | None = None  # (B*T, k)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        B, T, H = hidden_states.shape
        flat = hidden_states.reshape(B * T, H)
        router_logits, top_k_weights, top_k_index = self.gate(flat)  # weights: top-k probs renormalised to 1
        self.router_logits, self.top_k_index = router_logits, top_k_index
        out = self.experts(flat, top_k_index, top_k_weights.to(flat.dtype))
        return out.reshape(B, T, H)


class MoRE(RewardModel):
    # The router's load-balancing loss and per-response active counts read each token's place in the padded (B, T)
    # layout (attention_mask rows); a packed row would need them re-derived per segment.
    padded_because = "its MoE balance loss and load counts are computed on the padded (B, T) layout"

    def __init__(self, num_experts: int | None, top_k: int, layers: list[int] | None, expert_noise: float,
                 router_init_std: float, aux_loss_coef: float, experts_implementation: str):
        super().__init__()
        moe.check_knobs(num_experts, top_k, expert_noise, router_init_std, aux_loss_coef, experts_implementation)
        self.num_experts, self.top_k, self.layers = num_experts, top_k, layers
        self.expert_noise, self.router_init_std = expert_noise, router_init_std
        self.aux_loss_coef, self.experts_implementation = aux_loss_coef, experts_implementation
        self.model = None  # built in fit: the backbone is only known then

    def build(self, ctx: FitContext, seed: int) -> MoRE:
        def block(mlp: nn.Module, config: MixtralConfig, generator: torch.Generator) -> nn.Module:
            return SparseMoE(mlp, config, self.expert_noise, self.router_init_std, generator)

        self.model, self.E, self.moe_layers = moe.upcycled_model(ctx, seed, "more", self.num_experts, self.top_k,
                                                                 self.layers, self.experts_implementation, block)
        return self

    def blocks(self) -> list[SparseMoE]:
        return [self.model.model.layers[i].mlp for i in self.moe_layers]

    def forward(self, batch: Batch) -> RewardOutput:
        # info (B, L, E): expert_tokens (real tokens each expert processed) and router_prob, per MoE layer.
        reward, balance, info = moe.upcycled_forward(self.model, self.blocks(), batch, self.E)
        return RewardOutput(reward=reward, aux_loss=self.aux_loss_coef * balance, info=info)

    def fit(self, train, val, ctx: FitContext) -> None:
        self.build(ctx, ctx.seed)
        result = train_bradley_terry(self, list(self.model.parameters()), train, val, ctx.train,
                                     derive_seed(ctx.seed, Stream.RM_ORDER, 0), ctx, phase="more")
        ctx.log(result)

    def explain(self, seqs, batch_size: int = 256) -> dict:
        """The forward's routing per sequence (``expert_tokens``, ``router_prob``: (N, L, E)), and ``moe_layers``:
        the decoder layer of each of the L entries."""
        return {**super().explain(seqs, batch_size), "moe_layers": list(self.moe_layers)}

    def param_counts(self) -> dict[str, int]:
        """active_per_token = everything but the E - k experts a token skips in each MoE layer: embeddings,
        attention, norms, head, routers and k experts per MoE layer (the Switch/Mixtral convention). A response's
        tokens together use more experts: per response (SPEC §6) a response may use every one, so ``active`` is the
        total here, and ``active_params`` counts what each response used."""
        counts = super().param_counts()
        return {**counts, "active_per_token": moe.active_per_token(counts["total"], self.blocks(), self.top_k)}

    def active_params(self, seqs, batch_size: int = 256) -> torch.Tensor:
        """(N,) per response: everything but the experts none of its tokens was routed to, in each MoE layer."""
        tokens = self.explain(seqs, batch_size)["expert_tokens"]  # (N, L, E)
        return moe.union_active_params(self.param_counts()["total"], tokens, moe.expert_numel(self.blocks()))
