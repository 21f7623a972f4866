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
- ``gold=verifier``: tasks with a verifiable answer (harness/verifiable/tasks.py, after PPE, lmarena 2024) replace
  the data. The harness draws the task prompts (seeded, per family = domain), the job's policy answers each
  train / val / test prompt ``samples_per_prompt`` times (cached once, like BoN's samples), and the verifier's
  verdicts become preference pairs (``verifier_pairs``): one right and one wrong response of a prompt, and with
  ``format_pairs`` two equally right (or wrong) ones of which one is the bare answer the instruction asks for.
  Their labels carry what real labels carry: a ``length_share`` of them is decided by length (the longer response
  chosen, a human-like verbosity preference), the rest by the verifier and then flipped with ``label_noise``.
  Gold is the verifier exactly: ``gold_chosen`` / ``gold_rejected`` are the responses' correctness (0 / 1), so
  gold accuracy is read on the pairs whose correctness differs; BoN samples the held-out ``eval`` prompts and
  reads the pass rate of the proxy's pick (``gold_scale_kind``: the pass rate less the initial policy's, unscaled).
  The capability points correctness / format / length (``cap_*`` columns) are what arch/labeler=oracle reads
  exactly (``VerifierData.judge_pair``); the other labelers judge the texts themselves.
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
from .errors import UserError
from .seeds import Stream, derive_seed
from .verifiable.tasks import TASK_SPLITS, TASKS_VERSION, Family, Task, draw_tasks

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

        flat = [p for split in SPLITS for p, _ in prompts[split] for _ in range(k)]
        texts = cached_samples(cache, "gold_rm_responses", spec, policy, flat, seed, Stream.GOLD_SAMPLES)
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


# --------------------------------------------------------------------------------------------- gold=verifier
# Bump when the verifier's rules (harness/verifiable/tasks.py extraction) or the pair building change meaning: a
# finished job's metrics then no longer count as this job's (resume), though the cached samples stay valid.
VERIFIER_VERSION = 1
# The capability points of every task family, in the order of the cap_* columns.
VERIFIER_POINTS = ("correctness", "format", "length")


def verifier_pairs(tasks: list[Task], responses: list[list[str]], verdicts: list[list], pairs_per_prompt: int,
                   format_pairs: bool, label_noise: float, length_share: float,
                   rng: np.random.Generator) -> tuple[dict, dict]:
    """Preference pairs of one split from the verifier's verdicts of each task's responses (module docstring).

    Per task its responses are shuffled; right ones are paired with wrong ones, then (``format_pairs``) the rest,
    within equal correctness, bare answers with the others, up to ``pairs_per_prompt`` pairs, each response used
    once. Each pair's first response is chosen with probability: ``length_share`` -> the longer one (characters;
    a tie a coin flip); otherwise the verifier's better one (correctness, then format: ``label_pairs`` at
    temperature 0), flipped with ``label_noise``. Returns (the split's columns, its statistics)."""
    pairs = []  # (task, a, b, verdict a, verdict b, decided by format)
    for task, texts, marks in zip(tasks, responses, verdicts, strict=True):
        order = rng.permutation(len(texts))  # always drawn: the stream does not shift with the verdicts
        right = [i for i in order if marks[i].correct]
        wrong = [i for i in order if not marks[i].correct]
        chosen = [(a, b, False) for a, b in zip(right, wrong, strict=False)]
        if format_pairs:
            used = len(chosen)
            for group in (right[used:], wrong[used:]):
                bare = [i for i in group if marks[i].formatted]
                other = [i for i in group if not marks[i].formatted]
                chosen += [(a, b, True) for a, b in zip(bare, other, strict=False)]
        for a, b, by_format in chosen[:pairs_per_prompt]:
            pairs.append((task, texts[a], texts[b], marks[a], marks[b], by_format))
    n = len(pairs)
    score_a = np.array([2 * p[3].correct + p[3].formatted for p in pairs], dtype=float)
    score_b = np.array([2 * p[4].correct + p[4].formatted for p in pairs], dtype=float)
    by_verifier = label_pairs(score_a, score_b, 0.0, label_noise, rng)
    u_length, u_tie = rng.random(n), rng.random(n)  # both always drawn, as label_pairs does
    len_a = np.array([len(p[1]) for p in pairs])
    len_b = np.array([len(p[2]) for p in pairs])
    longer_a = np.where(len_a == len_b, u_tie < 0.5, len_a > len_b)
    by_length = u_length < length_share
    a_chosen = np.where(by_length, longer_a, by_verifier)
    cols: dict[str, list] = {k: [] for k in ("prompt", "chosen", "rejected", "domain", "gold_chosen", "gold_rejected",
                                             "cap_names", "cap_chosen", "cap_rejected")}
    for (task, a, b, va, vb, _), first in zip(pairs, a_chosen, strict=True):
        (c, vc), (r, vr) = ((a, va), (b, vb)) if first else ((b, vb), (a, va))
        cols["prompt"].append(task.prompt)
        cols["domain"].append(task.family)
        cols["chosen"].append(c)
        cols["rejected"].append(r)
        cols["gold_chosen"].append(float(vc.correct))
        cols["gold_rejected"].append(float(vr.correct))
        cols["cap_names"].append(list(VERIFIER_POINTS))
        cols["cap_chosen"].append([float(vc.correct), float(vc.formatted), float(len(c))])
        cols["cap_rejected"].append([float(vr.correct), float(vr.formatted), float(len(r))])
    better_a = score_a > score_b  # every pair is decided by the verifier (correctness or format)
    stats = {"prompts": len(tasks), "pairs": n, "format_pairs": int(sum(p[5] for p in pairs)),
             "prompts_with_pairs": len({p[0].prompt for p in pairs}),
             "pass_rate": float(np.mean([v.correct for marks in verdicts for v in marks])) if tasks else float("nan"),
             "format_rate": float(np.mean([v.formatted for marks in verdicts for v in marks])) if tasks
             else float("nan"),
             "length_decided": float(by_length.mean()) if n else float("nan"),
             "label_verifier_agreement": float(np.mean(a_chosen == better_a)) if n else float("nan")}
    return cols, stats


class VerifierGold:
    """gold=verifier (module docstring): task prompts, the policy's answers, pairs labelled by the verifier."""

    name = "verifier"
    # The task set is the job's data: the data group is not prepared (harness/job.py prepare_data).
    replaces_data = True
    # Where the policy samples (harness/device.py); the job gives it its own.
    compute: Compute = CPU

    def __init__(self, families: dict, prompts: dict, samples_per_prompt: int, pairs_per_prompt: int,
                 format_pairs: bool, label_noise: float, length_share: float, seed: int | None = None):
        if not families or not all(isinstance(f, Family) for f in families.values()):
            raise ValueError(f"gold.families={families!r} must map names to task families (harness.verifiable.tasks "
                             "classes, each with a _target_)")
        if set(prompts) != set(TASK_SPLITS) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                                                   for v in prompts.values()):
            raise ValueError(f"gold.prompts={prompts!r} must give an integer >= 0 for each of {list(TASK_SPLITS)}")
        for split in ("train", "val", "test"):
            if prompts[split] < 1:
                raise ValueError(f"gold.prompts.{split}={prompts[split]} must be >= 1")
        if samples_per_prompt < 2 or pairs_per_prompt < 1:
            raise ValueError(f"gold.samples_per_prompt={samples_per_prompt} must be >= 2 and gold.pairs_per_prompt="
                             f"{pairs_per_prompt} >= 1")
        if not 0 <= label_noise <= 0.5:
            raise ValueError(f"gold.label_noise={label_noise} must be in [0, 0.5] (above 0.5 labels mean the opposite)")
        if not 0 <= length_share <= 1:
            raise ValueError(f"gold.length_share={length_share} must be in [0, 1]")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"gold.seed={seed!r} must be an integer >= 0 or null (the job seed)")
        self.families, self.prompts = dict(families), {s: int(prompts[s]) for s in TASK_SPLITS}
        self.samples_per_prompt, self.pairs_per_prompt = int(samples_per_prompt), int(pairs_per_prompt)
        self.format_pairs, self.label_noise, self.length_share = bool(format_pairs), float(label_noise), \
            float(length_share)
        self.seed = seed

    def check_studies(self, studies: dict) -> None:
        """Before anything is sampled or trained: the held-out prompts the studies ask for (BoN's, PPO's eval and
        training prompts) fit in the eval split (``gold.prompts.eval`` per family), and every family's knobs give
        as many distinct questions as ``gold.prompts`` asks for (a dry draw of the task set: milliseconds)."""
        draw_tasks(self.families, self.prompts, 0 if self.seed is None else self.seed)
        held_out = self.prompts["eval"] * len(self.families)
        asked = {"opt.bon.n_prompts": (studies.get("bon") or {}).get("n_prompts", 0),
                 "opt.ppo.eval_prompts + train_prompts": sum((studies.get("ppo") or {}).get(k, 0)
                                                             for k in ("eval_prompts", "train_prompts"))}
        for what, n in asked.items():
            if n > held_out:
                raise ValueError(f"{what} = {n}, but gold=verifier holds {held_out} eval prompts "
                                 f"({self.prompts['eval']} per family x {len(self.families)} families): raise "
                                 f"gold.prompts.eval to {-(-n // len(self.families))} or ask for fewer")

    def task_spec(self) -> dict:
        """What determines the task prompts' text, with the task seed: the families' knobs and the prompt layout.
        (The prompt counts only decide how many: a split's first prompts stay as they are when counts grow.)"""
        return {"families": {name: f.knobs() for name, f in self.families.items()}, "layout": TASKS_VERSION}

    def identity(self) -> dict:
        """The tasks, the verifier and how it labels: part of the job's data fingerprint."""
        return {"tasks": self.task_spec(), "prompts": self.prompts, "samples_per_prompt": self.samples_per_prompt,
                "pairs_per_prompt": self.pairs_per_prompt, "format_pairs": self.format_pairs,
                "label_noise": self.label_noise, "length_share": self.length_share, "seed": self.seed,
                "verifier": VERIFIER_VERSION}

    def apply(self, data, policy_cfg, cache: ArtifactCache, seed: int) -> VerifierData:
        # The task seed fixes the prompts and the policy's samples: gold.seed set, every job seed shares them (and
        # samples them once); the job seed still draws the pairs, the label noise and the length preference.
        task_seed = seed if self.seed is None else self.seed
        out = VerifierData(self, draw_tasks(self.families, self.prompts, task_seed), task_seed)
        try:
            policy = instantiate(policy_cfg, _convert_="all")
        except Exception as e:  # noqa: BLE001 - name the group, as job.build does
            raise ValueError(f"policy: {e.__cause__ or e}") from e
        place(self.compute, policy)
        policy.prepare(cache, out, task_seed)
        responses = self.policy_responses(policy, out, cache, task_seed)
        rng = np.random.default_rng(derive_seed(seed, Stream.VERIFIER_LABELS))
        splits, stats = {}, {}
        for split in SPLITS:
            tasks = out.tasks[split]
            verdicts = [[self.families[t.family].verify(t, r) for r in rs]
                        for t, rs in zip(tasks, responses[split], strict=True)]
            cols, stats[split] = verifier_pairs(tasks, responses[split], verdicts, self.pairs_per_prompt,
                                                self.format_pairs, self.label_noise, self.length_share, rng)
            if not cols["prompt"]:
                raise ValueError(f"gold=verifier: the {split} split has no pair: the policy's answers to its "
                                 f"{len(tasks)} prompts are all right or all wrong (and alike in format); make the "
                                 "families' knobs easier or harder, or raise gold.prompts / gold.samples_per_prompt")
            splits[split] = datasets.Dataset.from_dict(cols)
        out.splits, out.stats = splits, stats
        log.info("gold=verifier: %s", stats)
        return out

    def policy_responses(self, policy, data: VerifierData, cache: ArtifactCache, task_seed: int) -> dict:
        """{split: [[samples_per_prompt responses] per task]} of the train / val / test prompts (cached)."""
        k = self.samples_per_prompt
        # The policy's key holds the families and the task seed; the counts of every split decide which questions
        # the train / val / test splits got (a question drawn for a held-out split is not drawn again).
        spec = {"policy": policy.cache_spec(), "prompts": self.prompts, "per_prompt": k, "seed": task_seed}

        flat = [t.prompt for split in SPLITS for t in data.tasks[split] for _ in range(k)]
        texts = cached_samples(cache, "verifier_samples", spec, policy, flat, task_seed, Stream.VERIFIER_SAMPLES)
        out, start = {}, 0
        for split in SPLITS:
            out[split] = [texts[start + i * k : start + (i + 1) * k] for i in range(len(data.tasks[split]))]
            start += k * len(data.tasks[split])
        return out


class VerifierData:
    """The data a job sees under gold=verifier: the verifier-labelled pairs (``splits``, after ``apply``), the
    verifier as ``gold``, the held-out ``eval`` tasks as ``eval_prompts``, and, for arch/labeler=oracle, the
    capability points as ``world.capabilities`` / ``world.judge_pair`` read exactly from the verifier."""

    # Gold's units in the studies (harness/optimize/study.py ``gold_units``): the pass rate less the initial
    # policy's, unscaled, not the within-prompt s.d. of a reward.
    gold_scale_kind = "pass_rate"

    def __init__(self, gold: VerifierGold, tasks: dict[str, list[Task]], task_seed: int):
        self.name = "verifier"
        self.families, self.tasks, self.task_seed = gold.families, tasks, task_seed
        self._gold_spec, self._task_spec, self._prompts = gold.identity(), gold.task_spec(), gold.prompts
        self.by_prompt = {t.prompt: t for split in TASK_SPLITS for t in tasks[split]}
        self.splits: dict[str, datasets.Dataset] = {}
        self.stats: dict = {}
        # Best-of-N samples the task prompts with the task seed too: one set of samples for every job seed.
        self.sample_seed = task_seed

    @property
    def domains(self) -> list[str]:
        return list(self.families)

    @property
    def world(self) -> VerifierData:
        """What arch/labeler=oracle reads (``capabilities``, ``judge_pair``): the verifier itself."""
        return self

    def spec(self, seed: int) -> dict:
        return {"gold": self._gold_spec, "task_seed": self.task_seed, "seed": seed}

    def world_spec(self, seed: int) -> dict:
        # What the prompts' text is drawn from (not the labels, not the counts): the policy's key, hence its samples.
        # BoN's first n eval prompts depend on nothing else (the eval split is drawn first, families in turn).
        return {"tasks": self._task_spec, "task_seed": self.task_seed}

    def corpus(self, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
        """``n`` (prompt, response) texts of the training pairs, for pre-training a tiny backbone (drawn with the seed,
        with replacement when there are fewer)."""
        if not self.splits:
            raise UserError("gold=verifier: the policy answers the task prompts, so it cannot be one trained on the "
                            "data's text (policy=tiny); use a pretrained policy (policy=smollm2 or policy=hf)")
        train = self.splits["train"]
        texts = list(dict.fromkeys([*zip(train["prompt"], train["chosen"], strict=True),
                                    *zip(train["prompt"], train["rejected"], strict=True)]))
        idx = np.random.default_rng(derive_seed(seed, Stream.CORPUS)).choice(len(texts), size=n, replace=n > len(texts))
        return [texts[i][0] for i in idx], [texts[i][1] for i in idx]

    def eval_prompts(self, n: int, seed: int) -> list[tuple[str, str]]:
        """The first ``n`` held-out tasks, the families in turn: (prompt, family)."""
        pool = self.tasks["eval"]
        per_family = len(pool) // len(self.families)
        if n > len(pool):
            raise UserError(f"gold=verifier holds {len(pool)} eval prompts ({per_family} per family, gold.prompts.eval)"
                            f" and {n} are asked for (opt.bon.n_prompts, opt.ppo eval + train prompts): raise "
                            "gold.prompts.eval")
        turns = [pool[i * per_family + j] for j in range(per_family) for i in range(len(self.families))]
        return [(t.prompt, t.family) for t in turns[:n]]

    def verdict(self, prompt: str, response: str):
        task = self.by_prompt.get(prompt)
        if task is None:
            raise KeyError(f"gold=verifier: {prompt[:60]!r}... is not one of this task set's prompts")
        return self.families[task.family].verify(task, response)

    def gold(self, prompt: str, response: str, domain: str) -> float:
        return float(self.verdict(prompt, response).correct)

    def gold_batch(self, prompts: list[str], responses: list[str], domains: list[str]) -> np.ndarray:
        """Correctness (0 / 1) of each response: the pass rate is its mean."""
        return np.array([self.gold(p, r, d) for p, r, d in zip(prompts, responses, domains, strict=True)], dtype=float)

    # -- what arch/labeler=oracle asks the world
    def capabilities(self, prompt: str, response: str, domain: str) -> dict[str, float]:
        v = self.verdict(prompt, response)
        return dict(zip(VERIFIER_POINTS, (float(v.correct), float(v.formatted), float(len(response))), strict=True))

    def judge_pair(self, value_a: float, value_b: float, point: str, rng: np.random.Generator) -> tuple[int, int]:
        """The oracle reads a point exactly; not told of a tie, it answers each way round by a coin flip. Returns
        the answers (1 or 2: which reply is better) with a shown first, then with b shown first."""
        u_first, u_second = rng.random(), rng.random()
        first = 1 if value_a > value_b or (value_a == value_b and u_first < 0.5) else 2
        second = 1 if value_b > value_a or (value_a == value_b and u_second < 0.5) else 2
        return first, second


def gold_scores(data, prompts: list[str], responses: list[str], domains: list[str]) -> np.ndarray:
    """The data's gold rewards of responses (the studies' and the length-bias pairs'); a gold that is a model (gold=rm)
    scores the whole list in batches."""
    if hasattr(data, "gold_batch"):
        return np.asarray(data.gold_batch(prompts, responses, domains), dtype=float)
    return np.array([data.gold(p, r, d) for p, r, d in zip(prompts, responses, domains, strict=True)], dtype=float)


def cached_samples(cache: ArtifactCache, kind: str, spec: dict, policy, prompts: list[str], seed: int,
                   stream: Stream) -> list[str]:
    """The policy's response to each of ``prompts`` (one sample per entry; repeat a prompt for more), sampled once
    under the cache entry ``kind``/``spec`` and read back from it afterwards."""

    def build(out: Path) -> None:
        texts = policy.sample(prompts, seed, stream)
        (out / "responses.json").write_text(json.dumps(texts), encoding="utf-8")

    entry = cache.directory(kind, spec, build)
    return json.loads((entry / "responses.json").read_text(encoding="utf-8"))
