"""Collective operations over torch.distributed processes, for any layer.

The convex full-batch solvers (:mod:`convexrecon.solvers.sharded`) and the training
loop (:mod:`convexrecon.training.distributed`, which re-exports these) share them.
Every helper is a no-op in a single process (no process group initialised), so code
can call ``all_reduce_sum(partial)`` unconditionally. Complex tensors are reduced
through their real view.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from convexrecon.errors import InputError

__all__ = ["is_distributed", "rank", "world_size", "is_main_process", "barrier",
           "all_reduce_sum", "all_reduce_mean", "broadcast"]


def is_distributed() -> bool:
    """True when a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _reduce(tensor: torch.Tensor, *, average: bool) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"all_reduce: expected a torch.Tensor, got {type(tensor).__name__}")
    out = tensor.detach().clone()
    if not is_distributed():
        return out
    buf = torch.view_as_real(out) if out.is_complex() else out
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    if average:
        out /= dist.get_world_size()
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (a new tensor; complex tensors work)."""
    return _reduce(tensor, average=False)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all processes (a new tensor; complex tensors work)."""
    return _reduce(tensor, average=True)


def broadcast(tensor: torch.Tensor, *, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``tensor`` on every process (a new tensor)."""
    out = tensor.detach().clone()
    if is_distributed():
        buf = torch.view_as_real(out) if out.is_complex() else out
        dist.broadcast(buf, src=src)
    return out
