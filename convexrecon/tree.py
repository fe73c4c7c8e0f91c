"""Helpers that map over solver variables: a tensor or a tuple of tensors."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["real_inner", "tree_map", "tree_map2", "tree_inner", "tree_norm", "tree_zeros_like",
           "tree_axpy"]


def real_inner(a: torch.Tensor, b: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """``Re <a, b>`` summed over every axis after the first ``batch_dims`` (one value
    per system, shape ``a.shape[:batch_dims]``; 0-d for the whole tensor). The one
    real inner product of the project: complex tensors take one fused pass."""
    k = batch_dims
    if a.is_complex():
        n = a.shape[:k]
        va = a.reshape(*n, -1) if a.is_contiguous() else a.contiguous().reshape(*n, -1)
        vb = b.reshape(*n, -1) if b.is_contiguous() else b.contiguous().reshape(*n, -1)
        return torch.linalg.vecdot(va, vb, dim=-1).real
    t = a * b
    dims = tuple(range(k, t.ndim))
    return t.sum(dim=dims) if dims else t


def tree_map(fn: Callable[[torch.Tensor], torch.Tensor], x):
    """Apply ``fn`` to a tensor or to each tensor of a tuple."""
    if isinstance(x, tuple):
        return tuple(tree_map(fn, v) for v in x)
    return fn(x)


def tree_map2(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x, y):
    """Apply ``fn`` pairwise to two variables of the same structure."""
    if isinstance(x, tuple):
        return tuple(tree_map2(fn, a, b) for a, b in zip(x, y))
    return fn(x, y)


def tree_inner(x, y) -> torch.Tensor:
    """Real part of ``sum <x_i, y_i>``."""
    if isinstance(x, tuple):
        return sum(tree_inner(a, b) for a, b in zip(x, y))
    return real_inner(x, y)


def tree_norm(x) -> torch.Tensor:
    """Euclidean norm over all leaves."""
    return torch.sqrt(tree_inner(x, x))


def tree_zeros_like(x):
    """Zeros of the same structure."""
    return tree_map(torch.zeros_like, x)


def tree_axpy(a: float, x, y):
    """``a * x + y`` leafwise."""
    return tree_map2(lambda u, v: a * u + v, x, y)
