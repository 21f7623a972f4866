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
transformers' output recorder, which a Llama model does not have), and the loss needs them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralExperts, MixtralTopKRouter

from ..data.schema import Batch
from ..seeds import Stream, derive_seed
from ..train import train_bradley_terry
from .base import FitContext, RewardModel, RewardOutput, union_active_params


class SparseMoE(nn.Module):
    """Drop-in replacement for a decoder layer's `mlp`: router + E fused experts upcycled from that mlp.

    A decoder layer only passes hidden states through its mlp, so the routing of the last forward is kept on
    the module (`router_logits`, `top_k_index`) for the reward model to turn into its loss and `info`."""

    def __init__(self, mlp: nn.Module, config: MixtralConfig, expert_noise: float, router_init_std: float,
                 generator: torch.Generator):
        super().__init__()
        self.gate = MixtralTopKRouter(config)
        self.experts = MixtralExperts(config)
        with torch.no_grad():
            self.gate.weight.normal_(0.0, router_init_std, generator=generator)
            gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], dim=0)  # (2I, H)
            down = mlp.down_proj.weight  # (H, I)
            for e in range(config.num_local_experts):
                # Noise scaled by each matrix's own spread, so the knob means the same for every layer and size.
                self.experts.gate_up_proj[e] = gate_up + expert_noise * gate_up.std() * torch.randn(
                    gate_up.shape, generator=generator)
                self.experts.down_proj[e] = down + expert_noise * down.std() * torch.randn(
                    down.shape, generator=generator)
        self.router_logits: torch.Tensor | None = None  # (B*T, E) of the last forward
        self.top_k_index: torch.Tensor | None = None  # (B*T, k)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        B, T, H = hidden_states.shape
        flat = hidden_states.reshape(B * T, H)
        router_logits, top_k_weights, top_k_index = self.gate(flat)  # weights: top-k probs renormalised to 1
        self.router_logits, self.top_k_index = router_logits, top_k_index
        out = self.experts(flat, top_k_index, top_k_weights.to(flat.dtype))
        return out.reshape(B, T, H)


def load_balancing_loss(router_probs: torch.Tensor, top_k_index: torch.Tensor, E: int) -> torch.Tensor:
    """Switch Transformer's balance loss E * sum_i f_i * P_i over the given (real) tokens.

    f_i = share of all k routing slots that went to expert i (sums to 1 over experts; not differentiable),
    P_i = mean router probability of expert i (carries the gradient). Uniform probabilities give exactly 1
    whatever the top-k choice; everything on one expert with probability 1 gives E. (Mixtral's
    `load_balancing_loss_func` normalises f per slot instead, so its uniform value is k, not 1.)"""
    f = F.one_hot(top_k_index, E).float().mean(dim=(0, 1))  # (E,)
    P = router_probs.mean(0)  # (E,)
    return E * (f * P).sum()


def upcyclable_layers(model: nn.Module, backbone, layers: list[int] | None, arch: str) -> list[int]:
    """Indices of the decoder layers to upcycle, after checking the model is Llama-shaped."""
    blocks = getattr(getattr(model, "model", None), "layers", None)
    needed = (f"arch={arch} upcycles Llama-family FFNs: it needs decoder layers at model.model.layers[i].mlp with "
              f"bias-free gate_proj/up_proj/down_proj Linear layers and config.hidden_act")
    if blocks is None or not hasattr(model.config, "hidden_act"):
        raise ValueError(f"{needed}; backbone={backbone.name} gives {type(model).__name__}, which does not")
    chosen = list(range(len(blocks))) if layers is None else list(layers)
    if not chosen or len(set(chosen)) != len(chosen) or not all(0 <= i < len(blocks) for i in chosen):
        raise ValueError(f"arch.layers={layers} must be distinct indices in [0, {len(blocks)}) (or null = all)")
    for i in chosen:
        mlp = blocks[i].mlp
        projs = [getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
        if not all(isinstance(p, nn.Linear) and p.bias is None for p in projs):
            raise ValueError(f"{needed}; backbone={backbone.name}: layer {i} has {type(mlp).__name__}")
    return chosen


class MoRE(RewardModel):
    # The router's load-balancing loss and per-response active counts read each token's place in the padded (B, T)
    # layout (attention_mask rows); a packed row would need them re-derived per segment.
    padded_because = "its MoE balance loss and load counts are computed on the padded (B, T) layout"

    def __init__(self, num_experts: int | None, top_k: int, layers: list[int] | None, expert_noise: float,
                 router_init_std: float, aux_loss_coef: float, experts_implementation: str):
        super().__init__()
        if num_experts is not None and num_experts < 2:
            raise ValueError(f"arch.num_experts={num_experts} must be >= 2 (or null = number of domains)")
        if top_k < 1:
            raise ValueError(f"arch.top_k={top_k} must be >= 1")
        if expert_noise < 0 or router_init_std < 0 or aux_loss_coef < 0:
            raise ValueError(f"arch.expert_noise={expert_noise}, router_init_std={router_init_std} and "
                             f"aux_loss_coef={aux_loss_coef} must be >= 0")
        if experts_implementation not in ("eager", "batched_mm", "grouped_mm"):
            raise ValueError(f"arch.experts_implementation={experts_implementation!r}: "
                             f"valid choices are eager, batched_mm, grouped_mm")
        self.num_experts, self.top_k, self.layers = num_experts, top_k, layers
        self.expert_noise, self.router_init_std = expert_noise, router_init_std
        self.aux_loss_coef, self.experts_implementation = aux_loss_coef, experts_implementation
        self.model = None  # built in fit: the backbone is only known then

    def build(self, ctx: FitContext, seed: int) -> MoRE:
        model = ctx.backbone.reward_model(derive_seed(seed, Stream.RM_INIT, 0))  # *ForSequenceClassification
        E = self.num_experts if self.num_experts is not None else len(ctx.domains)
        if E < max(2, self.top_k):
            raise ValueError(f"arch=more: {E} experts (num_experts={self.num_experts}, {len(ctx.domains)} "
                             f"domains) cannot route top_k={self.top_k}; set arch.num_experts >= max(2, top_k)")
        self.E = E
        self.moe_layers = upcyclable_layers(model, ctx.backbone, self.layers, "more")
        config = MixtralConfig(hidden_size=model.config.hidden_size,
                               intermediate_size=model.model.layers[0].mlp.gate_proj.out_features,
                               num_local_experts=E, num_experts_per_tok=self.top_k,
                               hidden_act=model.config.hidden_act,
                               experts_implementation=self.experts_implementation)
        generator = torch.Generator().manual_seed(derive_seed(seed, Stream.EXPERT_INIT))
        for i in self.moe_layers:
            layer = model.model.layers[i]
            layer.mlp = SparseMoE(layer.mlp, config, self.expert_noise, self.router_init_std, generator)
        self.model = model
        return self

    def blocks(self) -> list[SparseMoE]:
        return [self.model.model.layers[i].mlp for i in self.moe_layers]

    def forward(self, batch: Batch) -> RewardOutput:
        logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            use_cache=False).logits  # (B, 1), pooled at the last real token
        B, T = batch.input_ids.shape
        real = batch.attention_mask.reshape(-1).bool()  # (B*T,) padding takes no part in balance or load
        mask = batch.attention_mask.float()  # (B, T)
        n_real = mask.sum(1, keepdim=True).clamp_min(1)  # (B, 1)
        balance, expert_tokens, router_prob = [], [], []
        for block in self.blocks():
            assert block.router_logits is not None, "the model's forward did not pass through the MoE block"
            probs = torch.softmax(block.router_logits.float(), dim=-1)  # (B*T, E)
            balance.append(load_balancing_loss(probs[real], block.top_k_index[real], self.E))
            with torch.no_grad():
                slots = F.one_hot(block.top_k_index, self.E).sum(1).float().reshape(B, T, self.E)
                expert_tokens.append((slots * mask[..., None]).sum(1))  # (B, E)
                router_prob.append((probs.reshape(B, T, self.E) * mask[..., None]).sum(1) / n_real)  # (B, E)
            block.router_logits = block.top_k_index = None
        aux = self.aux_loss_coef * torch.stack(balance).mean()  # mean over layers: coef means the same for any L
        info = {
            # (B, L, E): how many of this sequence's real tokens each expert processed (a token counts once for
            # each of its top-k experts), per MoE layer; and the router's mean probability over those tokens.
            "expert_tokens": torch.stack(expert_tokens, dim=1),
            "router_prob": torch.stack(router_prob, dim=1),
        }
        return RewardOutput(reward=logits.squeeze(-1), aux_loss=aux, info=info)

    def fit(self, train, val, ctx: FitContext) -> None:
        self.build(ctx, ctx.seed)
        result = train_bradley_terry(self, list(self.model.parameters()), train, val, ctx.train,
                                     derive_seed(ctx.seed, Stream.RM_ORDER, 0), ctx, phase="more")
        ctx.log(result)

    def explain(self, seqs, batch_size: int = 256) -> dict:
        """The forward's routing per sequence (``expert_tokens``, ``router_prob``: (N, L, E)), and ``moe_layers``:
        the decoder layer of each of the L entries."""
        return {**super().explain(seqs, batch_size), "moe_layers": list(self.moe_layers)}

    def expert_numel(self) -> int:
        """Parameters of one expert's FFN (the same in every MoE layer: all are copies of one dense shape)."""
        experts = self.blocks()[0].experts
        return experts.gate_up_proj[0].numel() + experts.down_proj[0].numel()

    def param_counts(self) -> dict[str, int]:
        """active_per_token = everything but the E - k experts a token skips in each MoE layer: embeddings,
        attention, norms, head, routers and k experts per MoE layer (the Switch/Mixtral convention). A response's
        tokens together use more experts: per response (SPEC §6) a response may use every one, so ``active`` is the
        total here, and ``active_params`` counts what each response used."""
        counts = super().param_counts()
        skipped = len(self.moe_layers) * (self.E - self.top_k) * self.expert_numel()
        return {**counts, "active_per_token": counts["total"] - skipped}

    def active_params(self, seqs, batch_size: int = 256) -> torch.Tensor:
        """(N,) per response: everything but the experts none of its tokens was routed to, in each MoE layer."""
        tokens = self.explain(seqs, batch_size)["expert_tokens"]  # (N, L, E)
        return union_active_params(self.param_counts()["total"], tokens, self.expert_numel())
