"""Entry point: ``python -m harness [overrides]`` runs one job; ``-m`` runs a Hydra multirun."""

from __future__ import annotations

import logging
import os
import sys

from harness.threads import WAIT_POLICY, auto_threads, usable_cpus  # light: os and pathlib only

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning (harness/threads.py); read once, when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
# The imports below take seconds (torch, transformers, peft); say so on a terminal rather than sit silent.
_PRINT_ONLY_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--version", "--shell-completion"}
if sys.stderr.isatty() and not _PRINT_ONLY_FLAGS & set(sys.argv[1:]):
    print("rmharness: loading torch and transformers ...", file=sys.stderr, flush=True)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from tqdm.contrib.logging import logging_redirect_tqdm  # noqa: E402

from harness import callbacks  # noqa: E402
from harness.console import job_line, job_summary  # noqa: E402
from harness.errors import USER_ERROR_EXIT  # noqa: E402
from harness.job import run_job  # noqa: E402
from harness.progress import quiet_third_party  # noqa: E402

quiet_third_party()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    # Again in the job's own process: a joblib worker runs this function without importing this module.
    quiet_third_party()
    if cfg.threads in (None, "auto") and "joblib" in str(hc.launcher.get("_target_", "")):
        # Several jobs share the cores: split them, or each job's intra-op threads oversubscribe the CPU. The job
        # then records (and a resumed one compares) the number it ran with.
        n_jobs = hc.launcher.n_jobs
        cfg.threads = auto_threads(len(usable_cpus()) if n_jobs in (None, -1) else max(1, n_jobs))
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    # Log lines go above the progress bars instead of through them.
    with logging_redirect_tqdm(loggers=[logging.getLogger()]):
        metrics = run_job(cfg, hc.runtime.output_dir, choices, list(hc.overrides.task))
    if metrics["status"] == "ok" and "data_parallel" not in metrics:  # data-parallel ranks > 0 only trained
        # A sweep's table comes at its end (callbacks.AggregateOnMultirunEnd); each of its jobs gets one line.
        text = job_summary(metrics, hc.runtime.output_dir) if hc.mode != RunMode.MULTIRUN else job_line(metrics)
        logging.getLogger("harness").info(text)
    # In a multirun a failed job must not raise: Hydra would then skip the end-of-sweep aggregation. The
    # aggregation callback counts failed rows and the exit status below reports them.
    if metrics["status"] != "ok" and hc.mode != RunMode.MULTIRUN:
        if metrics["status"] == "user_error":
            raise SystemExit(USER_ERROR_EXIT)  # the job logged its one message; a traceback would add nothing
        raise SystemExit(f"job failed: {metrics['error']} (details in {hc.runtime.output_dir})")


if __name__ == "__main__":
    main()
    if callbacks.LAST_SWEEP_FAILED:
        sys.exit(1)
