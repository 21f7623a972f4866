"""Length bias of a fitted reward model and of each of its views (issue 27): how much of what it rewards is length.

Two measures, each beside gold's own, for every architecture with the one scoring path (``RewardModel.score``):

- ``sample_length_bias``: the within-prompt Pearson correlation of reward with response length on the initial
  policy's samples (Best-of-N's N samples per prompt, the n=1 distribution that selection acts on), averaged over
  prompts; gold's correlation on the same samples beside it. metrics.json ``bon.length_corr``.
- ``style_controlled``: RM-Bench's question (the same substance in two styles; Liu et al. 2024) asked of
  verbosity on the synthetic world: pairs of one response and the same response padded with content-free filler
  (``harness.world.world.verbosity_pairs``), read against gold with the one rule (``evaluate.pair_correct``:
  a model tie is wrong, a gold tie is left out). Gold prefers the unpadded response of every pair (the pairs are
  built so), so the accuracy is the share of pairs on which the RM does not reward the padding; a reward that is
  length scores 0, gold 1. metrics.json ``length_bias.style``.

Length is counted in words (``harness.world.capabilities.response_length``): the world's unit (gold's length
points, the raters' preference), the same whatever the backbone's tokenizer.
"""

from __future__ import annotations

import time

import numpy as np

from .accuracy import by_domain, pair_correct
from .data.schema import encode_sequences
from .gold import gold_scores
from .seeds import Stream, derive_seed
from .world.capabilities import response_length
from .world.world import World, verbosity_pairs


def within_prompt_corr(values, lengths) -> float:
    """Mean over prompts (rows of (P, N) arrays) of the Pearson correlation of ``values`` with ``lengths`` across a
    prompt's N samples; prompts on which either is constant have none and are left out (NaN when all are)."""
    values, lengths = np.asarray(values, dtype=np.float64), np.asarray(lengths, dtype=np.float64)
    corrs = [np.corrcoef(v, n)[0, 1] for v, n in zip(values, lengths, strict=True) if v.std() > 0 and n.std() > 0]
    return float(np.mean(corrs)) if corrs else float("nan")


def reward_views(arch) -> dict:
    """The views of ``arch`` that are rewards (every view but single capability points' experts), by name."""
    return {name: view for name, view in arch.views().items() if view.capability is None}


def score_views(arch, seqs, batch_size: int) -> dict[str, np.ndarray]:
    """Each reward view's scores of ``seqs``; a view that reads the true domain only where every row has one."""
    labelled = bool((seqs.domain >= 0).all())
    return {name: arch.score(seqs, batch_size, view.score).numpy().astype(np.float64)
            for name, view in reward_views(arch).items() if labelled or not view.needs_domain}


def sample_length_bias(arch, backbone, data, texts: tuple[list, list, list], proxy: np.ndarray, gold: np.ndarray,
                       batch_size: int) -> dict:
    """``bon.length_corr`` on the initial policy's samples: ``texts`` (prompts, responses, domains, prompt-major
    flat lists) and the RM's ``proxy`` and ``gold`` rewards of them, (P, N). ``reward``: the reward Best-of-N
    optimised; ``gold``; ``views.<name>``: each reward view, scored here; ``mean_words``: the samples' mean length."""
    t0 = time.perf_counter()
    prompts, responses, domains = texts
    shape = np.asarray(proxy).shape
    lengths = np.array([response_length(r) for r in responses], dtype=np.float64).reshape(shape)
    seqs = encode_sequences(backbone.tokenizer, backbone.join, prompts, responses, domains,
                            {d: i for i, d in enumerate(data.domains)}, backbone.max_length)
    views = {name: within_prompt_corr(scores.reshape(shape), lengths)
             for name, scores in score_views(arch, seqs, batch_size).items()}
    out = {"reward": within_prompt_corr(proxy, lengths), "gold": within_prompt_corr(gold, lengths),
           "mean_words": float(lengths.mean())}
    if views:
        out["views"] = views
    out["seconds"] = time.perf_counter() - t0
    return out


def style_accuracy(r_concise, r_verbose, gold_concise, gold_verbose, domains) -> dict:
    """The one rule on style pairs: the reward orders (concise, verbose) as gold does; gold ties left out."""
    return by_domain(*pair_correct(np.asarray(r_concise, dtype=np.float64), np.asarray(r_verbose, dtype=np.float64),
                                   np.asarray(gold_concise, dtype=np.float64),
                                   np.asarray(gold_verbose, dtype=np.float64)), np.asarray(domains))


def style_controlled(arch, backbone, data, seed: int, n_pairs: int, batch_size: int) -> dict | None:
    """``length_bias.style``: the RM's and each reward view's style-controlled accuracy on ``n_pairs`` verbosity
    pairs of the data's world (fresh prompts, their own seed stream), against the data's gold (the world's; a gold
    RM's under gold=rm); ``words``: the pairs' mean lengths. None when the data has no synthetic world (gold=verifier's
    data answers the oracle's questions as a ``world`` but has no verbosity to pad)."""
    world = getattr(data, "world", None)
    if not isinstance(world, World) or n_pairs < 1:
        return None
    t0 = time.perf_counter()
    pairs = verbosity_pairs(world, n_pairs, np.random.default_rng(derive_seed(seed, Stream.STYLE_PAIRS)))
    if not pairs["prompt"]:
        return None
    index = {d: i for i, d in enumerate(data.domains)}
    gold = {side: gold_scores(data, pairs["prompt"], pairs[side], pairs["domain"]) for side in ("concise", "verbose")}
    scores = {}
    for side in ("concise", "verbose"):
        seqs = encode_sequences(backbone.tokenizer, backbone.join, pairs["prompt"], pairs[side], pairs["domain"],
                                index, backbone.max_length)
        scores[side] = {"reward": arch.score(seqs, batch_size).numpy(), **score_views(arch, seqs, batch_size)}

    def accuracy(name: str) -> dict:
        return style_accuracy(scores["concise"][name], scores["verbose"][name], gold["concise"], gold["verbose"],
                              pairs["domain"])

    words = {side: float(np.mean([response_length(r) for r in pairs[side]])) for side in ("concise", "verbose")}
    out = {"accuracy": accuracy("reward"), "n_pairs": len(pairs["prompt"]), "words": words,
           "gold_prefers_concise": float(np.mean(gold["concise"] > gold["verbose"]))}
    views = {name: accuracy(name) for name in scores["concise"] if name != "reward"}
    if views:
        out["views"] = views
    out["seconds"] = time.perf_counter() - t0
    return out


def length_bias_blocks(arch, backbone, data, seed: int, batch_size: int) -> dict:
    """The metrics.json block the job's evaluation adds: ``length_bias.style`` on as many verbosity pairs as the
    test split has pairs (none without a world). ``bon.length_corr`` comes with Best-of-N (optimize/study.py)."""
    style = style_controlled(arch, backbone, data, seed, len(data.splits["test"]), batch_size)
    return {"length_bias": {"style": style}} if style is not None else {}
