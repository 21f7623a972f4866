"""lm-eval in the harness: one runner for in-memory models, and a reward model exposed to lm-eval as a model.

- ``run_lm_eval``: ``lm_eval.simple_evaluate`` on an lm-eval ``LM`` instance over the harness's own task configs
  (built per job, offline) and any lm-eval task name (those usually need the hub for their dataset).
  The policy's capability (``optimize/capability.py``) wraps the policy in lm-eval's ``HFLM`` and calls it.
- ``RewardModelLM`` (registered as ``rmharness-rm``): the log-likelihood lm-eval asks for is the RM's reward of
  (context as the prompt, continuation as the response). lm-eval's ``multiple_choice`` answer is the choice of
  highest log-likelihood, so a multiple-choice task's ``acc`` is how often the RM prefers the right response:
  every such task becomes a preference benchmark for any architecture. ``acc_norm`` divides by the choice's
  length in characters, which means nothing for rewards; read ``acc``.
- ``test_prefs``, the harness's own RM task: the job's test pairs as 2-way multiple choice, the answer being the
  response gold prefers (pairs gold ties are left out) or, on data without gold, the labelled chosen one, in a
  seeded random order. Its ``acc`` is the job's gold (resp. human) accuracy computed by lm-eval's machinery — a
  cross-check of our own evaluation, and the template for exporting any preference set to lm-eval.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import yaml
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from .data.schema import encode_sequences
from .seeds import Stream, derive_seed

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"


def offline() -> bool:
    return any(os.environ.get(k, "0") not in ("0", "", "false", "False")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def flatten(results: dict, task: str) -> dict:
    """lm-eval's ``{"acc,none": x, "acc_stderr,none": s, "alias": ...}`` -> ``{"acc": x, "acc_stderr": s,
    "n_samples": n}``."""
    block = {}
    for key, value in results["results"][task].items():
        if key in ("alias", "sample_len") or not isinstance(value, (int, float)):  # sample_len: = n_samples
            continue
        metric, _, filt = key.partition(",")
        block[metric if filt in ("", "none") else key] = float(value)
    block["n_samples"] = int(results["n-samples"][task]["effective"])
    return block


def run_lm_eval(lm: LM, tasks: list[str], local: dict[str, dict], limit: int | None, seed: int, key: str,
                own_tasks: list[str]) -> dict:
    """``{task: {"acc": ..., "acc_stderr": ..., "n_samples": ...}}`` of ``lm`` on ``tasks``: names of ``local``
    task configs (``{name: lm-eval config dict}``) or lm-eval task names. ``key`` is the config key that listed
    the tasks and ``own_tasks`` the harness's offline ones (both for error messages)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    hub = [t for t in tasks if t not in local]
    # Indexing lm-eval's ~15k bundled task YAMLs takes ~20 s on 2 cores: only when a bundled task is asked for.
    manager = TaskManager(include_defaults=bool(hub))
    unknown = [t for t in hub if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"{key}: unknown lm-eval task(s) {unknown}; the harness's own: {own_tasks}; "
                         f"lm-eval's: `lm_eval ls tasks`")
    try:
        results = simple_evaluate(
            model=lm, tasks=[local.get(t, t) for t in tasks], limit=limit, task_manager=manager,
            log_samples=False, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    except Exception as e:  # noqa: BLE001 - a bundled task's dataset download is the usual cause offline
        if hub and offline():
            raise RuntimeError(f"lm-eval task(s) {hub} need their dataset from the Hugging Face hub, and "
                               f"HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set: run online once (or drop them; "
                               f"offline tasks: {own_tasks}). Cause: {type(e).__name__}: {e}") from e
        raise
    return {t: flatten(results, t) for t in tasks}


@register_model("rmharness-rm")
class RewardModelLM(LM):
    """A trained harness reward model as an lm-eval model: log-likelihood(context, continuation) := reward."""

    def __init__(self, rm, backbone, batch_size: int = 256):
        super().__init__()
        self.rm, self.backbone, self.batch_size = rm, backbone, int(batch_size)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        prompts = [r.args[0] for r in requests]
        # multiple_choice continuations start with the task's target_delimiter (" "): not part of the response.
        responses = [r.args[1][1:] if r.args[1].startswith(" ") else r.args[1] for r in requests]
        seqs = encode_sequences(self.backbone.tokenizer, self.backbone.join, prompts, responses,
                                [""] * len(prompts), {}, self.backbone.max_length)
        rewards = self.rm.score(seqs, self.batch_size)
        return [(float(r), False) for r in rewards]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("a reward model has no token likelihoods: give it multiple_choice tasks")

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("a reward model does not generate: give it multiple_choice tasks")


def preference_rows(dataset, seed: int) -> list[dict]:
    """The test split as 2-way multiple choice; the answer is gold's preference (gold ties dropped) when the data
    has gold, else the labelled chosen response. The two choices come in a seeded random order."""
    rng = np.random.default_rng(derive_seed(seed, Stream.TEST_PREFS))
    has_gold = "gold_chosen" in dataset.column_names
    rows = []
    for i, ex in enumerate(dataset):
        if has_gold and ex["gold_chosen"] == ex["gold_rejected"]:
            continue
        right, wrong = ex["chosen"], ex["rejected"]
        if has_gold and ex["gold_rejected"] > ex["gold_chosen"]:
            right, wrong = wrong, right
        label = int(rng.integers(2))
        choices = [wrong, right] if label else [right, wrong]
        rows.append({"id": i, "prompt": ex["prompt"], "choices": choices, "label": label})
    return rows


def preference_task(dataset, seed: int, out_dir: Path) -> dict:
    """The ``test_prefs`` lm-eval task config: the shipped YAML plus this job's test pairs written to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "test_prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(dataset, seed)), encoding="utf-8")
    config = yaml.safe_load((TASKS_DIR / "test_prefs.yaml").read_text(encoding="utf-8"))
    config["dataset_kwargs"] = {"data_files": {"train": str(path.resolve())}}
    return config


def rm_lm_eval(rm, backbone, tasks: list[str], test_dataset, job_dir: Path, limit: int | None, batch_size: int,
               seed: int) -> dict:
    """``{task: metrics, "seconds": ...}`` of the trained RM on lm-eval multiple-choice ``tasks``."""
    t0 = time.perf_counter()
    local = {"test_prefs": preference_task(test_dataset, seed, Path(job_dir) / "lm_eval")} \
        if "test_prefs" in tasks else {}
    block = run_lm_eval(RewardModelLM(rm, backbone, batch_size), list(tasks), local, limit, seed,
                        key="eval.lm_eval_tasks", own_tasks=["test_prefs"])
    for task, metrics in block.items():
        log.info("lm-eval (RM) %s: %s", task, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    block["seconds"] = time.perf_counter() - t0
    return block
