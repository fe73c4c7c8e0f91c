"""torch.distributed plumbing for training and full-batch convex solvers.

Under ``torchrun`` each process calls :func:`init_from_env` once; it reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` and starts a process group with NCCL when CUDA is
available (one GPU per process, ``cuda:LOCAL_RANK``) and gloo otherwise. Outside
torchrun (no ``WORLD_SIZE``) it starts nothing and reports a single process, so the
same script runs either way. :func:`init_process_group` does the same for processes
started some other way (``torch.multiprocessing.spawn`` with ``init_method="file://..."``).

:func:`~convexrecon.training.fit` notices an initialised process group by itself: it
wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`, shards each
epoch's seeded permutation with a :class:`~torch.utils.data.DistributedSampler`
(``batch_size`` is then the per-process batch), averages the logged losses over ranks,
and lets rank 0 alone write checkpoints, ``metrics.json`` and TensorBoard files.

The all-reduce helpers are no-ops in a single process, so a convex full-batch solver
can call ``all_reduce_sum(partial_gradient)`` unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from ..collectives import (all_reduce_mean, all_reduce_sum, barrier, broadcast,
                           is_distributed, is_main_process, rank, world_size)
from ..errors import InputError

__all__ = [
    "DistInfo",
    "init_from_env",
    "init_process_group",
    "info",
    "is_distributed",
    "is_main_process",
    "rank",
    "world_size",
    "barrier",
    "all_reduce_sum",
    "all_reduce_mean",
    "broadcast",
    "wrap_ddp",
    "unwrap",
    "make_sampler",
    "cleanup",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, and its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _device_for(backend: str, local_rank: int) -> torch.device:
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def info() -> DistInfo:
    """The current process's :class:`DistInfo` (a single CPU process when none is initialised)."""
    if not is_distributed():
        return DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
    backend = dist.get_backend()
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def init_from_env(*, backend: str | None = None) -> DistInfo:
    """Start the process group from torchrun's environment variables.

    Without ``WORLD_SIZE`` in the environment (a plain ``python script.py``) nothing is
    started and a single-process :class:`DistInfo` is returned.
    """
    if is_distributed():
        return info()
    if "WORLD_SIZE" not in os.environ:
        return info()
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank_ = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank_))
    except (KeyError, ValueError) as exc:
        raise InputError(f"torchrun environment: expected integer RANK and WORLD_SIZE ({exc})") from None
    backend = backend or _default_backend()
    device = _device_for(backend, local_rank)
    kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://", "rank": rank_, "world_size": world}
    if backend == "nccl":
        kwargs["device_id"] = device
    dist.init_process_group(**kwargs)
    return DistInfo(rank_, world, local_rank, device, backend)


def init_process_group(
    *, rank: int, world_size: int, init_method: str, backend: str | None = None, local_rank: int | None = None
) -> DistInfo:
    """Start a process group explicitly (e.g. ``init_method="file:///tmp/x"`` under spawn)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"init_process_group: expected 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    backend = backend or _default_backend()
    if backend not in ("gloo", "nccl"):
        raise InputError(f"init_process_group: backend must be 'gloo' or 'nccl', got {backend!r}")
    local_rank = rank if local_rank is None else local_rank
    device = _device_for(backend, local_rank)
    dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, device, backend)


def wrap_ddp(model: nn.Module, **ddp_kwargs: Any) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel when a process group is running.

    The model must already sit on this process's device. In a single process the
    model is returned unchanged.
    """
    if not is_distributed() or isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError("wrap_ddp: the model has no trainable parameters")
    device = next(model.parameters()).device
    if device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device.index])
    return nn.parallel.DistributedDataParallel(model, **ddp_kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def make_sampler(dataset: Dataset, *, seed: int, shuffle: bool = True, drop_last: bool = False) -> DistributedSampler:
    """A :class:`DistributedSampler` for this process (one replica outside a process group).

    Each epoch's order is a permutation seeded by ``seed + epoch`` (call
    ``sampler.set_epoch(epoch)``); rank ``r`` of ``w`` takes every ``w``-th index from ``r``.
    """
    return DistributedSampler(
        dataset, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed, drop_last=drop_last
    )


def cleanup() -> None:
    """Destroy the process group if one is running."""
    if is_distributed():
        dist.destroy_process_group()
