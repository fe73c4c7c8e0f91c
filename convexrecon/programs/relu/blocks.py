"""Norms and proxes over the block variables of the convex two-layer programs.

One helper per idea, for every program of the family:

* the group norm and its prox (block soft-thresholding) over chosen axes: the ``d``
  axis of a data-matrix block ``(P, d, c)``, or the ``(C, k, k)`` filter axes of a
  convolutional one;
* the nuclear norm and its prox over ``(d, c)`` blocks (singular-value
  soft-thresholding; the group norm when ``c = 1``).
"""

from __future__ import annotations

from typing import Sequence

import torch

from convexrecon.programs.terms import group_soft_threshold, singular_value_threshold

__all__ = ["group_norms", "prox_group", "nuclear_norms", "prox_nuclear", "FILTER_DIMS"]

FILTER_DIMS = (-3, -2, -1)
"""The axes of one convolutional filter ``(C, k, k)``."""


def group_norms(U: torch.Tensor, dims: Sequence[int] = (1,)) -> torch.Tensor:
    """Euclidean norms over ``dims`` (default the ``d`` axis: ``(P, d, c) -> (P, c)``)."""
    return torch.linalg.vector_norm(U, dim=tuple(dims))


def prox_group(U: torch.Tensor, t: float | torch.Tensor,
               dims: Sequence[int] = (1,)) -> torch.Tensor:
    """Block soft-thresholding over ``dims`` with threshold ``t`` (a number, or a
    tensor broadcasting against the group norms kept as size-1 axes)."""
    return group_soft_threshold(U, t, dims=tuple(dims))


def nuclear_norms(U: torch.Tensor) -> torch.Tensor:
    """Nuclear norm of each ``(d, c)`` block: ``(P, d, c) -> (P,)``."""
    if U.shape[-1] == 1:
        return group_norms(U)[:, 0]
    return torch.linalg.svdvals(U).sum(dim=-1)


def prox_nuclear(U: torch.Tensor, t: float) -> torch.Tensor:
    """Singular-value soft-thresholding of each ``(d, c)`` block."""
    if U.shape[-1] == 1:
        return prox_group(U, t)
    return singular_value_threshold(U, t)[0]
