"""What the upcycled mixture-of-experts reward models (more, umm) share: sparse upcycling of a Llama-family FFN into
transformers' fused Mixtral experts, the Switch load-balancing loss, and the per-response expert bookkeeping.

Sparse upcycling (Komatsuzaki et al. 2023): every expert starts as a copy of the dense FFN it replaces, optionally
jittered, and a fresh router (`MixtralTopKRouter`: softmax over E, top-k, renormalised) picks k experts per token.
A Llama FFN is exactly one `MixtralExperts` expert: `down(act(gate(x)) * up(x))` with `[gate; up]` stacked into
`gate_up_proj (E, 2I, H)` and `down_proj (E, H, I)`. What an architecture does with the experts (more: the MoE
replaces the FFN; umm: the FFN stays on as a shared expert and the MoE is merged back) stays in its own file;
the MoE blocks keep the routing of their last forward (`router_logits`, `top_k_index`) for `upcycled_forward`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralExperts, MixtralTopKRouter

from ..data.schema import Batch
from ..seeds import Stream, derive_seed

EXPERTS_IMPLEMENTATIONS = ("eager", "batched_mm", "grouped_mm")  # transformers' kernels for MixtralExperts


def check_knobs(num_experts: int | None, top_k: int, expert_noise: float, router_init_std: float,
                aux_loss_coef: float, experts_implementation: str) -> None:
    """The YAML knobs every upcycled MoE has, checked before anything is built."""
    if num_experts is not None and num_experts < 2:
        raise ValueError(f"arch.num_experts={num_experts} must be >= 2 (or null = number of domains)")
    if top_k < 1:
        raise ValueError(f"arch.top_k={top_k} must be >= 1")
    if expert_noise < 0 or router_init_std < 0 or aux_loss_coef < 0:
        raise ValueError(f"arch.expert_noise={expert_noise}, router_init_std={router_init_std} and "
                         f"aux_loss_coef={aux_loss_coef} must be >= 0")
    if experts_implementation not in EXPERTS_IMPLEMENTATIONS:
        raise ValueError(f"arch.experts_implementation={experts_implementation!r}: "
                         f"valid choices are {', '.join(EXPERTS_IMPLEMENTATIONS)}")


def expert_count(num_experts: int | None, domains: list[str], top_k: int, arch: str) -> int:
    """E: ``num_experts``, or one expert per domain of the data (null), enough to route ``top_k``."""
    E = num_experts if num_experts is not None else len(domains)
    if E < max(2, top_k):
        raise ValueError(f"arch={arch}: {E} routed experts (num_experts={num_experts}, {len(domains)} domains) "
                         f"cannot route top_k={top_k}; set arch.num_experts >= max(2, top_k)")
    return E


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


# make_block(mlp, config, generator) -> the MoE block that replaces a decoder layer's FFN ``mlp``.
MakeBlock = Callable[[nn.Module, MixtralConfig, torch.Generator], nn.Module]


def upcycled_model(ctx, seed: int, arch: str, num_experts: int | None, top_k: int, layers: list[int] | None,
                   experts_implementation: str, make_block: MakeBlock) -> tuple[nn.Module, int, list[int]]:
    """(model, E, moe_layers): the backbone's reward model (*ForSequenceClassification, model 0 of the job) with
    the FFN of each chosen layer replaced by ``make_block(mlp, config, generator)``; ``config`` is the Mixtral config
    of E experts shaped like that FFN, and every block draws its router and expert noise from one generator, layer
    by layer."""
    model = ctx.backbone.reward_model(derive_seed(seed, Stream.RM_INIT, 0))
    E = expert_count(num_experts, ctx.domains, top_k, arch)
    moe_layers = upcyclable_layers(model, ctx.backbone, layers, arch)
    config = MixtralConfig(hidden_size=model.config.hidden_size,
                           intermediate_size=model.model.layers[0].mlp.gate_proj.out_features,
                           num_local_experts=E, num_experts_per_tok=top_k, hidden_act=model.config.hidden_act,
                           experts_implementation=experts_implementation)
    generator = torch.Generator().manual_seed(derive_seed(seed, Stream.EXPERT_INIT))
    for i in moe_layers:
        layer = model.model.layers[i]
        layer.mlp = make_block(layer.mlp, config, generator)
    return model, E, moe_layers


@torch.no_grad()
def upcycle(mlp: nn.Module, router: MixtralTopKRouter, experts: MixtralExperts, expert_noise: float,
            router_init_std: float, generator: torch.Generator) -> None:
    """In place: router weights ~ N(0, router_init_std), and every expert a copy of the dense ``mlp`` plus
    ``expert_noise`` Gaussian noise (all drawn from ``generator``, in this order)."""
    router.weight.normal_(0.0, router_init_std, generator=generator)
    gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], dim=0)  # (2I, H)
    down = mlp.down_proj.weight  # (H, I)
    for e in range(experts.num_experts):
        # Noise scaled by each matrix's own spread, so the knob means the same for every layer and size.
        experts.gate_up_proj[e] = gate_up + expert_noise * gate_up.std() * torch.randn(
            gate_up.shape, generator=generator)
        experts.down_proj[e] = down + expert_noise * down.std() * torch.randn(down.shape, generator=generator)


def load_balancing_loss(router_probs: torch.Tensor, top_k_index: torch.Tensor, E: int) -> torch.Tensor:
    """Switch Transformer's balance loss E * sum_i f_i * P_i over the given (real) tokens and routed experts.

    f_i = share of all k routing slots that went to expert i (sums to 1 over experts; not differentiable),
    P_i = mean router probability of expert i (carries the gradient). Uniform probabilities give exactly 1
    whatever the top-k choice; everything on one expert with probability 1 gives E. (Mixtral's
    `load_balancing_loss_func` normalises f per slot instead, so its uniform value is k, not 1.)"""
    f = F.one_hot(top_k_index, E).float().mean(dim=(0, 1))  # (E,)
    P = router_probs.mean(0)  # (E,)
    return E * (f * P).sum()


def upcycled_forward(model: nn.Module, blocks: list[nn.Module], batch: Batch, E: int
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(rewards (B,), pooled at the last real token; balance loss; info): the upcycled model on a padded batch and
    the routing of its MoE ``blocks`` over each row's real tokens (padding takes no part), their kept routing
    cleared. The balance loss is the mean over layers, so a coefficient means the same for any number L of MoE
    layers. Info (B, L, E): ``expert_tokens``, how many of a sequence's real tokens each routed expert processed
    (a token counts once for each of its top-k experts), per MoE layer, and ``router_prob``, the router's mean
    probability over those tokens."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits  # (B, 1)
    B, T = batch.attention_mask.shape
    real = batch.attention_mask.reshape(-1).bool()  # (B*T,)
    mask = batch.attention_mask.float()  # (B, T)
    n_real = mask.sum(1, keepdim=True).clamp_min(1)  # (B, 1)
    balance, expert_tokens, router_prob = [], [], []
    for block in blocks:
        assert block.router_logits is not None, "the model's forward did not pass through the MoE block"
        probs = torch.softmax(block.router_logits.float(), dim=-1)  # (B*T, E)
        balance.append(load_balancing_loss(probs[real], block.top_k_index[real], E))
        with torch.no_grad():
            slots = F.one_hot(block.top_k_index, E).sum(1).float().reshape(B, T, E)
            expert_tokens.append((slots * mask[..., None]).sum(1))  # (B, E)
            router_prob.append((probs.reshape(B, T, E) * mask[..., None]).sum(1) / n_real)  # (B, E)
        block.router_logits = block.top_k_index = None
    info = {"expert_tokens": torch.stack(expert_tokens, dim=1), "router_prob": torch.stack(router_prob, dim=1)}
    return logits.squeeze(-1), torch.stack(balance).mean(), info


# -- parameter bookkeeping (SPEC §6) ------------------------------------------------------------------------
def expert_numel(blocks: list[nn.Module]) -> int:
    """Parameters of one routed expert's FFN (the same in every MoE layer: all are copies of one dense shape)."""
    experts = blocks[0].experts
    return experts.gate_up_proj[0].numel() + experts.down_proj[0].numel()


def active_per_token(total: int, blocks: list[nn.Module], top_k: int) -> int:
    """``total`` but the E - k routed experts a token skips in each MoE layer (the Switch/Mixtral convention)."""
    return total - len(blocks) * (blocks[0].experts.num_experts - top_k) * expert_numel(blocks)


def union_active_params(total: int, expert_tokens: torch.Tensor, expert_numel: int) -> torch.Tensor:
    """(N,) parameters a token-routed MoE uses to score each sequence: all ``total`` but, in every MoE layer, the
    experts none of its tokens was routed to. ``expert_tokens`` (N, L, E): tokens each expert processed per layer;
    ``expert_numel``: parameters of one routed expert."""
    unused = (expert_tokens == 0).sum(dim=(1, 2)).double()  # (N,) (layer, expert) slots no token used
    return total - unused * expert_numel
