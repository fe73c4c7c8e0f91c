"""The DEQ maps ``f(z; y, A)`` (``nn.Module``s holding the learned denoiser).

- :class:`ProxGradMap`: ``f(z) = R(z - eta * A^H (A z - y))``, a proximal-gradient
  step with a learned denoiser. ``A^H A`` runs through ``autograd_apply`` (its
  backward is its adjoint), so VJPs and double backward store no FFT activations.
- :class:`CGDCMap`: exact data consistency, ``f(z) = (A^H A + mu I)^-1 (A^H y + mu R(z))``
  by :func:`~convexrecon.solvers.cg.cg_solve` (also twice differentiable).

``bind(y, A)`` returns the map ``z -> f(z)`` of one batch and ``init(y, A)`` the
zero-filled start ``A^H y``. ``y`` is ``(*batch, *A.oshape)`` and ``z``
``(*batch, *A.ishape)``; samples stay independent.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.solvers.cg import cg_solve

__all__ = ["ProxGradMap", "CGDCMap", "batch_dims_of"]


def batch_dims_of(y: torch.Tensor, A: Operator) -> int:
    """Leading batch axes of k-space ``y`` for operator ``A`` (checks the shapes)."""
    if not isinstance(A, Operator):
        raise InputError(f"A: expected an Operator, got {type(A).__name__}")
    if not isinstance(y, torch.Tensor) or not y.is_complex():
        raise InputError(f"y: expected complex k-space (*batch, {', '.join(map(str, A.oshape))}), "
                         f"got {getattr(y, 'dtype', type(y).__name__)}")
    k = len(A.oshape)
    if y.ndim < k or tuple(y.shape[y.ndim - k:]) != tuple(A.oshape):
        raise InputError(f"y: expected trailing shape {tuple(A.oshape)} (A.oshape), got {tuple(y.shape)}")
    return y.ndim - k


def log_parameter(value: float, name: str, *, learn: bool) -> nn.Parameter:
    """``log(value)`` as a parameter (kept positive through the exponential); frozen
    unless ``learn``."""
    if not float(value) > 0:
        raise InputError(f"{name}: expected a number > 0, got {value!r}")
    return nn.Parameter(torch.tensor(math.log(float(value))), requires_grad=learn)


class ProxGradMap(nn.Module):
    """``f(z) = R(z - eta (A^H A z - A^H y))``.

    Args:
        denoiser: complex image -> complex image module.
        eta: the gradient step (``||A^H A|| = 1`` on scaled problems, so ``eta <= 1``
            keeps the gradient step non-expansive).
        learn_eta: make ``eta`` a parameter.
    """

    def __init__(self, denoiser: nn.Module, *, eta: float = 1.0, learn_eta: bool = False) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.log_eta = log_parameter(eta, "eta", learn=learn_eta)

    def init(self, y: torch.Tensor, A: Operator) -> torch.Tensor:
        batch_dims_of(y, A)
        return A.adjoint(y)

    def bind(self, y: torch.Tensor, A: Operator) -> Callable[[torch.Tensor], torch.Tensor]:
        batch_dims_of(y, A)
        aty = A.adjoint(y).detach()
        normal = A.N
        eta = torch.exp(self.log_eta)

        def f(z: torch.Tensor) -> torch.Tensor:
            return self.denoiser(z - eta.to(z.real.dtype) * (normal.autograd_apply(z) - aty))

        return f


class CGDCMap(nn.Module):
    """``f(z) = (A^H A + mu I)^-1 (A^H y + mu R(z))``: denoise, then exact data consistency.

    Args:
        denoiser: complex image -> complex image module.
        mu: the data-consistency weight (learned when ``learn_mu``; kept positive).
        cg_iter, cg_tol: the CG solves (forward and backward).
    """

    def __init__(self, denoiser: nn.Module, *, mu: float = 0.05, learn_mu: bool = True,
                 cg_iter: int = 20, cg_tol: float = 1e-6) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.log_mu = log_parameter(mu, "mu", learn=learn_mu)
        self.cg_iter, self.cg_tol = int(cg_iter), float(cg_tol)

    @property
    def mu(self) -> torch.Tensor:
        return torch.exp(self.log_mu)

    def init(self, y: torch.Tensor, A: Operator) -> torch.Tensor:
        batch_dims_of(y, A)
        return A.adjoint(y)

    def bind(self, y: torch.Tensor, A: Operator) -> Callable[[torch.Tensor], torch.Tensor]:
        nb = batch_dims_of(y, A)
        aty = A.adjoint(y).detach()
        normal = A.N

        def f(z: torch.Tensor) -> torch.Tensor:
            mu = self.mu.to(z.real.dtype)
            return cg_solve(normal, aty + mu * self.denoiser(z), mu=mu, batch_dims=nb,
                            max_iter=self.cg_iter, tol=self.cg_tol)

        return f
