"""What the hard top-1 routed domain reward models (rodos, arliss) share: a router reads the PROMPT only (real
prompts do not announce their task category: predicting it is the router's job) and each (prompt, response) is
scored by the reward model of the one domain the router ranks first; each domain's reward model is trained on its
own domain's pairs only.

Here: the domain checks of build and fit, the routed forward (``route_top1``), the routing decision the job's
routing accuracy reads, each domain's training slice, and the ``oracle_routing`` view. What a router and a domain
reward model are (full models in rodos, LoRA adapters of one backbone in arliss) stays in the architecture's file.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data.schema import Batch, EncodedPairs
from .base import RewardOutput, View, require_domains, route_rows

# reward(d, input_ids, attention_mask) -> (b,): domain d's reward model on rows routed to it (base.route_rows).
DomainReward = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def domains_to_route(arch: str, domains: list[str]) -> list[str]:
    """The data's domains, of which a router needs at least two to choose between."""
    domains = list(domains)
    if len(domains) < 2:
        raise ValueError(f"arch={arch} needs at least 2 domains to route between, got {domains}")
    return domains


def require_domain_labels(arch: str, train: EncodedPairs, val: EncodedPairs, n_domains: int) -> None:
    """A domain label on every training and validation pair: the router learns from them, and each domain's
    reward model trains (and early-stops) on its own."""
    require_domains(arch, train, "train", n_domains)
    require_domains(arch, val, "val", n_domains)


def route_top1(router_logits: torch.Tensor, batch: Batch, reward: DomainReward) -> RewardOutput:
    """The routed forward: each row scored by the reward model of its most probable domain (``router_logits``
    (B, n_domains)); info ``domain`` and ``domain_prob`` (B,). Each domain's model runs once per batch, on the rows
    routed to it (unrouted models are not touched)."""
    probs = router_logits.float().softmax(-1)  # (B, n)
    domain_prob, domain = probs.max(-1)  # hard top-1 routing, (B,) each
    return RewardOutput(reward=route_rows(batch, domain, reward), info={"domain": domain, "domain_prob": domain_prob})


def top1_routing(router_logits: Callable[[Batch], torch.Tensor]) -> Callable[[Batch], torch.Tensor]:
    """``RewardModel.routing``: the domain ``route_top1`` picks for each row, (B,)."""
    return lambda batch: router_logits(batch).float().softmax(-1).argmax(-1)


def domain_pairs(train: EncodedPairs, val: EncodedPairs, d: int, arch: str, name: str, model: str
                 ) -> tuple[EncodedPairs, EncodedPairs | None]:
    """Domain d's training pairs (there must be some: ``model``, what they train, names it in the error) and its
    validation pairs (None where val has none: that model then trains without early stopping)."""
    train_d = train.subset((train.chosen.domain == d).nonzero(as_tuple=True)[0])
    val_idx = (val.chosen.domain == d).nonzero(as_tuple=True)[0]
    if len(train_d) == 0:
        raise ValueError(f"arch={arch}: domain {name!r} has no training pairs, so it cannot get {model}")
    return train_d, val.subset(val_idx) if len(val_idx) else None


def oracle_routing(reward: DomainReward) -> View:
    """The view ``oracle_routing``: each pair scored by its TRUE domain's reward model (pairs with a domain label)."""
    return View(lambda b: route_rows(b, b.domain, reward), needs_domain=True)
