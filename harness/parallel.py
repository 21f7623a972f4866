"""Data-parallel reward-model training on several processes: torchrun starts them, PyTorch DDP averages the
gradients. One process per GPU (or a few CPU processes with gloo, as the test does):

    torchrun --standalone --nproc_per_node=4 -m harness device=cuda precision=bf16 hydra.run.dir=results/runs/dp4

What each process does:
- data and backbone: every process prepares them (the same seeded, deterministic builds); only rank 0 writes
  cache entries (``ArtifactCache`` asks ``is_writer``), the others build alongside and then read rank 0's;
- reward-model training (``harness.archs.train.train_bradley_terry`` / ``train_classifier``, every phase of every
  architecture): each step's batch of ``train.batch_size`` pairs is split across the processes, each loss is
  weighted by its share so that DDP's average of the gradients is the gradient of the whole batch's mean — the
  same steps, schedule and updates as one process, up to the order of float sums. Validation inside training
  scores 1/world of the pairs per process and sums the counts, so every process takes the same early-stopping
  decision;
- after training, rank 0 alone evaluates, exports, runs the studies and writes metrics.json; the others end.

``parallel.strategy`` says how the processes share the model:
- ``ddp`` (default): every process holds the whole RM, its gradients and optimiser state; DDP averages gradients;
- ``fsdp``: torch's FSDP2 (``torch.distributed.fsdp.fully_shard``) shards the RM's parameters, gradients and AdamW
  state across the processes for the duration of each training loop: every decoder layer of a transformers trunk
  (its ``_no_split_modules``, as accelerate's FSDP auto-wrap picks them) is a unit of its own, the rest of the RM
  (embeddings, heads, routers) the root unit. For a backbone whose TRAINING does not fit one GPU (AdamW holds 16
  bytes a parameter in fp32, FSDP 16/N). Validation inside training runs on every process through the sharded
  model, on all pairs (its all-gathers need every process in step). At the end of a loop the shards are gathered
  back into the RM's own parameters, so what follows (the next phase, rank 0's evaluation, export and studies)
  sees a plain model: the whole RM must fit one GPU for inference. Works with gloo on the CPU (the test).

    torchrun --standalone --nproc_per_node=4 -m harness device=cuda precision=bf16 parallel.strategy=fsdp

Nothing here runs without torchrun: with one process every function is the identity of today's code.
"""

from __future__ import annotations

import datetime
import logging
import os
import warnings
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from .device import Compute

log = logging.getLogger(__name__)

# How long a process waits for the others at a collective before it gives up (a crashed rank must not hang
# the rest forever); the first collectives wait on the slowest process's data and backbone preparation.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
# parallel.strategy: how several processes share the reward model (module docstring).
STRATEGIES = ("ddp", "fsdp")
_strategy = "ddp"


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"parallel.strategy={strategy!r} must be one of {' | '.join(STRATEGIES)}")
    return strategy


def strategy_of(cfg) -> str:
    """The job config's ``parallel.strategy`` (default ddp), checked."""
    node = cfg.get("parallel") or {}
    return check_strategy(str(node.get("strategy", "ddp")))


def strategy() -> str:
    """``parallel.strategy`` of this job (set by ``init``; ddp until then)."""
    return _strategy


def sharded() -> bool:
    """Several processes train one FSDP-sharded model."""
    return active() and _strategy == "fsdp"


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


def init(compute: Compute, strategy: str = "ddp") -> None:
    """Join the process group torchrun describes: NCCL between GPUs, gloo between CPU processes; ``strategy``:
    ``parallel.strategy``."""
    global _strategy
    _strategy = check_strategy(strategy)
    if not launched() or active():
        return
    backend = "nccl" if compute.device.type == "cuda" else "gloo"
    if compute.device.type == "cuda":
        torch.cuda.set_device(compute.device)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    if rank() != 0:  # one process tells the job's story; the others only warn
        logging.getLogger("harness").setLevel(logging.WARNING)
    log.info("data parallel (%s): process %d of %d (%s, %s)", _strategy, rank(), world_size(), backend,
             compute.describe())


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def artifact_identity() -> dict | None:
    """What of the scale-out a trained artifact's numbers depend on (cache keys of trained ensemble members): the
    number of processes, whose gradients are summed in another order than one process's; None for one process."""
    if not active():
        return None
    return {"processes": world_size(), "strategy": _strategy}


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
    """This process's part of an evaluation's indices (its counts are then summed with ``sum_of_shares``). FSDP:
    all of them (every forward of a sharded model is a collective all processes join in step)."""
    return idx[rank()::world_size()] if active() and not sharded() else idx


def sum_of_shares(count: float) -> float:
    """The whole evaluation's count from each process's count over its ``share_of``."""
    return count if sharded() else sum_over_processes(count)


class _Call(nn.Module):
    """A module whose forward is ``forward(batch)``: DDP wraps modules, the loops call closures (an
    architecture's phase may train through any function of its modules)."""

    def __init__(self, model: nn.Module, forward: Callable):
        super().__init__()
        self.model = model  # registered: DDP averages the gradients of its parameters
        self.__dict__["_forward"] = forward  # not registered again when it is the model itself

    def forward(self, batch):
        return self._forward(batch)


class Trainer:
    """What a training loop trains through (``data_parallel``): ``forward`` for the loss, ``evaluate`` for the
    validation inside the loop, ``params`` for the optimiser; ``close()`` ends it (after the best state is back)."""

    def __init__(self, forward: Callable, evaluate: Callable, params: list[nn.Parameter],
                 close: Callable[[], None] = lambda: None):
        self.forward, self.evaluate, self.params, self.close = forward, evaluate, params, close
        self.optimizer_step: Callable | None = None  # the loop's update rule over ``params`` (harness/archs/train.py)


def data_parallel(model: nn.Module, forward: Callable, params: list[nn.Parameter]) -> Trainer:
    """How a loop trains ``params`` of ``model`` through ``forward``: ``forward`` itself with one process; with
    several, through DDP (``parallel.strategy=ddp``: the backward then averages the gradients of ``model``'s
    trainable parameters across them) or FSDP2 (``fsdp``: ``params`` become their shards until ``close``).

    ``find_unused_parameters`` / ``reduce_scatter_unused_params``: a phase trains a subset, and routed architectures
    leave experts unused in a batch (DDP warns once per process when a phase happens to use every parameter)."""
    if not active():
        return Trainer(forward, forward, params)
    if _strategy == "fsdp":
        return _fully_sharded(model, forward, params)
    ddp = torch.nn.parallel.DistributedDataParallel(_Call(model, forward), find_unused_parameters=True)
    return Trainer(ddp, forward, params)


def _fully_sharded(model: nn.Module, forward: Callable, params: list[nn.Parameter]) -> Trainer:
    """FSDP2 over ``model`` for one training loop: each transformers decoder layer a unit, the rest the root.

    FSDP2 shards in place (new parameters, a subclass of each unit's class, forward hooks); torch has no inverse, so
    ``close`` gathers every parameter's shards back into the RM's original parameter objects (the ones the
    architecture and its later phases hold) and takes FSDP off the units: their class, hooks and the composable-API
    state fully_shard left on them (torch.distributed._composable_state), so a later loop may shard them again."""
    from torch.distributed._composable.contract import REGISTRY_KEY, STATE_KEY
    from torch.distributed._composable_state import _module_state_mapping
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    root = _Call(model, forward)
    originals = dict(root.named_parameters())
    scalars = [name.removeprefix("model.") for name, p in originals.items() if p.dim() == 0]
    if scalars:
        raise ValueError(f"parallel=fsdp: {type(model).__name__} has scalar parameters ({', '.join(scalars)}), "
                         f"which FSDP2 cannot shard; train it with parallel=ddp")
    trained = {id(p) for p in params}
    layer_classes = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    units = [m for m in model.modules() if type(m).__name__ in layer_classes]
    device = next(iter(originals.values())).device
    mesh = init_device_mesh(device.type, (world_size(),))
    classes = [(m, type(m)) for m in [*units, root]]
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(root, mesh=mesh)
    root.set_reduce_scatter_unused_params(True)
    # The root's output (RewardOutput's reward, a view) is only read out of place by the loops (.float(),
    # .chunk): FSDP2's warning against in-place ops on it does not apply.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    shards = dict(root.named_parameters())
    sharded_params = [shards[name] for name, p in originals.items() if id(p) in trained]

    def close() -> None:
        for unit, _ in classes:  # a unit may still hold its gathered parameters after a forward
            unit.reshard()
        # A collective: every process, the same order. Cloned: a gathered tensor may be a view of FSDP's padded
        # all-gather buffer, which safetensors refuses to export (and which would keep the whole buffer alive).
        full = {name: p.full_tensor().clone() if isinstance(p, DTensor) else p.detach()
                for name, p in root.named_parameters()}
        for unit, cls in classes:
            state = fully_shard.state(unit)
            handles = [state._pre_forward_hook_handle, state._post_forward_hook_handle]
            for group in state._fsdp_param_groups:  # state-dict hooks that would re-shard a later load_state_dict
                handles += [fsdp_param._post_load_hook_handle for fsdp_param in group.fsdp_params]
                handles += [*group._module_to_pre_save_state_dict_hook_handle.values(),
                            *group._module_to_pre_load_state_dict_hook_handle.values()]
            for handle in handles:
                handle.remove()
            unit.__class__ = cls
            for key in (STATE_KEY, REGISTRY_KEY):
                unit.__dict__.pop(key, None)
            _module_state_mapping.pop(unit, None)
        for m in root.modules():
            for flag in ("_is_fsdp_managed_module", "_fsdp_use_orig_params"):
                m.__dict__.pop(flag, None)
        with torch.no_grad():
            for name, param in originals.items():
                owner, _, attr = name.rpartition(".")
                param.data = full[name]
                root.get_submodule(owner)._parameters[attr] = param

    log.info("fsdp: %d decoder layers and the rest of %s sharded over %d processes", len(units),
             type(model).__name__, world_size())
    return Trainer(root, root, sharded_params, close)
