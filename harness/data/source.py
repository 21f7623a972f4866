"""What real preference data sources share (data=jsonl, data=hf): rows -> pairs (harness/data/formats/) ->
train/val/test splits by prompt, cached by the source's content + the options; the interface of
harness/data/synthetic.py without the world.

Real data has no gold reward, so ``world`` is None: accuracy is against the data's own labels, and BoN / PPO
studies need data=synthetic.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import datasets
import numpy as np

from ..cache import ArtifactCache
from ..seeds import Stream, derive_seed
from .formats import convert
from .options import FormatOptions
from .readers import DataFormatError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Bump when the meaning of a converted row changes, so cached splits of the old conversion stop matching.
LOADER_VERSION = 2


# ------------------------------------------------------------------------------------------ splitting
def check_fractions(fractions) -> dict[str, float]:
    if not isinstance(fractions, dict) or set(fractions) != set(SPLITS):
        raise ValueError(f"data.fractions={fractions!r} must give train, val and test, e.g. "
                         "{train: 0.8, val: 0.1, test: 0.1}")
    for name, v in fractions.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise ValueError(f"data.fractions.{name}={v!r} must be a number > 0")
    return {s: float(fractions[s]) for s in SPLITS}


def split_by_prompt(cols: dict, fractions: dict[str, float], seed: int, source: str) -> dict[str, dict]:
    """Cut one source into the named parts by prompt -- every pair of a prompt lands in one part, so no test prompt
    is trained on -- in a seeded random order. Part sizes are fractions of the distinct prompts; every part but the
    first gets at least one prompt, the first (train) the rest. Pairs keep their file order within a part."""
    prompts = list(dict.fromkeys(cols["prompt"]))
    order = np.random.default_rng(derive_seed(seed, Stream.PROMPT_SPLIT)).permutation(len(prompts))
    names, total = list(fractions), sum(fractions.values())
    counts = {n: max(1, round(fractions[n] / total * len(prompts))) for n in names[1:]}
    counts = {names[0]: len(prompts) - sum(counts.values()), **counts}
    if counts[names[0]] < 1:
        raise DataFormatError(source, f"{len(prompts)} distinct prompts are too few to split into {names} "
                                      f"(fractions {fractions}); give more data or one file per split")
    part_of, start = {}, 0
    for name in names:
        for i in order[start : start + counts[name]]:
            part_of[prompts[i]] = name
        start += counts[name]
    out = {}
    for name in names:
        keep = [i for i, p in enumerate(cols["prompt"]) if part_of[p] == name]
        out[name] = {k: [v[i] for i in keep] for k, v in cols.items()}
    return out


def assemble_splits(sources: dict[str, dict], fractions: dict[str, float], seed: int, source: str) -> dict:
    """train/val/test from the given sources; a split without its own source is carved out of train."""
    missing = [s for s in SPLITS if s not in sources]
    splits = dict(sources)
    if missing:
        parts = {"train": fractions["train"], **{s: fractions[s] for s in missing}}
        splits.update(split_by_prompt(sources["train"], parts, seed, source))
    return {s: splits[s] for s in SPLITS}


# ------------------------------------------------------------------------------------------ the source
class PreferenceData:
    """A real preference data source. Subclasses (the Hydra targets) say where rows come from (``sources``) and
    what identifies their content (``identity``)."""

    name = "real"
    world = None  # no gold reward: accuracy is against the data's own labels; BoN / PPO need data=synthetic

    def __init__(self, options: FormatOptions, fractions: dict):
        self.options = options
        self.fractions = check_fractions(fractions)
        self.splits: dict[str, datasets.Dataset] = {}
        self.meta: dict = {}

    # -- what subclasses provide
    def identity(self) -> dict:
        """What the source's content is (content hashes), for cache keys."""
        raise NotImplementedError

    def sources(self) -> dict[str, tuple[str, Iterable[tuple[str, dict]]]]:
        """{split: (source name, (where, row) pairs)} for train and any of val / test the source has."""
        raise NotImplementedError

    # -- the data-source interface
    @property
    def domains(self) -> list[str]:
        return list(self.meta["domains"])

    def spec(self, seed: int) -> dict:
        return {"source": self.identity(), "options": self.options.describe(), "fractions": self.fractions,
                "loader": LOADER_VERSION, "seed": seed}

    def world_spec(self, seed: int) -> dict:
        # The tiny backbone pre-trains on this data's training text, so the whole spec determines it.
        return self.spec(seed)

    def prepare(self, cache: ArtifactCache, seed: int) -> PreferenceData:
        def build(out: Path) -> None:
            sources = self.sources()
            converted, dropped, fmt = {}, {}, self.options.format
            for split in (s for s in SPLITS if s in sources):
                # The train source's format (given or detected) is every source's: splits must agree.
                source, rows = sources[split]
                fmt, converted[split], dropped[split] = convert(rows, source, self.options, fmt)
            splits = assemble_splits(converted, self.fractions, seed, sources["train"][0])
            domains = sorted({d for d in splits["train"]["domain"] if d})
            for split, cols in splits.items():
                datasets.Dataset.from_dict(cols).save_to_disk(str(out / split))
            meta = {"format": fmt, "domains": domains, "pairs": {s: len(c["prompt"]) for s, c in splits.items()},
                    "prompts": {s: len(set(c["prompt"])) for s, c in splits.items()},
                    "dropped_identical": sum(dropped.values())}
            (out / "meta.json").write_text(json.dumps(meta))

        path = cache.directory(f"{self.name}_data", self.spec(seed), build)
        self.meta = json.loads((path / "meta.json").read_text())
        self.splits = {s: datasets.load_from_disk(str(path / s)) for s in SPLITS}
        log.info("data=%s: format %s, pairs %s, domains %s", self.name, self.meta["format"], self.meta["pairs"],
                 self.meta["domains"])
        if self.meta["dropped_identical"]:
            log.warning("data=%s: %d pairs with the same chosen and rejected text were dropped "
                        "(data.drop_identical=true)", self.name, self.meta["dropped_identical"])
        return self

    def corpus(self, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
        """``n`` (prompt, response) texts of the training split, for pre-training the tiny backbone: distinct
        (prompt, response) pairs drawn with the seed (with replacement when there are fewer than ``n``)."""
        train = self.splits["train"]
        prompts = list(train["prompt"])
        responses = list(train["chosen"]) + list(train["rejected"])
        texts = list(dict.fromkeys(zip(prompts + prompts, responses, strict=True)))
        idx = np.random.default_rng(derive_seed(seed, Stream.CORPUS)).choice(len(texts), size=n, replace=n > len(texts))
        return [texts[i][0] for i in idx], [texts[i][1] for i in idx]
