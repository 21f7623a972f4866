"""Live curves of a job (the `logger` config group): none (default) | tensorboard | wandb.

A logger receives, as the job runs: every training log row of the reward model (``FitContext.log``: loss and
validation accuracy per phase), each PPO evaluation step (gold, proxy, KL and the PPO diagnostics), the BoN curve
once the study is done, and the final metrics. It only mirrors what metrics.json and curves.csv hold -- those stay
the record; a logger is for watching a run and comparing runs in a familiar UI.

Tags are ``<section>/<name>``: ``train/<phase>/loss``, ``train/<phase>/val_acc``, ``bon/gold`` (step = n),
``ppo/gold`` (step = PPO step), ``final/accuracy.gold.overall``...
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)


def _numbers(row: Mapping, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """The finite numeric entries of a row (bools and text left out)."""
    out = {}
    for k, v in row.items():
        if k in skip or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[str(k)] = float(v)
    return out


def _flat(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if k in ("config", "explain", "train_log", "ppo_log"):
            continue  # big or non-scalar blocks: in metrics.json, not worth a curve each
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out.update({f"{prefix}{k}": x for x in _numbers({k: v}).values()})
    return out


class MetricLogger:
    """Interface, and the ``none`` logger: every call does nothing. Built with the job's dir."""

    def __init__(self, job_dir: str | None = None):
        pass

    def log_config(self, config: Mapping) -> None:
        """The job's resolved config, once at its start."""

    def scalars(self, section: str, values: Mapping, step: int) -> None:
        """Numeric ``values`` as ``<section>/<key>`` at ``step``."""

    def final(self, metrics: Mapping) -> None:
        """The job's final metrics (flattened numbers) once it ends, ok or failed."""

    def close(self) -> None:
        pass

    # -- what the harness reports, in terms of the two primitives above --------------------------------------
    def train_row(self, row: Mapping) -> None:
        """A ``FitContext.log`` row: ``{"phase", "step", "loss", "val_acc", ...}``."""
        if "step" in row:
            self.scalars(f"train/{row.get('phase', 'fit')}", _numbers(row, skip=("step",)), int(row["step"]))

    def curve_rows(self, rows: list[Mapping]) -> None:
        """curves.csv rows: BoN rows are logged at step n, PPO rows at their PPO step (if not already live)."""
        for r in rows:
            if r.get("opt") == "bon":
                self.scalars("bon", _numbers(r, skip=("n", "step")), int(r["n"]))

    def ppo_eval(self, row: Mapping, diagnostics: Mapping) -> None:
        """One PPO evaluation step: gold, proxy, KL (``row``) and the window's PPO diagnostics."""
        step = int(row["step"])
        self.scalars("ppo", _numbers(row, skip=("step", "n")), step)
        # Diagnostics already carry their namespace (ppo/approx_kl, time/rollout_s).
        for key, value in _numbers(diagnostics).items():
            section, _, name = key.rpartition("/")
            self.scalars(section or "ppo", {name: value}, step)


NullLogger = MetricLogger


class TensorBoardLogger(MetricLogger):
    """Event files under ``<job dir>/<subdir>``; ``tensorboard --logdir results/multirun/<sweep>`` compares jobs."""

    def __init__(self, job_dir: str, subdir: str = "tensorboard", flush_secs: int = 10):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch's writer needs the tensorboard package
            raise ImportError("logger=tensorboard needs the tensorboard package: pip install tensorboard") from e
        self.log_dir = Path(job_dir) / subdir
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)
        log.info("tensorboard event files: %s (view: tensorboard --logdir %s)", self.log_dir, self.log_dir)

    def log_config(self, config: Mapping) -> None:
        import yaml

        self.writer.add_text("config", "```\n" + yaml.safe_dump(dict(config), sort_keys=False) + "```", 0)

    def scalars(self, section: str, values: Mapping, step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(f"{section}/{k}", v, step)

    def final(self, metrics: Mapping) -> None:
        for k, v in _flat(metrics).items():
            self.writer.add_scalar(f"final/{k}", v, 0)
        self.writer.add_text("final/status", str(metrics.get("status")), 0)

    def close(self) -> None:
        self.writer.close()


class WandbLogger(MetricLogger):
    """A Weights & Biases run; ``mode: offline`` writes under ``<job dir>/wandb`` with no network (``wandb sync``
    uploads it later). wandb is optional: ``pip install wandb``."""

    def __init__(self, job_dir: str, project: str = "rmharness", mode: str = "offline", group: str | None = None):
        try:
            import wandb
        except ImportError as e:
            raise ImportError("logger=wandb needs the wandb package: pip install wandb (or use logger=tensorboard)"
                              ) from e
        self.run = wandb.init(project=project, mode=mode, group=group, dir=str(job_dir), name=Path(job_dir).name)

    def log_config(self, config: Mapping) -> None:
        self.run.config.update(dict(config))

    def scalars(self, section: str, values: Mapping, step: int) -> None:
        # wandb wants one increasing step per run, so the section's own step (n, PPO step) goes in as a value.
        self.run.log({**{f"{section}/{k}": v for k, v in values.items()}, f"{section}/step": step})

    def final(self, metrics: Mapping) -> None:
        self.run.summary.update({**_flat(metrics), "status": metrics.get("status")})

    def close(self) -> None:
        self.run.finish()
