"""MoDL-K: ``K`` unrolled iterations of one shared denoiser and CG data consistency.

``x_0 = A^H y``; for ``k = 1..K``: ``z = R(x_{k-1})`` and
``x_k = (A^H A + mu I)^-1 (A^H y + mu z)`` by
:func:`~convexrecon.solvers.cg.cg_solve` (its backward is one more CG solve, so the
tape holds the denoiser's activations of every iteration but no CG iterates).
The weights of ``R`` and ``mu`` are shared across iterations and trained end to end.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from convexrecon.errors import InputError
from convexrecon.implicit.maps import batch_dims_of
from convexrecon.nets.denoisers import build_denoiser
from convexrecon.operators.base import Operator
from convexrecon.solvers.cg import cg_solve

__all__ = ["MoDL", "build_modl", "UNROLLED"]


class MoDL(nn.Module):
    """``forward(y, A) -> x`` with ``iterations`` shared-weight denoise + CG-DC steps.

    Args:
        denoiser: complex image -> complex image module.
        iterations: ``K`` (the seed uses 5 and 10).
        mu: initial data-consistency weight (learned, kept positive).
        cg_iter, cg_tol: the CG solves.
    """

    def __init__(self, denoiser: nn.Module, *, iterations: int = 5, mu: float = 0.05,
                 cg_iter: int = 20, cg_tol: float = 1e-6) -> None:
        super().__init__()
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise InputError(f"iterations: expected an integer >= 1, got {iterations!r}")
        if not float(mu) > 0:
            raise InputError(f"mu: expected a number > 0, got {mu!r}")
        self.denoiser = denoiser
        self.iterations = iterations
        self.log_mu = nn.Parameter(torch.tensor(math.log(float(mu))))
        self.cg_iter, self.cg_tol = int(cg_iter), float(cg_tol)

    def forward(self, y: torch.Tensor, A: Operator) -> torch.Tensor:
        nb = batch_dims_of(y, A)
        aty = A.adjoint(y)
        normal = A.N
        x = aty
        for _ in range(self.iterations):
            mu = torch.exp(self.log_mu).to(aty.real.dtype)
            x = cg_solve(normal, aty + mu * self.denoiser(x), mu=mu, batch_dims=nb,
                         max_iter=self.cg_iter, tol=self.cg_tol)
        return x


UNROLLED = ("modl",)


def build_modl(*, iterations: int = 5, denoiser: str = "cnn",
               denoiser_options: dict[str, Any] | None = None, mu: float = 0.05, cg_iter: int = 20,
               cg_tol: float = 1e-6) -> MoDL:
    """A :class:`MoDL` from plain options (the checkpoint factory)."""
    net = build_denoiser(denoiser, **dict(denoiser_options or {}))
    return MoDL(net, iterations=iterations, mu=mu, cg_iter=cg_iter, cg_tol=cg_tol)
