"""Regularised least-squares programs: L1-wavelet, Tikhonov (SENSE) and friends.

:class:`RegularizedLeastSquares` is ``1/2 ||A x - y||_W^2 + mu/2 ||x||^2 + g(x)``
with ``g`` a prox term (or none). Its certificate is

* the relative duality gap when ``g`` is a norm-like term (``L1``, ``WaveletL1``,
  ``GroupL1``, ``Nuclear``): the dual point is the scaled residual
  ``z = s (A x - y)``, with every quantity taken from ``A.N x``, ``A^H y`` and
  ``||y||^2`` (no forward pass), and ``s`` the best scale that keeps the dual
  feasible;
* ``||A^H (A x - y) + mu x|| / ||A^H y||`` without a regulariser (Tikhonov / SENSE);
* the prox-gradient mapping of :class:`CompositeProgram` otherwise.

``value`` and ``certificate`` accept ``normal_x = A.N x`` (and the regulariser's
value) so that solvers which already hold them pay nothing extra.

Batches: with ``batch_dims = k`` the first ``k`` axes of ``x`` index independent
systems. ``value_per_system`` and ``certificate_per_system`` give one value each
(the duality gap of every system with its own dual scale), so a batch is certified
exactly as its systems are one by one; ``value`` is their sum and ``certificate``
the value for the whole variable as one system (``k = 0``).
"""

from __future__ import annotations

import math

import torch

from convexrecon._checks import check_trailing_shape
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.programs._cvx import make_variable
from convexrecon.programs._systems import system_rinner, system_sumsq
from convexrecon.programs.composite import CompositeProgram, ProxTerm
from convexrecon.programs.duality import best_scale, scale_limit
from convexrecon.programs.terms import LeastSquares, WaveletL1, _rinner, _sumsq

__all__ = ["RegularizedLeastSquares", "L1WaveletProgram", "TikhonovProgram", "gap_from_normal"]


def gap_from_normal(ls: LeastSquares, x: torch.Tensor, nx: torch.Tensor,
                    reg_value: float, dual_norm) -> tuple[float, float]:
    """``(primal, dual)`` of ``ls + g`` for a norm-like ``g`` from ``nx = A.N x``.

    ``dual_norm(v)`` is the dual norm of the regulariser (``g*`` is the indicator of
    ``dual_norm <= 1``). With the stacked residual ``r = [A x - y; sqrt(mu) x]``:
    ``||r||^2 = 2 f(x)``, ``A^H r = grad f(x)``, ``Re<r, y> = Re<x, A^H y> - ||y||^2``,
    and the dual value of ``z = s r`` is ``-s^2 ||r||^2 / 2 - s Re<r, y>``.
    """
    f = max(float(ls.value_from_normal(x, nx)), 0.0)
    grad = ls.grad_from_normal(x, nx)
    c = float(_rinner(x, ls.aty)) - ls.y_norm2
    primal = f + reg_value
    _, dual = best_scale(-c, 2.0 * f, scale_limit(float(dual_norm(grad))))
    return primal, dual


def gap_per_system(ls: LeastSquares, x: torch.Tensor, nx: torch.Tensor, reg_value: torch.Tensor,
                   dual_norm: torch.Tensor, batch_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gap_from_normal` for every system: ``(primal, dual)`` float64 tensors of
    shape ``batch[:batch_dims]``, given every system's regulariser value and the dual
    norm of its gradient (each system gets its own dual scale ``s``)."""
    k = batch_dims
    f = ls.values_from_normal(x, nx, k).clamp_min(0.0)
    c = system_rinner(x, ls.aty, k).double() - ls.y_norm2_per_system(k)
    primal = f + reg_value
    dn = dual_norm.double()
    s_max = torch.where(dn > 0, 1.0 / torch.where(dn > 0, dn, 1.0), math.inf)
    s = torch.where(f > 0, -c / (2.0 * torch.where(f > 0, f, 1.0)), s_max)
    s = torch.minimum(s.clamp_min(0.0), s_max)
    dual = torch.where(torch.isfinite(s), -s * s * f - s * c, -math.inf)
    return primal, dual


class RegularizedLeastSquares(CompositeProgram):
    """``min_x 1/2 ||A x - y||_W^2 + mu/2 ||x||^2 + g(x)``.

    Args:
        A: the encoding operator.
        y: data ``(*batch, *A.oshape)``.
        reg: the prox term ``g`` (``None`` for plain least squares).
        weights, mu, lipschitz: see :class:`~convexrecon.programs.terms.LeastSquares`.
    """

    def __init__(self, A: Operator, y: torch.Tensor, reg: ProxTerm | None = None, *,
                 weights: torch.Tensor | None = None, mu: float = 0.0,
                 lipschitz: float | None = None) -> None:
        if reg is not None and not isinstance(reg, ProxTerm):
            raise InputError(f"reg: expected a ProxTerm or None, got {type(reg).__name__}")
        super().__init__(LeastSquares(A, y, weights=weights, mu=mu, lipschitz=lipschitz), reg)
        self.smooth: LeastSquares
        self.shape = self.smooth.shape
        self.dtype = A.dtype

    @property
    def name(self) -> str:
        return type(self).__name__

    def check_x(self, x, what: str = "x") -> torch.Tensor:
        """Raise InputError unless ``x`` is a tensor of this program's shape."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{what}: expected a tensor of shape {self.shape}, got {type(x).__name__}")
        check_trailing_shape(x, self.shape, what)
        if tuple(x.shape) != self.shape:
            raise InputError(f"{what}: expected shape {self.shape}, got {tuple(x.shape)}")
        return x

    def zeros(self) -> torch.Tensor:
        """The zero variable (the default starting point)."""
        return torch.zeros(self.shape, dtype=self.dtype, device=self.smooth.aty.device)

    def value(self, x, *, normal_x: torch.Tensor | None = None,
              reg_value: float | torch.Tensor | None = None) -> float:
        nx = self.smooth.normal(x) if normal_x is None else normal_x
        v = float(self.smooth.value_from_normal(x, nx))
        if self.reg is not None:
            v += float(self.reg.value(x) if reg_value is None else reg_value.sum()
                       if isinstance(reg_value, torch.Tensor) else reg_value)
        return v

    def _reg_per_system(self, x, reg_value, k: int) -> torch.Tensor:
        if self.reg is None:
            return torch.zeros(self.shape[:k], dtype=torch.float64, device=x.device)
        rv = self.reg.value(x, k) if reg_value is None else reg_value
        return torch.as_tensor(rv, device=x.device).double()

    def value_per_system(self, x: torch.Tensor, batch_dims: int, *,
                         normal_x: torch.Tensor | None = None,
                         reg_value: torch.Tensor | None = None) -> torch.Tensor:
        """The objective of every system (float64, shape ``x.shape[:batch_dims]``);
        ``reg_value`` is then per system too."""
        nx = self.smooth.normal(x) if normal_x is None else normal_x
        return (self.smooth.values_from_normal(x, nx, batch_dims)
                + self._reg_per_system(x, reg_value, batch_dims))

    def duality_gap(self, x: torch.Tensor, *, normal_x: torch.Tensor | None = None,
                    reg_value: float | torch.Tensor | None = None) -> tuple[float, float]:
        """``(primal, dual)`` values; needs a norm-like regulariser (``dual_norm``)."""
        primal, dual = self.duality_gap_per_system(x, 0, normal_x=normal_x, reg_value=reg_value)
        return float(primal), float(dual)

    def duality_gap_per_system(self, x: torch.Tensor, batch_dims: int, *,
                               normal_x: torch.Tensor | None = None,
                               reg_value: torch.Tensor | None = None):
        """``(primal, dual)`` of every system (float64 tensors of the batch shape)."""
        if self.reg is None or not hasattr(self.reg, "dual_norm_per_system"):
            raise InputError(f"reg: expected a norm-like term with dual_norm, got {type(self.reg).__name__}")
        nx = self.smooth.normal(x) if normal_x is None else normal_x
        rv = self._reg_per_system(x, reg_value, batch_dims)
        dn = self.reg.dual_norm_per_system(self.smooth.grad_from_normal(x, nx), batch_dims)
        return gap_per_system(self.smooth, x, nx, rv, dn, batch_dims)

    def certificate(self, x, *, normal_x: torch.Tensor | None = None,
                    reg_value: float | torch.Tensor | None = None) -> float:
        return float(self.certificate_per_system(x, 0, normal_x=normal_x, reg_value=reg_value))

    def certificate_per_system(self, x: torch.Tensor, batch_dims: int, *,
                               normal_x: torch.Tensor | None = None,
                               reg_value: torch.Tensor | None = None) -> torch.Tensor:
        """The certificate of every system (float64, shape ``x.shape[:batch_dims]``):
        the relative duality gap for norm-like regularisers, the relative gradient
        without one, the prox-gradient mapping otherwise."""
        k = batch_dims
        nx = self.smooth.normal(x) if normal_x is None else normal_x
        if self.reg is None:
            g = self.smooth.grad_from_normal(x, nx)
            den = torch.sqrt(system_sumsq(self.smooth.aty, k).double())
            return torch.sqrt(system_sumsq(g, k).double()) / torch.where(den > 0, den, 1.0)
        if hasattr(self.reg, "dual_norm_per_system"):
            primal, dual = self.duality_gap_per_system(x, k, normal_x=nx, reg_value=reg_value)
            return (primal - dual).clamp_min(0.0) / primal.abs().clamp_min(1e-300)
        return self.gradient_mapping_per_system(x, k, grad=self.smooth.grad_from_normal(x, nx))

    def to_cvxpy(self):
        """``(problem, to_x)``; exact (dense normal of ``A`` per slice and dense
        ``W``); InputError beyond ``CVXPY_LIMIT`` unknowns."""
        import cvxpy as cp

        var, back = make_variable(self.shape, self.dtype, self.name)
        obj, cons = self.smooth.to_cvxpy(var, self.shape)
        if self.reg is not None:
            if not hasattr(self.reg, "to_cvxpy"):
                raise InputError(f"reg: {type(self.reg).__name__} has no to_cvxpy")
            o2, c2 = self.reg.to_cvxpy(var, self.shape)
            obj, cons = obj + o2, cons + c2
        device = self.smooth.aty.device
        return cp.Problem(cp.Minimize(obj), cons), lambda: back(device)


class L1WaveletProgram(RegularizedLeastSquares):
    """``min_x 1/2 ||A x - y||^2 + lam ||W x||_1`` with ``W`` orthogonal.

    Args:
        A: the encoding operator.
        y: data ``(*batch, *A.oshape)``.
        lam: the L1 weight (on the scaled problem).
        W: an orthogonal operator with ``W.ishape == A.ishape``.
        weights, mu, lipschitz: see :class:`~convexrecon.programs.terms.LeastSquares`.
    """

    def __init__(self, A: Operator, y: torch.Tensor, lam: float, W: Operator, *,
                 weights: torch.Tensor | None = None, mu: float = 0.0,
                 lipschitz: float | None = None) -> None:
        if not isinstance(W, Operator) or W.ishape != A.ishape:
            raise InputError(f"W: expected an orthogonal Operator with ishape {A.ishape}, "
                             f"got {getattr(W, 'ishape', type(W).__name__)}")
        super().__init__(A, y, WaveletL1(lam, wavelet=W), weights=weights, mu=mu,
                         lipschitz=lipschitz)
        self.W = W

    def to_cvxpy(self):
        """``(problem, to_x)`` in the wavelet coefficients ``c = W x`` (exact, since
        ``W`` is orthogonal: ``x = W^H c``); the L1 term is then separable, which
        keeps the conic problem sparse (about 3x faster with CLARABEL)."""
        import cvxpy as cp

        from convexrecon.operators.linalg import to_dense

        var, back = make_variable(self.shape, self.dtype, self.name)
        wd = to_dense(self.W).cpu().numpy()
        obj, cons = self.smooth.to_cvxpy(var, self.shape, basis=wd.conj().T)
        obj = obj + self.reg.lam * cp.sum(var.modulus())
        device = self.smooth.aty.device

        def to_x() -> torch.Tensor:
            with torch.no_grad():
                return self.W.adjoint(back(device))

        return cp.Problem(cp.Minimize(obj), cons), to_x


class TikhonovProgram(RegularizedLeastSquares):
    """``min_x 1/2 ||A x - y||_W^2 + mu/2 ||x||^2`` (SENSE; solved by CG).

    Certificate: ``||A^H (A x - y) + mu x|| / ||A^H y||``.
    """

    def __init__(self, A: Operator, y: torch.Tensor, *, mu: float = 0.0,
                 weights: torch.Tensor | None = None, lipschitz: float | None = None) -> None:
        super().__init__(A, y, None, weights=weights, mu=mu, lipschitz=lipschitz)
