"""The policy's capability before and after optimisation, measured with lm-eval (ecosystem.md §2; SPEC §7).

``policy_capability`` runs ``lm_eval.simple_evaluate`` on the in-memory policy model, wrapped in lm-eval's
``HFLM`` (no save/reload), on any mix of:

- the harness's own tasks, built from the job's world and run offline: ``world_facts`` asks, in the world's
  own prompt layout, the colour of each knowledge-base entity ("fact : tell me about ... . what colour is X ?",
  the marker being "prompt" as often as in the world's objective-QA prompts),
  with the 12 colours as choices phrased as world responses ("answer is <colour>"); the policy's answer is the
  choice it finds most likely. Chance is 1/12. The task's fixed settings live in ``harness/lm_eval_tasks/``;
  its questions are generated into the artifact cache and loaded with ``dataset_path: json``.
- any lm-eval task name (hellaswag, arc_easy, ...): those read their dataset from the hub, so they need the
  network (or a warm datasets cache); offline the failure says so.

``capability_study`` is what ``run_studies`` calls: "before" is the initial policy, "after_ppo" the PPO-trained
model when PPO ran. Best-of-N only selects among the initial policy's samples: its weights never change.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..cache import ArtifactCache
from ..seeds import Stream, derive_seed
from ..world.vocab import COLOURS

log = logging.getLogger(__name__)


@dataclass
class CapabilityConfig:
    tasks: list[str]
    limit: int | None
    batch_size: int
    questions_per_entity: int

    def validate(self) -> None:
        if not self.tasks:
            raise ValueError("opt.capability.tasks is empty: name at least one lm-eval task (e.g. world_facts)")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"opt.capability.limit={self.limit} must be >= 1 or null")
        if self.batch_size < 1 or self.questions_per_entity < 1:
            raise ValueError(f"opt.capability.batch_size={self.batch_size} and questions_per_entity="
                             f"{self.questions_per_entity} must be >= 1")


def world_facts_rows(world, questions_per_entity: int, seed: int) -> list[dict]:
    """``questions_per_entity`` questions per knowledge-base entity: a world objective-QA prompt (fresh topic
    keywords each time) whose entity is set to it; the answer is the entity's colour among all 12."""
    rng = np.random.default_rng(derive_seed(seed, Stream.WORLD_FACTS))
    rows = []
    for entity, colour in world.knowledge.items():
        for _ in range(questions_per_entity):
            prompt, _ = world.sample_prompt(rng, domain="objective_qa")
            words = prompt.split()
            # An objective-QA prompt ends "what colour is <entity> ?" (World.sample_prompt).
            assert words[-4:-2] == ["colour", "is"] and words[-1] == "?", prompt
            words[-2] = entity
            rows.append({"prompt": " ".join(words), "entity": entity,
                         "choices": [f"answer is {c}" for c in COLOURS], "label": COLOURS.index(colour)})
    return rows


def world_facts_task(data, cache: ArtifactCache, seed: int, questions_per_entity: int) -> dict:
    """The ``world_facts`` lm-eval task config: the shipped YAML plus the questions of this job's world (cached)."""
    spec = {"world": data.world_spec(seed), "questions_per_entity": questions_per_entity, "seed": seed}

    def build(out: Path) -> None:
        rows = world_facts_rows(data.world, questions_per_entity, seed)
        (out / "world_facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    entry = cache.directory("lm_eval_world_facts", spec, build)
    from ..lmeval import TASKS_DIR  # lm-eval is imported only by jobs that run it

    config = yaml.safe_load((TASKS_DIR / "world_facts.yaml").read_text(encoding="utf-8"))
    config["dataset_kwargs"] = {"data_files": {"train": str((entry / "world_facts.jsonl").resolve())}}
    return config


# The harness's own tasks: name -> builder(data, cache, seed, cfg) of an lm-eval task config.
LOCAL_TASKS = {
    "world_facts": lambda data, cache, seed, cfg: world_facts_task(data, cache, seed, cfg.questions_per_entity),
}


def policy_capability(model, tokenizer, tasks: list[str], local: dict[str, dict] | None = None,
                      limit: int | None = None, batch_size: int = 64, seed: int = 0) -> dict:
    """``{task: {"acc": ..., "acc_stderr": ..., "n_samples": ...}}`` of ``model`` (a transformers causal LM, in
    memory) on ``tasks``: names of ``local`` task configs (``{name: lm-eval config dict}``) or lm-eval task names."""
    from lm_eval.models.huggingface import HFLM

    from ..lmeval import run_lm_eval

    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    return run_lm_eval(lm, tasks, local or {}, limit, seed, key="opt.capability.tasks",
                       own_tasks=sorted(LOCAL_TASKS))


def capability_study(cfg: CapabilityConfig, policy, data, cache: ArtifactCache, seed: int,
                     after_ppo=None) -> dict:
    """``{"before": {task: metrics}, "after_ppo": {...} (when PPO ran), "seconds": ...}``."""
    t0 = time.perf_counter()
    local = {name: LOCAL_TASKS[name](data, cache, seed, cfg) for name in cfg.tasks if name in LOCAL_TASKS}
    models = {"before": policy.model}
    if after_ppo is not None:
        models["after_ppo"] = after_ppo
    block: dict = {}
    for when, model in models.items():
        # lm-eval's HFLM runs the model where it is (the policy's device); the forwards autocast by its precision.
        with policy.compute.autocast():
            block[when] = policy_capability(model, policy.tokenizer, list(cfg.tasks), local=local,
                                            limit=cfg.limit, batch_size=cfg.batch_size, seed=seed)
        for task, metrics in block[when].items():
            log.info("capability %s %s: %s", when, task, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    block["seconds"] = time.perf_counter() - t0
    return block
