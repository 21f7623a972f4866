"""The one evaluation rule of the project (SPEC §7), on numpy arrays or torch tensors, without importing torch (so
that statistics over written scores start without it).

A pair is ranked right when the model's rewards order it strictly as the reference does, so a tie of the model is
wrong. The reference is either the pair's label (chosen is what the simulated or real human preferred: "human"
accuracy) or a number per side (the gold reward, a capability point's true value); pairs the reference ties have no
right answer and are left out. Every accuracy of the project is ``pair_correct`` averaged: the job's, each view's,
the capability scores, the training loop's validation accuracy, the statistics' resampled pairs, RewardBench's.
"""

from __future__ import annotations

import numpy as np


def pair_correct(r_chosen, r_rejected, ref_chosen=None, ref_rejected=None):
    """Per pair: (correct, decided). ``correct``: the model orders the pair strictly as the reference does;
    ``decided``: the reference orders the pair at all (without a reference the label decides every pair).
    Works on numpy arrays and torch tensors alike (comparisons and boolean algebra only)."""
    if ref_chosen is None:
        correct = r_chosen > r_rejected
        return correct, correct | ~correct  # all True, as an array or a tensor like ``correct``
    correct = (((ref_chosen > ref_rejected) & (r_chosen > r_rejected))
               | ((ref_chosen < ref_rejected) & (r_rejected > r_chosen)))
    return correct, ref_chosen != ref_rejected


def by_domain(correct: np.ndarray, decided: np.ndarray, domains: np.ndarray) -> dict:
    """Micro-averages of the decided pairs, overall and per domain ("" = no domain label, in overall only)."""
    correct, domains = correct[decided], domains[decided]
    per = {str(d): float(correct[domains == d].mean()) for d in sorted(set(domains.tolist())) if d != ""}
    return {"overall": float(correct.mean()) if len(correct) else float("nan"), "per_domain": per,
            "n": int(len(correct))}


def preference_accuracy(r_chosen, r_rejected, domains, gold_chosen=None, gold_rejected=None) -> dict:
    """``human``: against the label (chosen is better); ``gold``: against the gold reward where the data has one;
    ``human_gold_agreement``: the label's own agreement with gold (a "model" that always prefers chosen)."""
    r_c, r_r = np.asarray(r_chosen, dtype=np.float64), np.asarray(r_rejected, dtype=np.float64)
    domains = np.asarray(domains)
    out = {"human": by_domain(*pair_correct(r_c, r_r), domains)}
    if gold_chosen is not None:
        g_c, g_r = np.asarray(gold_chosen, dtype=np.float64), np.asarray(gold_rejected, dtype=np.float64)
        out["gold"] = by_domain(*pair_correct(r_c, r_r, g_c, g_r), domains)
        label_correct, decided = pair_correct(np.ones_like(g_c), np.zeros_like(g_c), g_c, g_r)
        out["human_gold_agreement"] = float(np.mean(label_correct[decided]))
    return out
