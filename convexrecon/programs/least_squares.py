"""The smooth data term :class:`LeastSquares`: ``1/2 ||A x - y||_W^2 + mu/2 ||x||^2``.

It only ever applies the operator's (cheap, specialised) normal ``A.N``: ``A^H y``
and ``||y||^2`` are computed once, and the value comes from
``1/2 <x, A.N x> - Re<x, A^H y> + 1/2 ||y||^2`` so that value and gradient share one
``A.N``. Batches of independent systems get per-system values and Lipschitz
constants (a batched power method). Re-exported by :mod:`convexrecon.programs.terms`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from convexrecon._checks import check_positive, check_trailing_shape
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator, prod
from convexrecon.programs._cvx import as_cvx_vector, dense_normals
from convexrecon.programs._systems import power_method_per_system, system_rinner, system_sum, system_sumsq
from convexrecon.programs.composite import SmoothTerm
from convexrecon.tree import real_inner

__all__ = ["LeastSquares", "CvxpyTerm"]

CvxpyTerm = tuple[Any, list]  # (cvxpy expression or 0.0, list of constraints)


def _rinner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re <a, b>`` summed over everything (:func:`convexrecon.tree.real_inner`)."""
    return real_inner(a, b)


def _sumsq(a: torch.Tensor) -> torch.Tensor:
    return _rinner(a, a)



class _Weighted(Operator):
    """``diag(sqrt(w)) A`` for real non-negative data weights ``w`` on the output."""

    def __init__(self, a: Operator, weights: torch.Tensor) -> None:
        super().__init__(a.ishape, a.oshape, dtype=a.dtype)
        self.a = a
        self.w = weights
        self.sqrt_w = torch.sqrt(weights)

    def _forward(self, x):
        return self.sqrt_w * self.a._forward(x)

    def _adjoint(self, y):
        return self.a._adjoint(self.sqrt_w * y)

    def _normal(self, x):
        return self.a._adjoint(self.w * self.a._forward(x))


class LeastSquares(SmoothTerm):
    """``1/2 ||A x - y||_W^2 + mu/2 ||x||^2`` through the operator's normal only.

    Args:
        A: the encoding operator.
        y: data of shape ``(*batch, *A.oshape)``.
        weights: optional real non-negative weights broadcastable to ``y`` (the
            operator is wrapped as ``sqrt(W) A``; its specialised normal is lost).
        mu: Tikhonov weight ``>= 0``.
        lipschitz: a known Lipschitz constant of ``A.N`` (skips the power method);
            ``mu`` is added to it.
        power_iters: iterations of the power method for :meth:`lipschitz`.
    """

    def __init__(self, A: Operator, y: torch.Tensor, *, weights: torch.Tensor | None = None,
                 mu: float = 0.0, lipschitz: float | None = None, power_iters: int = 100) -> None:
        if not isinstance(A, Operator):
            raise InputError(f"A: expected an Operator, got {type(A).__name__}")
        if not isinstance(y, torch.Tensor):
            raise InputError(f"y: expected a tensor, got {type(y).__name__}")
        check_trailing_shape(y, A.oshape, "y")
        if y.is_complex() and not A.dtype.is_complex:
            raise InputError(f"y: expected a real tensor for the real operator {A.name}, got {y.dtype}")
        y = y.to(A.dtype)
        self.mu = check_positive(mu, "mu", strict=False)
        if weights is not None:
            if not isinstance(weights, torch.Tensor) or weights.is_complex():
                raise InputError(f"weights: expected a real tensor, got {getattr(weights, 'dtype', type(weights))}")
            if bool((weights < 0).any()):
                raise InputError("weights: expected non-negative values, got negative entries")
            try:
                torch.broadcast_shapes(weights.shape, y.shape)
            except RuntimeError as exc:
                raise InputError(f"weights: expected a shape broadcastable to {tuple(y.shape)}, "
                                 f"got {tuple(weights.shape)}") from exc
            w = weights.to(device=y.device, dtype=y.real.dtype)
            A = _Weighted(A, w)
            y = torch.sqrt(w) * y
        self.op: Operator = A
        self.y = y
        with torch.no_grad():
            self.aty = A.adjoint(y)
            self.y_norm2 = float(_sumsq(y))
        self.batch_shape: tuple[int, ...] = tuple(self.aty.shape[: self.aty.ndim - len(A.ishape)])
        self.shape: tuple[int, ...] = (*self.batch_shape, *A.ishape)
        self._lip = None if lipschitz is None else check_positive(lipschitz, "lipschitz")
        self._lips: dict[int, torch.Tensor] = {}
        self._ynorms: dict[int, torch.Tensor] = {}
        self.power_iters = int(power_iters)

    # the affine gradient ``grad = H x - A^H y`` with ``H = A.N + mu I``
    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A.N x`` (without ``mu``)."""
        return self.op.normal(x)

    def grad_from_normal(self, x: torch.Tensor, nx: torch.Tensor) -> torch.Tensor:
        """The gradient given ``nx = A.N x``."""
        g = nx - self.aty
        return g + self.mu * x if self.mu else g

    def value_from_normal(self, x: torch.Tensor, nx: torch.Tensor) -> torch.Tensor:
        """The value given ``nx = A.N x`` (no operator application)."""
        v = 0.5 * _rinner(x, nx) - _rinner(x, self.aty) + 0.5 * self.y_norm2
        return v + 0.5 * self.mu * _sumsq(x) if self.mu else v

    def y_norm2_per_system(self, batch_dims: int) -> torch.Tensor:
        """``||y||^2`` of every system (float64, shape ``batch_shape[:batch_dims]``)."""
        if batch_dims not in self._ynorms:
            n = len(self.op.oshape)
            yy = system_sumsq(self.y, self.y.ndim - n).double()  # y's own batch shape
            yy = yy.expand(self.batch_shape) if yy.shape != self.batch_shape else yy
            self._ynorms[batch_dims] = system_sum(yy, batch_dims)
        return self._ynorms[batch_dims]

    def values_from_normal(self, x: torch.Tensor, nx: torch.Tensor, batch_dims: int) -> torch.Tensor:
        """The value of every system given ``nx = A.N x`` (float64, shape
        ``batch_shape[:batch_dims]``)."""
        k = batch_dims
        v = (0.5 * system_rinner(x, nx, k).double() - system_rinner(x, self.aty, k).double()
             + 0.5 * self.y_norm2_per_system(k))
        return v + 0.5 * self.mu * system_sumsq(x, k).double() if self.mu else v

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.value_from_normal(x, self.normal(x))

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.grad_from_normal(x, self.normal(x))

    def value_and_grad(self, x: torch.Tensor):
        nx = self.normal(x)
        return self.value_from_normal(x, nx), self.grad_from_normal(x, nx)

    def lipschitz(self) -> float:
        """``lambda_max(A.N) + mu`` by the power method (cached), times 1.01 for safety
        (the power method approaches from below); a given ``lipschitz`` is used as is."""
        if self._lip is None:
            self._lip = float(self.lipschitz_per_system(0)) - self.mu
        return self._lip + self.mu

    def lipschitz_per_system(self, batch_dims: int) -> torch.Tensor:
        """The Lipschitz constant of every system's gradient (float64, shape
        ``batch_shape[:batch_dims]``): a batched power method
        (:func:`~convexrecon.programs._systems.power_method_per_system`, each system
        as if alone), times 1.01, plus ``mu``; a given ``lipschitz`` for every system."""
        if batch_dims not in self._lips:
            shape = self.batch_shape[:batch_dims]
            if self._lip is not None:
                lam = torch.full(shape, self._lip, dtype=torch.float64, device=self.aty.device)
            else:
                lam = 1.01 * power_method_per_system(
                    self.op.N, self.batch_shape, batch_dims, iters=self.power_iters, tol=1e-7,
                    device=self.aty.device)
            self._lips[batch_dims] = lam
        return self._lips[batch_dims] + self.mu

    def to_cvxpy(self, expr, shape: Sequence[int], *, basis: np.ndarray | None = None) -> CvxpyTerm:
        """``1/2 <x, A.N x> - Re<A^H y, x> + 1/2||y||^2 + mu/2||x||^2`` with the dense
        normal of each slice: exactly this term.

        ``basis``: optional matrix ``B`` (``n x n``, ``n = prod(A.ishape)``); the
        cvxpy vector then holds coefficients ``c`` with ``x = B c`` per slice.
        """
        if tuple(shape) != self.shape:
            raise InputError(f"shape: expected the data term's variable shape {self.shape}, got {tuple(shape)}")
        vec = as_cvx_vector(expr)
        mats = dense_normals(self.op, self.batch_shape, device=self.aty.device)
        n = prod(self.op.ishape)
        b = self.aty.detach().cpu().numpy().reshape(-1, n)
        if self.mu:
            mats = [m + self.mu * np.eye(n) for m in mats]
        if basis is not None:
            bh = basis.conj().T
            mats = [bh @ m @ basis for m in mats]
            b = b @ basis.conj()
        obj = 0.5 * vec.hermitian_form(mats) - vec.real_inner(b) + 0.5 * self.y_norm2
        return obj, []
