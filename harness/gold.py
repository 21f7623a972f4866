"""The gold reward of a job: config group ``gold``.

- ``gold=synthetic`` (default): the data's own gold reward -- the synthetic world's. The data is used as it is.
- ``gold=rm gold.path=DIR``: any loadable reward model is the gold (an RM exported by a harness job, or a
  transformers sequence-classification folder). This is the set-up of AlpacaFarm and of Coste et al. (2023,
  "Reward Model Ensembles Help Mitigate Overoptimization", §4: a gold RM labels pairs of policy samples with 25%
  label noise; proxies are trained on those labels and over-optimization is read against the gold RM):

  1. responses: for each prompt of the data's train / val / test splits, ``2 * pairs_per_prompt`` samples of the
     job's policy (cached with the policy), or the rows of a ``{prompt, response[, domain]}`` file
     (``gold.responses=FILE``; its prompts are split with ``gold.fractions``);
  2. labels: each pair (a, b) gets gold rewards r_a, r_b; a is chosen with probability
     sigmoid((r_a - r_b) / temperature) (Bradley-Terry sampling; temperature 0: the higher gold reward, a gold
     tie a coin flip), then the label is flipped with probability ``label_noise``. ``gold_chosen`` /
     ``gold_rejected`` keep the gold rewards, so the job's gold accuracy is against the gold RM;
  3. the proxy trains on those labels, and BoN / PPO score their samples with the gold RM.

  Prompts for BoN / PPO are the data's held-out prompts (``eval_prompts``) where it has them, else its test
  prompts. A tiny backbone still pre-trains on the data's own corpus (world text for data=synthetic): for real
  text from a real policy, use a real backbone (``+profile=smollm2``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import datasets
import numpy as np
from hydra.utils import instantiate

from .cache import ArtifactCache, sha256_file
from .device import CPU, Compute, place
from .seeds import Stream, derive_seed

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class SyntheticGold:
    """gold=synthetic: the data's own gold reward; nothing changes."""

    name = "synthetic"

    def apply(self, data, policy_cfg, cache: ArtifactCache, seed: int):
        return data


def label_pairs(r_a: np.ndarray, r_b: np.ndarray, temperature: float, label_noise: float,
                rng: np.random.Generator) -> np.ndarray:
    """True where response a is labelled chosen (module docstring, step 2)."""
    r_a, r_b = np.asarray(r_a, dtype=float), np.asarray(r_b, dtype=float)
    u_order, u_flip = rng.random(len(r_a)), rng.random(len(r_a))  # always both draws: the stream never shifts
    if temperature > 0:
        a_wins = u_order < 1.0 / (1.0 + np.exp(-(r_a - r_b) / temperature))
    else:
        a_wins = np.where(r_a == r_b, u_order < 0.5, r_a > r_b)
    return a_wins ^ (u_flip < label_noise)



class RMGold:
    """gold=rm (module docstring)."""

    name = "rm"
    # Where the gold RM scores and the policy samples (harness/device.py); the job gives it its own.
    compute: Compute = CPU

    def __init__(self, path: str, label_noise: float, temperature: float, pairs_per_prompt: int,
                 responses: str, fractions: dict, prompt_template: str | None = None, max_length: int | None = None,
                 batch_size: int = 64):
        if not 0 <= label_noise <= 0.5:
            raise ValueError(f"gold.label_noise={label_noise} must be in [0, 0.5] (above 0.5 labels mean the opposite)")
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise ValueError(f"gold.temperature={temperature} must be >= 0 (0: the higher gold reward wins)")
        if pairs_per_prompt < 1 or batch_size < 1:
            raise ValueError(f"gold.pairs_per_prompt={pairs_per_prompt} and gold.batch_size={batch_size} must be >= 1")
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise FileNotFoundError(f"gold.path={path}: not a directory (an exported reward model, e.g. "
                                    "<job_dir>/reward_model, or a transformers model folder)")
        if responses != "policy" and not Path(responses).is_file():
            raise FileNotFoundError(f"gold.responses={responses!r}: 'policy' or a .jsonl/.parquet file of "
                                    "{prompt, response} rows")
        self.label_noise, self.temperature = float(label_noise), float(temperature)
        self.pairs_per_prompt, self.responses = int(pairs_per_prompt), responses
        self.fractions = {s: float(fractions[s]) for s in SPLITS}
        self.prompt_template, self.max_length, self.batch_size = prompt_template, max_length, int(batch_size)
        self._identity: dict | None = None

    def identity(self) -> dict:
        """What the gold is (content hashes of its files) and how it labels: part of every cache key downstream.
        Hashed once per instance (a SmolLM2 export is 1 GB; the job asks when it validates and when it relabels)."""
        if self._identity is None:
            self._identity = self._hash_identity()
        return self._identity

    def _hash_identity(self) -> dict:
        files = {p.relative_to(self.path).as_posix(): sha256_file(p) for p in sorted(self.path.rglob("*"))
                 if p.is_file() and p.suffix in (".json", ".safetensors")}
        out = {"gold_files": files, "label_noise": self.label_noise, "temperature": self.temperature,
               "pairs_per_prompt": self.pairs_per_prompt, "prompt_template": self.prompt_template,
               "max_length": self.max_length}
        if self.responses != "policy":
            out["responses_file"] = sha256_file(Path(self.responses))
        return out

    def apply(self, data, policy_cfg, cache: ArtifactCache, seed: int) -> GoldRMData:
        from .export import load_any_reward_model

        scorer = load_any_reward_model(self.path, self.prompt_template, self.max_length, self.batch_size,
                                       compute=self.compute)
        if self.responses == "policy":
            groups, responses_spec = self.policy_groups(data, policy_cfg, cache, seed)
        else:
            groups, responses_spec = self.file_groups(seed)
        rng = np.random.default_rng(derive_seed(seed, Stream.GOLD_LABELS))
        splits, stats = {}, {}
        for split in SPLITS:
            cols = {k: [] for k in ("prompt", "chosen", "rejected", "domain", "gold_chosen", "gold_rejected")}
            pairs = [(p, d, rs[i], rs[i + 1]) for p, d, rs in groups[split] for i in range(0, len(rs) - 1, 2)]
            if not pairs:
                raise ValueError(f"gold=rm: no response pairs for the {split} split")
            prompts = [p for p, _, _, _ in pairs]
            r_a = scorer.score(prompts, [a for _, _, a, _ in pairs]).double().numpy()
            r_b = scorer.score(prompts, [b for _, _, _, b in pairs]).double().numpy()
            a_chosen = label_pairs(r_a, r_b, self.temperature, self.label_noise, rng)
            for (p, d, a, b), ra, rb, first in zip(pairs, r_a, r_b, a_chosen, strict=True):
                cols["prompt"].append(p)
                cols["domain"].append(d)
                cols["chosen"].append(a if first else b)
                cols["rejected"].append(b if first else a)
                cols["gold_chosen"].append(float(ra if first else rb))
                cols["gold_rejected"].append(float(rb if first else ra))
            splits[split] = datasets.Dataset.from_dict(cols)
            decided = r_a != r_b
            stats[split] = {"pairs": len(pairs),
                            "label_gold_agreement": float(np.mean((r_a > r_b)[decided] == a_chosen[decided]))}
        log.info("gold=rm %s: %s", self.path, stats)
        return GoldRMData(data, scorer, splits, {"gold": self.identity(), "responses": responses_spec}, stats)

    def policy_groups(self, data, policy_cfg, cache: ArtifactCache, seed: int) -> tuple[dict, dict]:
        """{split: [(prompt, domain, [2 * pairs_per_prompt policy samples])]} on the data's prompts (cached),
        and what identifies those samples."""
        try:
            policy = instantiate(policy_cfg, _convert_="all")
        except Exception as e:  # noqa: BLE001 - name the group, as job.build does
            raise ValueError(f"policy: {e.__cause__ or e}") from e
        place(self.compute, policy)
        policy.prepare(cache, data, seed)
        prompts = {}
        for split in SPLITS:
            ds = data.splits[split]
            domains = ds["domain"] if "domain" in ds.column_names else [""] * len(ds)
            prompts[split] = list(dict.fromkeys(zip(ds["prompt"], domains, strict=True)))  # first-seen order
        k = 2 * self.pairs_per_prompt
        spec = {"policy": policy.cache_spec(), "data": data.spec(seed), "per_prompt": k, "seed": seed}

        def build(out: Path) -> None:
            flat = [p for split in SPLITS for p, _ in prompts[split] for _ in range(k)]
            texts = policy.sample(flat, seed, Stream.GOLD_SAMPLES)
            (out / "responses.json").write_text(json.dumps(texts), encoding="utf-8")

        entry = cache.directory("gold_rm_responses", spec, build)
        texts = json.loads((entry / "responses.json").read_text(encoding="utf-8"))
        groups, start = {}, 0
        for split in SPLITS:
            groups[split] = []
            for p, d in prompts[split]:
                groups[split].append((p, d, texts[start : start + k]))
                start += k
        return groups, spec

    def file_groups(self, seed: int) -> tuple[dict, dict]:
        """{split: [(prompt, domain, responses)]} from a {prompt, response[, domain]} file, prompts split by
        ``fractions`` with the seed, and what identifies them."""
        from .data.readers import DataFormatError, read_rows

        by_prompt: dict[str, tuple[str, list[str]]] = {}
        for where, row in read_rows(Path(self.responses)):
            for key in ("prompt", "response"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise DataFormatError(where, f"{key} must be a non-empty string (keys: {sorted(row)})")
            domain = row.get("domain") or ""
            if not isinstance(domain, str):
                raise DataFormatError(where, f"domain must be a string, got {domain!r:.40}")
            by_prompt.setdefault(row["prompt"], (domain, []))[1].append(row["response"])
        spec = {"file": sha256_file(Path(self.responses)), "fractions": self.fractions, "seed": seed}
        order = np.random.default_rng(derive_seed(seed, Stream.GOLD_FILE_SPLIT)).permutation(len(by_prompt))
        items = list(by_prompt.items())
        total = sum(self.fractions.values())
        n_train = round(self.fractions["train"] / total * len(items))
        n_val = round(self.fractions["val"] / total * len(items))
        cut = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
        return {split: [(items[i][0], items[i][1][0], items[i][1][1]) for i in idx] for split, idx in cut.items()}, spec


class GoldRMData:
    """The data a job sees under gold=rm: pairs labelled by the gold RM, and the gold RM as ``gold``; the
    underlying data still gives the world (if any), the pre-training corpus and the held-out prompts."""

    def __init__(self, base, scorer, splits: dict, gold_spec: dict, stats: dict):
        self.base, self.scorer, self.splits = base, scorer, splits
        self.name = f"{base.name}+gold_rm"
        self.world = getattr(base, "world", None)
        self._gold_spec, self.stats = gold_spec, stats

    @property
    def domains(self) -> list[str]:
        return self.base.domains

    def spec(self, seed: int) -> dict:
        return {"data": self.base.spec(seed), **self._gold_spec}

    def world_spec(self, seed: int) -> dict:
        # The corpus is the base data's, so what was built on it (tiny backbone, tiny policy's SFT) is shared.
        return self.base.world_spec(seed)

    def corpus(self, n: int, seed: int = 0):
        return self.base.corpus(n, seed)

    def eval_prompts(self, n: int, seed: int) -> list[tuple[str, str]]:
        if hasattr(self.base, "eval_prompts"):
            return self.base.eval_prompts(n, seed)
        test = list(dict.fromkeys(zip(self.splits["test"]["prompt"], self.splits["test"]["domain"], strict=True)))
        return [test[i % len(test)] for i in range(n)]

    def gold(self, prompt: str, response: str, domain: str) -> float:
        return float(self.gold_batch([prompt], [response], [domain])[0])

    def gold_batch(self, prompts: list[str], responses: list[str], domains: list[str]) -> np.ndarray:
        """Gold rewards of many (prompt, response) at once: one batched pass of the gold RM."""
        return self.scorer.score(list(prompts), list(responses)).double().numpy()
