"""The synthetic world's preference data, materialised as ``datasets.Dataset`` splits cached by config hash."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np

from ..cache import ArtifactCache
from ..seeds import Stream, derive_seed
from ..world import World, WorldConfig, preference_pairs, text_corpus
from ..world.world import TEXT_VERSION, WORLD_VERSION


class SyntheticData:
    """Train/val/test preference pairs on disjoint fresh prompts of one seeded world."""

    name = "synthetic"

    def __init__(self, n_train: int, n_val: int, n_test: int, world: dict):
        for key, v in dict(n_train=n_train, n_val=n_val, n_test=n_test).items():
            if v <= 0:
                raise ValueError(f"data.{key}={v} must be > 0")
        try:
            self.world_config = WorldConfig(**world)
        except TypeError as e:
            raise ValueError(f"data.world: {e}") from e
        self.world_config.validate()
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.world: World | None = None
        self.splits: dict[str, datasets.Dataset] = {}
        # The longest world-text corpus drawn so far, per seed: the backbone and the policy both ask for one.
        self._corpus: dict[int, tuple[list[str], list[str]]] = {}

    @property
    def domains(self) -> list[str]:
        return list(self.world_config.domains)

    def spec(self, seed: int) -> dict:
        return {**self.world_spec(seed), "labels": self.spec_of_labels(), "world_version": WORLD_VERSION,
                "sizes": self.sizes}

    def world_spec(self, seed: int) -> dict:
        """What determines the world's text (not the split sizes, not gold or the labels): keys artifacts trained
        on world text (backbone pre-training, policy SFT, BoN samples)."""
        return {"world": self.world_config.text_spec(), "text_version": TEXT_VERSION, "seed": seed}

    def spec_of_labels(self) -> dict:
        """The rest of the world's config (annotators, gold's unnamed part): with world_spec, keys the data."""
        return {k: v for k, v in vars(self.world_config).items() if k not in self.world_config.text_spec()}

    def prepare(self, cache: ArtifactCache, seed: int) -> SyntheticData:
        def build(out: Path) -> None:
            world = World(self.world_config, seed)
            (out / "world.json").write_text(json.dumps(world.describe()))
            for i, (split, n) in enumerate(self.sizes.items()):
                cols = preference_pairs(world, n, np.random.default_rng(derive_seed(seed, Stream.PAIRS, i)))
                datasets.Dataset.from_dict(cols).save_to_disk(str(out / split))

        path = cache.directory("world_data", self.spec(seed), build)
        described = json.loads((path / "world.json").read_text())
        self.world = World(self.world_config, seed, described["calibration"])
        self.splits = {s: datasets.load_from_disk(str(path / s)) for s in self.sizes}
        self._corpus = {}
        return self

    def corpus(self, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
        """World text (prompts and generator responses) for pre-training / SFT; disjoint seed stream.

        The stream is drawn one sequence after another, so a shorter corpus is the start of a longer one: it is
        drawn once per job (the backbone's and the policy's are the same text) and sliced."""
        if len(self._corpus.get(seed, ((),))[0]) < n:
            self._corpus[seed] = text_corpus(self.world, n, np.random.default_rng(derive_seed(seed, Stream.CORPUS)))
        prompts, responses = self._corpus[seed]
        return prompts[:n], responses[:n]

    def eval_prompts(self, n: int, seed: int) -> list[tuple[str, str]]:
        """Held-out prompts, balanced over domains, for BoN / PPO evaluation."""
        rng = np.random.default_rng(derive_seed(seed, Stream.EVAL_PROMPTS))
        return [self.world.sample_prompt(rng, self.domains[i % len(self.domains)]) for i in range(n)]

    def gold(self, prompt: str, response: str, domain: str) -> float:
        return self.world.gold(prompt, response, domain)
