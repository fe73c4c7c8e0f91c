"""Per-system reductions for batches of independent problems.

A variable ``(*batch, *shape)`` with ``batch_dims = k`` holds ``prod(batch[:k])``
independent systems: its first ``k`` axes index them, and every other axis belongs
to one system (a system may itself be a block of slices). Reductions here return
one value per system, a tensor of shape ``batch[:k]`` (0-d for ``k = 0``, the whole
variable as one system). Solvers use them for per-system steps, momentum, restarts,
stopping and certificates, so that a batch gives what its systems give one by one.
"""

from __future__ import annotations

from typing import Sequence

import torch

from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.operators.linalg import randn_like_shape
from convexrecon.tree import real_inner

__all__ = ["check_batch_dims", "system_sum", "system_max", "system_rinner", "system_sumsq",
           "per_system", "power_method_per_system"]


def check_batch_dims(batch_dims, most: int) -> int:
    """``batch_dims`` as an int in ``[0, most]``, else InputError."""
    if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or not 0 <= batch_dims <= most:
        raise InputError(f"batch_dims: expected an integer in [0, {most}] (leading axes that "
                         f"index independent systems), got {batch_dims!r}")
    return batch_dims


def _rest(t: torch.Tensor, k: int) -> tuple[int, ...]:
    return tuple(range(k, t.ndim))


def system_sum(t: torch.Tensor, k: int) -> torch.Tensor:
    """Sum over every axis after the first ``k`` (shape ``t.shape[:k]``)."""
    dims = _rest(t, k)
    return t.sum(dim=dims) if dims else t.clone()


def system_max(t: torch.Tensor, k: int) -> torch.Tensor:
    """Max over every axis after the first ``k``; 0 for empty systems."""
    if t.numel() == 0:
        return torch.zeros(t.shape[:k], dtype=t.dtype, device=t.device)
    dims = _rest(t, k)
    return t.amax(dim=dims) if dims else t.clone()


def system_rinner(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """``Re <a, b>`` per system (in the variables' precision;
    :func:`convexrecon.tree.real_inner`)."""
    return real_inner(a, b, k)


def system_sumsq(a: torch.Tensor, k: int) -> torch.Tensor:
    """``||a||^2`` per system."""
    return system_rinner(a, a, k)


def per_system(v: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """A per-system tensor ``(*batch[:k])`` shaped to broadcast against ``like``
    (numbers pass through)."""
    if not isinstance(v, torch.Tensor):
        return v
    return v.reshape(tuple(v.shape) + (1,) * (like.ndim - v.ndim))


def power_method_per_system(op: Operator, batch: Sequence[int], batch_dims: int, *,
                            iters: int = 100, tol: float = 1e-7, seed: int = 0,
                            device=None) -> torch.Tensor:
    """``lambda_max`` of a Hermitian PSD ``op`` for every system of a batch.

    The start vector of every system is the one
    :func:`~convexrecon.operators.linalg.power_method` draws for one system
    (``seed``, shape ``(*batch[k:], *op.ishape)``), and each system stops at its own
    relative ``tol``: a batch gives the values its systems give one by one. Returns a
    float64 tensor of shape ``batch[:batch_dims]``.
    """
    k = batch_dims
    lead, rest = tuple(batch[:k]), tuple(batch[k:])
    g = torch.Generator(device="cpu").manual_seed(seed)
    one = randn_like_shape((*rest, *op.ishape), dtype=op.dtype, generator=g).to(device)
    x = one.expand(*lead, *one.shape).clone()
    x = x / per_system(torch.sqrt(system_sumsq(x, k)), x)
    lam = torch.zeros(lead, dtype=torch.float64, device=x.device)
    live = torch.ones(lead, dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for _ in range(iters):
            z = op.forward(x)
            new = torch.sqrt(system_sumsq(z, k)).double()
            safe = torch.where(new > 0, new, torch.ones_like(new))
            x = torch.where(per_system(live, x), z / per_system(safe.to(z.real.dtype), z), x)
            done = (new == 0) | ((new - lam).abs() <= tol * new)
            lam = torch.where(live, new, lam)
            live = live & ~done
            if not bool(live.any()):
                break
    return lam
