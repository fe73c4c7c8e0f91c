"""The total-variation program ``min_x 1/2 ||A x - y||^2 + lam ||D x||_{2,1}``.

Solved by :class:`convexrecon.solvers.pdhg.PDHG` (Condat--Vu), whose variables are
the image ``x`` and the dual ``p`` of ``D x``.

Certificate (relative primal-dual gap). For a dual-feasible ``p``
(``||p||_{2,inf} <= lam``) and the residual ``r = [A x - y; sqrt(mu) x]``, Fenchel--Young
gives for every ``x'``::

    P(x') >= -s^2 ||r||^2 / 2 - s Re<r, y> + s Re<e, x'>,   e = A^H r + D^H p,

for ``s`` in ``[0, 1]``. With ``|Re<e, x*>| <= ||e|| ||x*||`` and ``||x*||`` taken as
``max(||x||, ||A^H y|| / L)`` this is a lower bound on the optimum (exact once ``e = 0``, the
stationarity condition); the certificate is ``(P(x) - bound) / P(x)``, with ``s``
chosen best. Every quantity comes from ``A.N x``, ``A^H y`` and ``||y||^2``.
Given ``x`` alone, ``p`` is estimated by projected gradient on
``min ||A^H r + D^H p||`` (cheap: only ``D`` is applied).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator, prod
from convexrecon.operators.linalg import power_method
from convexrecon.programs._cvx import as_cvx_vector, make_variable
from convexrecon.programs.base import Program
from convexrecon.programs.terms import CvxpyTerm, LeastSquares, _abs2, _rinner, _sumsq

__all__ = ["TV", "TVProgram"]


class TV:
    """``lam * ||D x||_{2,1}`` with ``D`` a finite-difference operator of output shape
    ``(ndim, *ishape)``.

    Isotropic: the 2-norm over the ``ndim`` direction axis per pixel (the modulus
    of complex entries included); anisotropic: the sum of moduli. Not prox-friendly:
    PDHG uses :meth:`project_dual`, the prox of the conjugate of ``lam ||.||_{2,1}``.

    Args:
        lam: weight.
        op: the finite-difference operator ``D``
            (``convexrecon.operators.finite_diff.FiniteDifference``).
        isotropic: isotropic (default) or anisotropic TV.
    """

    def __init__(self, lam: float, *, op: Operator, isotropic: bool = True) -> None:
        self.lam = check_positive(lam, "lam", strict=False)
        if not isinstance(op, Operator):
            raise InputError(f"op: expected a finite-difference Operator, got {type(op).__name__}")
        if len(op.oshape) != len(op.ishape) + 1 or op.oshape[1:] != op.ishape:
            raise InputError(f"op: expected oshape (ndim, *ishape) with ishape {op.ishape}, got {op.oshape}")
        self.D = op
        self.isotropic = bool(isotropic)
        self._dnorm2: float | None = None
        self._gdim = -len(op.ishape) - 1

    def pixel_norms(self, z: torch.Tensor) -> torch.Tensor:
        """Per-group norms of ``z = D x`` (isotropic: over the direction axis)."""
        return torch.sqrt(_abs2(z).sum(dim=self._gdim)) if self.isotropic else z.abs()

    def norm(self, z: torch.Tensor) -> torch.Tensor:
        """``lam * ||z||_{2,1}`` of gradients ``z``."""
        return self.lam * torch.sum(self.pixel_norms(z))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.D.forward(x))

    def project_dual(self, p: torch.Tensor) -> torch.Tensor:
        """Projection onto ``{p : ||p||_{2,inf} <= lam}`` (the prox of the conjugate,
        for any step)."""
        nrm = self.pixel_norms(p)
        if self.isotropic:
            nrm = nrm.unsqueeze(self._gdim)
        return p / (nrm / max(self.lam, 1e-300)).clamp_min_(1.0)

    def op_norm2(self) -> float:
        """``||D||^2`` by the power method (cached, with a 1% margin)."""
        if self._dnorm2 is None:
            self._dnorm2 = 1.01 * power_method(self.D.N, iters=200, tol=1e-8)
        return self._dnorm2

    def to_cvxpy(self, expr, shape) -> CvxpyTerm:
        import cvxpy as cp

        from convexrecon.operators.linalg import to_dense

        dd = to_dense(self.D).cpu().numpy()
        n = prod(self.D.ishape)
        nd = self.D.oshape[0]
        dv = as_cvx_vector(expr).apply(dd)  # per slice: direction-major blocks of n
        nb = dv.size // (nd * n)
        base = (np.arange(nb) * nd * n)[:, None] + np.arange(n)[None, :]
        parts = [dv.take((base + d * n).reshape(-1)) for d in range(nd)]
        if self.isotropic:
            comps = [c for p in parts for c in (p.re, p.im) if c is not None]
            return self.lam * cp.sum(cp.norm(cp.vstack(comps), 2, axis=0)), []
        return self.lam * sum(cp.sum(p.modulus()) for p in parts), []


class TVProgram(Program):
    """``min_x 1/2 ||A x - y||_W^2 + mu/2 ||x||^2 + lam ||D x||_{2,1}``.

    Args:
        A: the encoding operator.
        y: data ``(*batch, *A.oshape)``.
        lam: the TV weight.
        D: finite differences with ``D.ishape == A.ishape``, ``D.oshape = (ndim, *ishape)``.
        isotropic: isotropic (default) or anisotropic TV.
        weights, mu, lipschitz: see :class:`~convexrecon.programs.terms.LeastSquares`.
        dual_iters: projected-gradient iterations of the dual estimate used when the
            certificate is given ``x`` alone.
    """

    def __init__(self, A: Operator, y: torch.Tensor, lam: float, D: Operator, *,
                 isotropic: bool = True, weights: torch.Tensor | None = None,
                 mu: float = 0.0, lipschitz: float | None = None,
                 dual_iters: int = 300) -> None:
        if not isinstance(D, Operator) or D.ishape != A.ishape:
            raise InputError(f"D: expected a finite-difference Operator with ishape {A.ishape}, "
                             f"got {getattr(D, 'ishape', type(D).__name__)}")
        self.smooth = LeastSquares(A, y, weights=weights, mu=mu, lipschitz=lipschitz)
        self.tv = TV(lam, op=D, isotropic=isotropic)
        self.shape = self.smooth.shape
        self.dtype = A.dtype
        self.dual_iters = int(dual_iters)
        self._xscale: float | None = None

    def zeros(self) -> torch.Tensor:
        """The zero image (the default starting point)."""
        return torch.zeros(self.shape, dtype=self.dtype, device=self.smooth.aty.device)

    @staticmethod
    def _primal(x) -> torch.Tensor:
        return x[0] if isinstance(x, tuple) else x

    def value(self, x, *, normal_x: torch.Tensor | None = None,
              dx: torch.Tensor | None = None) -> float:
        """Objective at ``x`` (or at the image of a pair ``(x, p)``)."""
        x = self._primal(x)
        nx = self.smooth.normal(x) if normal_x is None else normal_x
        dx = self.tv.D.forward(x) if dx is None else dx
        return float(self.smooth.value_from_normal(x, nx)) + float(self.tv.norm(dx))

    def estimate_dual(self, x: torch.Tensor, *, grad: torch.Tensor | None = None,
                      dx: torch.Tensor | None = None, iters: int | None = None) -> torch.Tensor:
        """A feasible ``p`` that approximately minimises ``||grad f(x) + D^H p||``."""
        D = self.tv.D
        g = self.smooth.grad(x) if grad is None else grad
        dx = D.forward(x) if dx is None else dx
        nrm = self.tv.pixel_norms(dx)
        if self.tv.isotropic:
            nrm = nrm.unsqueeze(-len(D.ishape) - 1)
        p = self.tv.project_dual(self.tv.lam * dx / nrm.clamp_min(1e-30))
        step = 1.0 / self.tv.op_norm2()
        q, t = p, 1.0
        for _ in range(self.dual_iters if iters is None else int(iters)):
            # projected FISTA with gradient restart
            p_new = self.tv.project_dual(q - step * D.forward(g + D.adjoint(q)))
            d = p_new - p
            if float(_rinner(q - p_new, d)) > 0:
                t = 1.0
            t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            q = p_new + ((t - 1.0) / t_new) * d
            p, t = p_new, t_new
        return p

    def gap(self, x, *, normal_x: torch.Tensor | None = None,
            dx: torch.Tensor | None = None) -> tuple[float, float]:
        """``(primal, lower_bound)`` for ``x`` or a pair ``(x, p)`` (see the module)."""
        pair = isinstance(x, tuple)
        if pair and len(x) != 2:
            raise InputError(f"x: expected an image or a pair (x, p), got a tuple of {len(x)}")
        xi = self._primal(x)
        ls, D = self.smooth, self.tv.D
        nx = ls.normal(xi) if normal_x is None else normal_x
        dx = D.forward(xi) if dx is None else dx
        f = max(float(ls.value_from_normal(xi, nx)), 0.0)
        g = ls.grad_from_normal(xi, nx)
        p = self.tv.project_dual(x[1]) if pair else self.estimate_dual(xi, grad=g, dx=dx)
        e = g + D.adjoint(p)
        slack = math.sqrt(float(_sumsq(e))) * max(math.sqrt(float(_sumsq(xi))), self._scale())
        c = float(_rinner(xi, ls.aty)) - ls.y_norm2 + slack
        primal = f + float(self.tv.norm(dx))
        s = -c / (2.0 * f) if f > 0 else 1.0
        s = min(max(s, 0.0), 1.0)
        return primal, -s * s * f - s * c

    def _scale(self) -> float:
        """A floor for the unknown ``||x*||``: ``||A^H y|| / L`` (the size of a
        gradient step from 0), so that the bound does not collapse at ``x = 0``."""
        if self._xscale is None:
            self._xscale = math.sqrt(float(_sumsq(self.smooth.aty))) / self.smooth.lipschitz()
        return self._xscale

    def certificate(self, x, *, normal_x: torch.Tensor | None = None,
                    dx: torch.Tensor | None = None) -> float:
        """Relative primal-dual gap for ``x`` or a pair ``(x, p)``."""
        primal, lower = self.gap(x, normal_x=normal_x, dx=dx)
        return max(primal - lower, 0.0) / max(abs(primal), 1e-300)

    def to_cvxpy(self):
        """``(problem, to_x)``, exact; InputError beyond ``CVXPY_LIMIT`` unknowns."""
        import cvxpy as cp

        var, back = make_variable(self.shape, self.dtype, "TVProgram")
        o1, c1 = self.smooth.to_cvxpy(var, self.shape)
        o2, c2 = self.tv.to_cvxpy(var, self.shape)
        device = self.smooth.aty.device
        return cp.Problem(cp.Minimize(o1 + o2), c1 + c2), lambda: back(device)
