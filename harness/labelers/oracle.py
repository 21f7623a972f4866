"""oracle: the synthetic world's capability judges (noisy per point, position-biased), asked twice with the
responses swapped; a label is kept only when both answers agree (DMoERM's rule)."""

from __future__ import annotations

import numpy as np


class OracleLabeler:
    name = "oracle"

    def __init__(self, seed_offset: int = 0):
        self.seed_offset = seed_offset

    def label(self, world, dataset, seed: int) -> dict:
        """Capability labels for every pair and point: +1 chosen better, -1 rejected better, 0 dropped.

        Returns {"labels": list[list[int]] aligned with dataset["cap_names"], "stats": {...}}.
        """
        rng = np.random.default_rng([seed, 40, self.seed_offset])
        labels, asked, kept, agree_true = [], 0, 0, 0
        for names, vc, vr in zip(dataset["cap_names"], dataset["cap_chosen"], dataset["cap_rejected"],
                                 strict=True):
            row = []
            for name, a, b in zip(names, vc, vr, strict=True):
                first = world.judge(a, b, name, rng)  # chosen shown first
                second = world.judge(b, a, name, rng)  # swapped: rejected shown first
                asked += 1
                if first == -second and a != b:
                    kept += 1
                    agree_true += int((first > 0) == (a > b))
                    row.append(first)
                else:
                    row.append(0)
            labels.append(row)
        return {"labels": labels, "stats": {"asked": asked, "kept": kept, "kept_fraction": kept / max(1, asked),
                                            "agreement_with_truth": agree_true / max(1, kept)}}
