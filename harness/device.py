"""Where a job computes and in what precision: the top-level ``device`` and ``precision`` keys.

``device``: auto | cpu | cuda | cuda:N | mps. ``auto`` is the CUDA GPU when torch sees one, else the CPU. With
several processes (torchrun, harness/parallel.py) ``auto`` and ``cuda`` mean the GPU of the process's LOCAL_RANK.

``precision``: fp32 | bf16 | fp16. Weights always stay fp32: they are the master copy the optimiser updates.
bf16 and fp16 run forwards (and the loss) under ``torch.autocast``; fp16 also scales the loss with a
``GradScaler`` so that small gradients do not underflow to 0 (bf16 has fp32's range and needs none).

fp32 is no autocast and no scaler at all, so fp32 on the CPU runs exactly the code of a build without this
module (the CI regression baseline is bit-identical).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N | mps"
# precision -> the dtype autocast computes in (fp32: no autocast).
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Padding-free training (harness/packing.py): auto = on CUDA when the backbone can; on = wherever it can; off.
PACKING_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class Compute:
    """A resolved (device, precision) pair and what follows from it; built by ``resolve_compute``."""

    device: torch.device
    precision: str = "fp32"
    packing: str = "off"  # one of PACKING_CHOICES, read by harness.packing.use_packing

    @property
    def autocast_dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @property
    def is_fp32(self) -> bool:
        return self.precision == "fp32"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context forwards and losses run under: nothing in fp32, ``torch.autocast`` otherwise."""
        if self.is_fp32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 only: a loss scaler (bf16 and fp32 have the range to need none)."""
        if self.precision != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    def to(self, x):
        """``x`` (a tensor, a module, or anything with ``.to(device)``) on this device; a no-op on its own device."""
        return x.to(self.device)

    def artifact_identity(self, *, reward_forwards: bool = False) -> dict | None:
        """What of this compute a cached artifact's numbers depend on, None for the CPU in fp32 (the default).

        The device's type, not its index (cuda:0 and cuda:1 compute the same numbers), and the precision: a bf16
        autocast run rounds differently from an fp32 one, and a GPU's kernels sum in another order than the
        CPU's. ``reward_forwards``: the artifact is trained through the reward forwards of harness/packing.py,
        whose packed rows agree with padded batches only up to float rounding, so ``packing`` enters as well
        (on the CPU only packing=on packs: auto and off leave the key alone).

        On the CPU the torch thread count enters too when it is not 1: a matrix product split over threads sums
        in another order (1e-7 apart after 20 pre-training steps, more as training goes on), so an artifact built
        by a 2-thread job is not the one a 1-thread job would have built. One thread keeps the keys of before
        (the paper suite's and the tests')."""
        packs = reward_forwards and (self.packing == "on" or (self.packing == "auto" and self.device.type != "cpu"))
        threads = torch.get_num_threads() if self.device.type == "cpu" else 1
        if self.device.type == "cpu" and self.is_fp32 and not packs and threads == 1:
            return None
        identity = {"device": self.device.type, "precision": self.precision}
        if reward_forwards:
            identity["packing"] = self.packing
        if threads != 1:
            identity["threads"] = threads
        return identity

    def keyed(self, spec: dict, *, reward_forwards: bool = False) -> dict:
        """``spec`` (a cache key's content) with this compute's ``artifact_identity`` under "compute": a bf16 GPU
        artifact is never reused by a CPU fp32 job, nor the other way round. For the CPU in fp32 on one thread it is
        ``spec`` itself, so every key such a job had before devices existed stays the same (existing caches)."""
        identity = self.artifact_identity(reward_forwards=reward_forwards)
        return spec if identity is None else {**spec, "compute": identity}

    def describe(self) -> str:
        where = str(self.device)
        if self.device.type == "cuda":
            where += f" ({torch.cuda.get_device_name(self.device)})"
        how = "fp32" if self.is_fp32 else f"{self.precision} autocast over fp32 weights"
        return f"{where}, {how}"


# The default of code that is handed no Compute (library use, tests): today's behaviour.
CPU = Compute(torch.device("cpu"))


def resolve_compute(device: str = "auto", precision: str = "fp32", packing: str = "auto",
                    local_rank: int | None = None) -> Compute:
    """Check the keys and find the device; every error names the key, before anything is trained.

    ``local_rank`` (default: the LOCAL_RANK environment variable torchrun sets) picks the GPU of this process
    when ``device`` is auto or cuda and several processes share a machine."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} must be one of {list(PRECISIONS)}")
    if packing not in PACKING_CHOICES:
        raise ValueError(f"packing={packing!r} must be one of {list(PACKING_CHOICES)}")
    if local_rank is None and os.environ.get("LOCAL_RANK") is not None:
        local_rank = int(os.environ["LOCAL_RANK"])
    where = str(device).strip().lower()
    if where == "auto":
        where = "cuda" if torch.cuda.is_available() else "cpu"
    if where == "cpu":
        resolved = torch.device("cpu")
    elif where == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device={device!r}: no Apple GPU (MPS) is available to this torch build; "
                             f"use device=cpu or device=auto")
        resolved = torch.device("mps")
    elif where == "cuda" or where.startswith("cuda:"):
        resolved = _cuda(device, where, local_rank)
    else:
        raise ValueError(f"device={device!r} must be one of {DEVICE_CHOICES}")
    if precision == "bf16" and resolved.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision=bf16: {torch.cuda.get_device_name(resolved)} has no bf16 support; "
                         f"use precision=fp16 or precision=fp32")
    return Compute(resolved, precision, packing)


def _cuda(device: str, where: str, local_rank: int | None) -> torch.device:
    if not torch.cuda.is_available():
        build = torch.version.cuda and f"CUDA {torch.version.cuda}" or "no CUDA (a CPU-only build)"
        raise ValueError(f"device={device!r}: no CUDA GPU is visible (torch {torch.__version__}, built with "
                         f"{build}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                         f"use device=cpu or device=auto")
    count = torch.cuda.device_count()
    if where == "cuda":
        index = local_rank if local_rank is not None else 0
        if index >= count:
            raise ValueError(f"device={device!r}: process LOCAL_RANK={index} but only {count} GPU(s) are visible; "
                             f"start at most {count} processes per machine")
        return torch.device("cuda", index)
    suffix = where.removeprefix("cuda:")
    if not suffix.isdigit():
        raise ValueError(f"device={device!r} must be one of {DEVICE_CHOICES}")
    if local_rank is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"device={device!r} with several processes: each process needs its own GPU; use "
                         f"device=cuda (process k takes GPU LOCAL_RANK=k)")
    index = int(suffix)
    if index >= count:
        raise ValueError(f"device={device!r}: only {count} GPU(s) are visible (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def place(compute: Compute, *parts) -> None:
    """Give ``compute`` to each part that runs a model (it declares a ``compute`` attribute: reward models, the
    local labeler, policies); the part moves its modules and batches there itself. A module's submodules that
    declare one too (UMM's MoE inside the merged RM) get it as well: they train and score themselves."""
    for part in parts:
        if part is None:
            continue
        for piece in part.modules() if isinstance(part, nn.Module) else (part,):
            if isinstance(getattr(type(piece), "compute", None), Compute) or piece is part and hasattr(part, "compute"):
                piece.compute = compute


def compute_of(cfg) -> Compute:
    """The job config's ``device``, ``precision`` and ``packing`` keys, resolved (defaults: auto, fp32, auto)."""
    return resolve_compute(str(cfg.get("device", "auto")), str(cfg.get("precision", "fp32")),
                           str(cfg.get("packing", "auto")))
