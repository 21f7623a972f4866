"""Hydra callbacks. Registered under `hydra.callbacks` in the primary config:

    hydra:
      callbacks:
        aggregate:
          _target_: harness.callbacks.AggregateOnMultirunEnd
          figures: true

Hydra turns any exception a callback raises into a warning and still exits 0, so the outcome of the
end-of-sweep aggregation is left in `LAST_SWEEP_FAILED` for the entry point to turn into an exit status.
If a job *raises*, Hydra never calls `on_multirun_end` at all (and exits 1 itself); jobs therefore catch
their errors and write a failed metrics.json, and `python -m harness.aggregate DIR` covers the rest.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from harness.console import sweep_text  # the same tables `python -m harness.aggregate DIR` prints
from harness.report import aggregate

log = logging.getLogger(__name__)

# True after on_multirun_end when a job failed or aggregation itself broke; read by harness.__main__.
LAST_SWEEP_FAILED: bool = False


class AggregateOnMultirunEnd(Callback):
    def __init__(self, figures: bool = True) -> None:
        self.figures = figures

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global LAST_SWEEP_FAILED
        LAST_SWEEP_FAILED = False  # a second sweep in the same process must not inherit the first's verdict

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global LAST_SWEEP_FAILED
        sweep_dir = config.hydra.sweep.dir
        try:
            out = aggregate(sweep_dir, figures=self.figures)
        except Exception:
            # Logged rather than raised: Hydra would only downgrade it to a warning.
            log.exception("aggregating %s failed; retry with `python -m harness.aggregate DIR`", sweep_dir)
            LAST_SWEEP_FAILED = True
            return
        LAST_SWEEP_FAILED = out["n_failed"] > 0 or bool(out["user_errors"])
        try:
            log.info("sweep done\n%s", sweep_text(out))
        except Exception:  # the tables are a courtesy: summary.csv is written, the verdict above stands
            log.exception("sweep done (%s), but its tables could not be printed", out["summary"])

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        # A single run writes its own metrics.json; there is nothing to aggregate.
        pass
