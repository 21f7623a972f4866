"""oracle: the synthetic world's capability judges — the stand-in for the paper's LLM API.

A judge reads a point's true values noisily, once per pair (Bradley-Terry, calibrated to agree with the true
order ``data.world.judge_agreement`` of the time, per point if configured), and each answer is sometimes "the
first one" whatever it read (position bias); see ``World.judge_pair``. Like an LLM it is not told when two
responses tie on a point: it answers anyway, and swap-and-agree filters what it can. The values are measured
from the texts by the world, so the oracle labels any (prompt, response) pair of the world's domains, not only
pre-computed ones.
"""

from __future__ import annotations

import numpy as np

from ..seeds import Stream, derive_seed
from . import columns, summarize, swap_and_agree


class OracleLabeler:
    name = "oracle"

    def __init__(self, seed_offset: int = 0):
        self.seed_offset = seed_offset

    def label(self, pairs, seed: int, world=None) -> dict:
        if world is None:
            raise ValueError("arch/labeler=oracle needs the synthetic world (data=synthetic); for other data use "
                             "arch/labeler=openai or arch/labeler=local")
        cols = columns(pairs)
        rng = np.random.default_rng(derive_seed(seed, Stream.ORACLE_LABELS, self.seed_offset))
        labels, first_answers = [], 0
        for prompt, chosen, rejected, domain, points in zip(
            cols["prompt"], cols["chosen"], cols["rejected"], cols["domain"], cols["cap_names"], strict=True
        ):
            value_c = world.capabilities(prompt, chosen, domain)
            value_r = world.capabilities(prompt, rejected, domain)
            unknown = [p for p in points if p not in value_c]
            if unknown:
                raise ValueError(f"arch/labeler=oracle: domain {domain!r} has no capability points {unknown} "
                                 f"(it has {list(value_c)})")
            row = []
            for point in points:
                # One judge reads the pair once and is asked twice: chosen shown first, then swapped.
                first, second = world.judge_pair(value_c[point], value_r[point], point, rng)
                first_answers += (first == 1) + (second == 1)
                row.append(swap_and_agree(first, second))
            labels.append(row)
        stats = summarize(labels, cols)
        stats["answered_first"] = first_answers / max(1, 2 * stats["asked"])  # position-bias diagnostic
        return {"labels": labels, "stats": stats}
