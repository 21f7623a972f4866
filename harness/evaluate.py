"""The job's evaluation of a fitted reward model with the project's one rule (harness/accuracy.py).

``evaluate_architecture`` is what the job measures beside the RM's own accuracy, from what the architecture
exposes (``RewardModel.views``, ``routing``, ``explain``) and what the test data holds (domain, gold and capability
columns): architectures never compute metrics themselves. The metrics.json keys are listed in results/README.md.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .accuracy import by_domain, pair_correct, preference_accuracy
from .data.schema import EncodedPairs, EncodedSequences

# ---------------------------------------------------------------------------------- what a test split holds


def split_domains(dataset) -> np.ndarray:
    """Each pair's domain name ("" where the data has none)."""
    return np.asarray(dataset["domain"] if "domain" in dataset.column_names else [""] * len(dataset))


def split_accuracy(r_chosen, r_rejected, dataset, rows: np.ndarray | None = None) -> dict:
    """``preference_accuracy`` of rewards for ``rows`` of a raw split (all rows: None), with the split's domain and
    gold columns where it has them."""
    rows = np.arange(len(dataset)) if rows is None else rows
    gold = "gold_chosen" in dataset.column_names
    return preference_accuracy(
        np.asarray(r_chosen), np.asarray(r_rejected), split_domains(dataset)[rows],
        np.asarray(dataset["gold_chosen"])[rows] if gold else None,
        np.asarray(dataset["gold_rejected"])[rows] if gold else None,
    )


def capability_truth(dataset, rows: np.ndarray, point: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The true values of capability ``point`` on each side of ``rows``, or None where the data does not hold that
    point for every one of them (no ``cap_*`` columns, or the point is not among a row's ``cap_names``)."""
    if not {"cap_names", "cap_chosen", "cap_rejected"} <= set(dataset.column_names):
        return None
    part = dataset.select(rows.tolist())
    if any(point not in names for names in part["cap_names"]):
        return None
    k = [list(names).index(point) for names in part["cap_names"]]
    v_c = np.array([values[i] for values, i in zip(part["cap_chosen"], k, strict=True)], dtype=np.float64)
    v_r = np.array([values[i] for values, i in zip(part["cap_rejected"], k, strict=True)], dtype=np.float64)
    return v_c, v_r


# --------------------------------------------------------------------------------- views, routing, load


def score_pairs(arch, scorer, pairs: EncodedPairs, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return arch.score(pairs.chosen, batch_size, scorer), arch.score(pairs.rejected, batch_size, scorer)


CAPABILITY_BASIS = {
    "truth": "expert-alone accuracy against the true order of its capability point on the test pairs of the domain "
             "(pairs tied on the point left out)",
    "human": "expert-alone accuracy against the human label on the test pairs of the domain",
}


def evaluate_views(arch, test: EncodedPairs, dataset, batch_size: int, scores: dict | None = None) -> dict:
    """Each view of ``arch`` on the test pairs it applies to, with the one rule: ``views.<name>`` (accuracy, scoring
    time, the view's own params if it is a model of its own) and, for views of one capability point,
    ``explain.capability_scores.<domain>.<point>``. ``scores``, if given, receives the rewards (chosen, rejected)
    of each view scored on every test pair (the job's test_scores.csv)."""
    domains = split_domains(dataset)
    views, capability, basis = {}, {}, set()
    for name, view in arch.views().items():
        if view.capability is not None:
            domain, point = view.capability
            rows = np.flatnonzero(domains == domain)
            if not len(rows):
                continue
            r_c, r_r = (r.numpy().astype(np.float64)
                        for r in score_pairs(arch, view.score, test.subset(torch.as_tensor(rows)), batch_size))
            truth = capability_truth(dataset, rows, point)
            basis.add("human" if truth is None else "truth")
            correct, decided = pair_correct(r_c, r_r, *(truth or ()))
            kept = correct[decided]
            capability.setdefault(domain, {})[point] = float(kept.mean()) if len(kept) else float("nan")
            continue
        rows = None
        if view.needs_domain:  # it reads the true domain: only pairs that carry one
            rows = np.flatnonzero(test.chosen.domain.numpy() >= 0)
            if not len(rows):
                continue
        pairs = test if rows is None else test.subset(torch.as_tensor(rows))
        t0 = time.perf_counter()
        r_c, r_r = score_pairs(arch, view.score, pairs, batch_size)
        block = {"accuracy": split_accuracy(r_c.numpy(), r_r.numpy(), dataset, rows),
                 "timing_s": {"score_per_1k": (time.perf_counter() - t0) / (2 * len(pairs)) * 1000}}
        if view.params is not None:
            block["params"] = dict(view.params)
            if view.active_params is not None:
                block["params"].update(active_per_response(view.active_params, test, batch_size))
        views[name] = block
        if scores is not None and len(pairs) == len(test):
            scores[name] = (r_c.numpy(), r_r.numpy())
    out = {"views": views} if views else {}
    if capability:
        text = CAPABILITY_BASIS[basis.pop()] if len(basis) == 1 else (
            "expert-alone accuracy on the test pairs of the domain: against the true order of its capability point "
            "where the data holds that point (ties left out), else against the human label")
        out["explain"] = {"capability_scores": capability, "capability_scores_basis": text}
    return out


def routing_accuracy(arch, seqs: EncodedSequences, domain_names: list[str], batch_size: int) -> dict | None:
    """How often the architecture's router sends a prompt to its labelled domain (overall, per domain, n), on the
    sequences that carry a domain label; None for an architecture without a router (or no labelled sequence)."""
    router = arch.routing()
    rows = (seqs.domain >= 0).nonzero(as_tuple=True)[0]
    if router is None or not len(rows):
        return None
    labelled = seqs.subset(rows)
    routed = arch.score(labelled, batch_size, router).long()
    correct = (routed == labelled.domain).numpy()
    names = np.asarray(domain_names)[labelled.domain.numpy()]
    return by_domain(correct, np.ones_like(correct), names)


def expert_load(arch, val: EncodedPairs, batch_size: int) -> dict | None:
    """Token routing of an MoE on the validation split (the routing its training watched), when ``explain`` reports
    it (``expert_tokens`` and ``router_prob``, (N, L, E)): per MoE layer the share of routing slots per expert, the
    max/mean imbalance (1 = perfectly even) and the unweighted Switch balance loss (1 = even). None otherwise."""
    if not len(val):
        return None
    probe = arch.explain(val.chosen.subset(torch.arange(1)), batch_size)  # one sequence: which info is there
    if not {"expert_tokens", "router_prob"} <= set(probe):
        return None
    tokens, probs = 0, 0
    for seqs in (val.chosen, val.rejected):
        info = arch.explain(seqs, batch_size)
        slots = info["expert_tokens"].sum(-1, keepdim=True)  # (N, L, 1): real tokens x top-k
        tokens = tokens + info["expert_tokens"].sum(0)  # (L, E)
        probs = probs + (info["router_prob"] * slots).sum(0)  # (L, E)
    load = tokens / tokens.sum(-1, keepdim=True)  # (L, E) f_i
    mean_prob = probs / tokens.sum(-1, keepdim=True)  # (L, E) P_i, each real token weighted once
    E = load.shape[-1]
    names = [f"layer_{i}" for i in probe.get("moe_layers", range(load.shape[0]))]
    return {
        "split": "val",
        "load": {n: [round(x, 4) for x in row.tolist()] for n, row in zip(names, load, strict=True)},
        "imbalance": {n: float(row.max() * E) for n, row in zip(names, load, strict=True)},
        "balance_loss": {n: float(E * (f * p).sum()) for n, f, p in zip(names, load, mean_prob, strict=True)},
    }


def active_per_response(active_params, test: EncodedPairs, batch_size: int) -> dict:
    """SPEC §6's active parameters per scored response, over the test responses (chosen and rejected): ``active``
    their mean (rounded) and ``active_max`` the most any one used. ``active_params(seqs, batch_size)``: (N,)."""
    used = torch.cat([active_params(test.chosen, batch_size), active_params(test.rejected, batch_size)])
    return {"active": round(float(used.mean())), "active_max": int(used.max())}


def member_minimum(arch, test: EncodedPairs, batch_size: int) -> dict | None:
    """For an architecture whose ``explain`` reports the ``members`` it aggregates ((N, k), as aggregated): on the
    test responses (chosen and rejected), the share where each member is the lowest (what worst-case optimization
    takes) and each member's mean. None otherwise."""
    if not len(test) or "members" not in arch.explain(test.chosen.subset(torch.arange(1)), batch_size):
        return None
    members = torch.cat([arch.explain(seqs, batch_size)["members"] for seqs in (test.chosen, test.rejected)]).double()
    lowest = torch.bincount(members.argmin(-1), minlength=members.shape[-1]) / len(members)
    return {"split": "test", "min_share": [round(x, 4) for x in lowest.tolist()],
            "mean": [round(x, 4) for x in members.mean(0).tolist()]}


def evaluate_architecture(arch, val: EncodedPairs, test: EncodedPairs, dataset, domain_names: list[str],
                          batch_size: int, scores: dict | None = None) -> dict:
    """The metrics.json blocks the job adds beside the RM's own accuracy: ``views``, ``explain`` (capability scores),
    ``routing`` (val and test), ``expert_load`` and ``members``, each only when the architecture has it.
    ``scores``: see ``evaluate_views``."""
    out = evaluate_views(arch, test, dataset, batch_size, scores)
    routing = {split: acc for split, seqs in (("val", val.chosen), ("test", test.chosen))
               if (acc := routing_accuracy(arch, seqs, domain_names, batch_size)) is not None}
    if routing:
        out["routing"] = routing
    load = expert_load(arch, val, batch_size)
    if load is not None:
        out["expert_load"] = load
    members = member_minimum(arch, test, batch_size)
    if members is not None:
        out["members"] = members
    return out
