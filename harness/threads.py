"""How many torch threads a job computes with (``threads: auto | N``), and how idle threads wait.

Timings must mean something on a shared CPU. Two things made them swing by 4-13x there: more intra-op threads
than the job had cores to itself, and OpenMP's default of spinning while it waits for the other threads (a
descheduled thread then stalls every parallel op, and the spinning burns the CPU the others need). So ``auto`` is
the physical cores this process may run on, at most ``AUTO_MAX``, one per job when a launcher runs jobs side by
side, and ``python -m harness`` lets idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the
environment says otherwise. A job records the threads it used in metrics.json (``threads``).
"""

from __future__ import annotations

import os
from pathlib import Path

# The models a job trains on a CPU are small: past 4 threads, a parallel op's bookkeeping eats what it gains.
AUTO_MAX = 4
# How OpenMP threads wait between parallel ops unless OMP_WAIT_POLICY is set: sleep, not spin.
WAIT_POLICY = "PASSIVE"
# Linux's CPU topology: cpu<N>/topology/thread_siblings_list names the logical CPUs sharing N's core.
SYSFS_CPUS = Path("/sys/devices/system/cpu")


def usable_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity; all of them where that is not known)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int], sysfs: Path = SYSFS_CPUS) -> int:
    """Distinct physical cores among ``cpus``: hyper-threads of one core share its arithmetic units, so they count
    once. Where the topology cannot be read (not Linux), every logical CPU counts."""
    cores = set()
    for cpu in cpus:
        try:
            cores.add((sysfs / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text().strip())
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def auto_threads(parallel_jobs: int = 1) -> int:
    """``threads: auto``: the physical cores at hand, at most AUTO_MAX, shared among ``parallel_jobs`` jobs that run
    at once (at least 1 each)."""
    return max(1, min(AUTO_MAX, physical_cores(usable_cpus())) // max(1, parallel_jobs))


def job_threads(setting) -> int:
    """The thread count of a job's ``threads`` setting: an integer as given, ``auto`` (or null) resolved here."""
    if setting is None or setting == "auto":
        return auto_threads()
    return int(setting)
