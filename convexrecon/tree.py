"""Helpers that map over solver variables: a tensor or a tuple of tensors."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["tree_map", "tree_map2", "tree_inner", "tree_norm", "tree_zeros_like", "tree_axpy"]


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
    return torch.sum((x.conj() * y).real) if x.is_complex() else torch.sum(x * y)


def tree_norm(x) -> torch.Tensor:
    """Euclidean norm over all leaves."""
    return torch.sqrt(tree_inner(x, x))


def tree_zeros_like(x):
    """Zeros of the same structure."""
    return tree_map(torch.zeros_like, x)


def tree_axpy(a: float, x, y):
    """``a * x + y`` leafwise."""
    return tree_map2(lambda u, v: a * u + v, x, y)
