"""Progress bars and stage names for the steps of a job that take more than a few seconds.

Bars are tqdm's (rate and time left), drawn on stderr only when it is a terminal (``disable=None``) and only for
steps that last longer than ``BAR_DELAY_S``, and cleared when done: CI and the job's log file get the stage lines
and one summary line per step, not a bar per batch. ``RMHARNESS_PROGRESS=0`` hides bars on a terminal too,
``=1`` forces them where there is none. Per-step detail lines are DEBUG: ``hydra.verbose=true`` shows them.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable

from tqdm import tqdm

log = logging.getLogger("harness")

# A step shorter than this never shows a bar (PPO scores a handful of responses per step, for example).
BAR_DELAY_S = 1.0
# Redraw at most this often: a bar must not cost time.
BAR_MIN_INTERVAL_S = 0.5
ENV_SWITCH = "RMHARNESS_PROGRESS"


def _disable() -> bool | None:
    value = os.environ.get(ENV_SWITCH, "").strip()
    if value == "0":
        return True
    if value == "1":
        return False
    return None  # tqdm: off when stderr is not a terminal


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it") -> tqdm:
    """A transient tqdm bar named ``desc`` (say which model: "policy SFT", "backbone pre-training")."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=_disable(), leave=False, delay=BAR_DELAY_S,
                mininterval=BAR_MIN_INTERVAL_S, dynamic_ncols=True, file=sys.stderr)


def config_name(node) -> str:
    """What a stage line calls a config group's choice: its ``name`` key, else its class without the group's
    suffix (``harness.backbones.TinyBackbone`` -> "tiny")."""
    name = node.get("name") if hasattr(node, "get") else None
    if name:
        return str(name)
    cls = str(node.get("_target_", "?")).rsplit(".", 1)[-1]
    for suffix in ("Backbone", "Policy", "Data"):
        cls = cls.removesuffix(suffix)
    return cls.lower() or "?"


class Stages:
    """``stage k/n: what`` lines, one per stage of a job, in the order they run."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def next(self, what: str) -> None:
        self.done += 1
        log.info("stage %d/%d: %s", self.done, max(self.total, self.done), what)


def quiet_third_party() -> None:
    """Silence what a user of the harness cannot act on: transformers' weight-loading / shard-writing bars,
    datasets' saving bars, and warnings about transformers' own internals. Called by the command line only."""
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
