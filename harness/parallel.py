"""Data-parallel reward-model training on several processes: torchrun starts them, PyTorch DDP averages the
gradients. One process per GPU (or a few CPU processes with gloo, as the test does):

    torchrun --standalone --nproc_per_node=4 -m harness device=cuda precision=bf16 hydra.run.dir=results/runs/dp4

What each process does:
- data and backbone: every process prepares them (the same seeded, deterministic builds); only rank 0 writes
  cache entries (``ArtifactCache`` asks ``is_writer``), the others build alongside and then read rank 0's;
- reward-model training (``archs.base.train_bradley_terry`` / ``train_classifier``, every phase of every
  architecture): each step's batch of ``train.batch_size`` pairs is split across the processes, each loss is
  weighted by its share so that DDP's average of the gradients is the gradient of the whole batch's mean — the
  same steps, schedule and updates as one process, up to the order of float sums. Validation inside training
  scores 1/world of the pairs per process and sums the counts, so every process takes the same early-stopping
  decision;
- after training, rank 0 alone evaluates, exports, runs the studies and writes metrics.json; the others end.

Nothing here runs without torchrun: with one process every function is the identity of today's code.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from .device import Compute

log = logging.getLogger(__name__)

# How long a process waits for the others at a collective before it gives up (a crashed rank must not hang
# the rest forever); the first collectives wait on the slowest process's data and backbone preparation.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


def launched() -> bool:
    """Started by torchrun with more than one process (its WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank: the process group's, else torchrun's RANK (a process keeps it after the group ends)."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def is_writer() -> bool:
    """Whether this process writes shared files (cache entries, results): rank 0, or the only process."""
    return rank() == 0


def init(compute: Compute) -> None:
    """Join the process group torchrun describes: NCCL between GPUs, gloo between CPU processes."""
    if not launched() or active():
        return
    backend = "nccl" if compute.device.type == "cuda" else "gloo"
    if compute.device.type == "cuda":
        torch.cuda.set_device(compute.device)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    if rank() != 0:  # one process tells the job's story; the others only warn
        logging.getLogger("harness").setLevel(logging.WARNING)
    log.info("data parallel: process %d of %d (%s, %s)", rank(), world_size(), backend, compute.describe())


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def artifact_identity() -> dict | None:
    """What of the scale-out a trained artifact's numbers depend on (cache keys of trained ensemble members): the
    number of processes, whose gradients are summed in another order than one process's; None for one process."""
    if not active():
        return None
    return {"processes": world_size()}


def barrier() -> None:
    if active():
        dist.barrier()


def all_agree(flag: bool) -> bool:
    """True on every process iff ``flag`` is true on every process (so all take the same branch)."""
    if not active():
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def sum_over_processes(value: float) -> float:
    if not active():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return float(t.item())


def batch_mean(value: float, weight: float) -> float:
    """The whole batch's mean loss from each process's mean over its share and that share's ``shard`` weight."""
    if not active():
        return value
    return sum_over_processes(value * weight) / world_size()


def _collective_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo only CPU ones.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def shard(idx: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This process's share of the global batch ``idx`` and the weight of its mean loss.

    With weight ``len(share) * world / len(idx)``, DDP's average of the processes' gradients equals the gradient
    of the mean loss over the whole batch. A process whose share would be empty (a last batch smaller than the
    number of processes) takes the batch's last example with weight 0: it must still run a backward, since DDP's
    gradient averaging is a collective every process joins."""
    if not active():
        return idx, 1.0
    W, r = world_size(), rank()
    share = idx[r::W]
    if len(share) == 0:
        return idx[-1:], 0.0
    return share, len(share) * W / len(idx)


def share_of(idx: torch.Tensor) -> torch.Tensor:
    """This process's part of an evaluation's indices (its counts are then summed with ``sum_over_processes``)."""
    return idx[rank()::world_size()] if active() else idx


class _Call(nn.Module):
    """A module whose forward is ``forward(batch)``: DDP wraps modules, the loops call closures (an
    architecture's phase may train through any function of its modules)."""

    def __init__(self, model: nn.Module, forward: Callable):
        super().__init__()
        self.model = model  # registered: DDP averages the gradients of its parameters
        self.__dict__["_forward"] = forward  # not registered again when it is the model itself

    def forward(self, batch):
        return self._forward(batch)


def data_parallel(model: nn.Module, forward: Callable) -> Callable:
    """``forward`` through DDP when several processes train (the backward then averages the gradients of
    ``model``'s trainable parameters across them), else ``forward`` itself.

    ``find_unused_parameters``: a phase trains a subset, and routed architectures leave experts unused in a
    batch (DDP warns once per process when a phase happens to use every parameter)."""
    if not active():
        return forward
    return torch.nn.parallel.DistributedDataParallel(_Call(model, forward), find_unused_parameters=True)
