"""The statistics record every fixed-point solver returns.

A solve of ``z = f(z)`` runs on a batch: ``z0`` has ``batch_dims`` leading axes, and
every sample has its own residual, its own stopping and its own lowest-residual
iterate. :class:`FixedPointStats` keeps all of it per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["FixedPointStats", "REASONS"]

#: why a sample stopped
REASONS = ("converged", "max_iter", "diverged", "stagnated")


@dataclass
class FixedPointStats:
    """What a fixed-point solve did, per sample.

    Attributes:
        solver: ``"picard"``, ``"anderson"`` or ``"broyden"``.
        residuals: ``(T, *batch)`` absolute residuals ``||f(z_k) - z_k||`` of every
            evaluated iterate (row 0 is ``z0``); NaN once a sample has stopped.
        rel_residuals: ``(T, *batch)`` the same over ``||f(z_k)||``.
        iterations: ``(*batch,)`` updates applied to each sample.
        reason: one of :data:`REASONS` per sample (flattened batch order).
        best_iter: ``(*batch,)`` index of the returned (lowest-residual) iterate.
        best_residual, best_rel_residual: ``(*batch,)`` its residuals.
        nfe: batched evaluations of ``f``.
        inverse_jacobian: Broyden only: the estimate ``B`` of ``(J_f - I)^-1`` at the
            returned iterate (see :class:`~convexrecon.fixedpoint.broyden.BroydenInverse`).
    """

    solver: str
    residuals: torch.Tensor
    rel_residuals: torch.Tensor
    iterations: torch.Tensor
    reason: tuple[str, ...]
    best_iter: torch.Tensor
    best_residual: torch.Tensor
    best_rel_residual: torch.Tensor
    nfe: int
    inverse_jacobian: Any = field(default=None, repr=False)

    @property
    def batch_shape(self) -> torch.Size:
        return self.iterations.shape

    def _by_reason(self, name: str) -> torch.Tensor:
        flags = torch.tensor([r == name for r in self.reason], dtype=torch.bool)
        return flags.reshape(self.batch_shape)

    @property
    def converged(self) -> torch.Tensor:
        """``(*batch,)`` bool: the sample met the tolerance."""
        return self._by_reason("converged")

    @property
    def diverged(self) -> torch.Tensor:
        """``(*batch,)`` bool: the residual blew up or became NaN/Inf."""
        return self._by_reason("diverged")

    def summary(self) -> dict[str, Any]:
        """Plain numbers for logs: mean/max iterations, worst residuals, counts."""
        it = self.iterations.to(torch.float64)
        return {
            "solver": self.solver,
            "iterations_mean": float(it.mean()) if it.numel() else 0.0,
            "iterations_max": int(self.iterations.max()) if it.numel() else 0,
            "residual_max": float(self.best_residual.max()) if it.numel() else 0.0,
            "rel_residual_max": float(self.best_rel_residual.max()) if it.numel() else 0.0,
            "converged": int(self.converged.sum()),
            "diverged": int(self.diverged.sum()),
            "samples": int(it.numel()),
            "nfe": self.nfe,
        }
