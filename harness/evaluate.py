"""Accuracy against gold and against the (noisy) human labels, overall and per domain; ties count as wrong."""

from __future__ import annotations

import numpy as np


def preference_accuracy(r_chosen, r_rejected, domains, gold_chosen=None, gold_rejected=None) -> dict:
    """``chosen`` is what the (simulated or real) human preferred, so human accuracy is P(r_c > r_r).

    Gold accuracy asks whether the model orders the pair as the gold reward does; pairs the gold ties are
    left out (no right answer). Micro-averages per domain and overall.
    """
    r_c, r_r = np.asarray(r_chosen, dtype=np.float64), np.asarray(r_rejected, dtype=np.float64)
    domains = np.asarray(domains)
    human_correct = r_c > r_r  # a tie is not "greater": counted wrong
    out = {"human": _by_domain(human_correct, domains)}
    if gold_chosen is not None:
        g_c, g_r = np.asarray(gold_chosen), np.asarray(gold_rejected)
        decided = g_c != g_r
        model_says_chosen = r_c > r_r
        model_says_rejected = r_r > r_c
        gold_correct = np.where(g_c > g_r, model_says_chosen, model_says_rejected)
        out["gold"] = _by_domain(gold_correct[decided], domains[decided])
        out["human_gold_agreement"] = float(np.mean((g_c > g_r)[decided]))
    return out


def _by_domain(correct: np.ndarray, domains: np.ndarray) -> dict:
    per = {str(d): float(correct[domains == d].mean()) for d in sorted(set(domains.tolist())) if d != ""}
    return {"overall": float(correct.mean()) if len(correct) else float("nan"), "per_domain": per,
            "n": int(len(correct))}
