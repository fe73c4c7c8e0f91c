"""PDHG (Condat--Vu) for ``min_x 1/2 ||A x - y||^2 + lam ||D x||_{2,1}``.

The data term enters through its gradient (no inversion of ``A``), TV through the
prox of its conjugate (a projection)::

    x+ = x - tau (grad f(x) + D^H p)
    p+ = proj_{||.||_{2,inf} <= lam}(p + sigma D (2 x+ - x))

with ``tau = 0.99 / (L_f / 2 + sigma ||D||^2)`` (Condat 2013, Vu 2013). Per
iteration: one ``A.N`` (applied to ``x+``; ``grad f`` is affine), one ``D`` and one
``D^H``; ``D x`` and ``D^H p`` are kept so that the extrapolation
``D (2 x+ - x)`` and the residuals are free. The certificate is the program's
relative primal-dual gap of the pair ``(x, p)``.

The best primal/dual balance ``sigma`` depends on the data and ``lam``. With
``adaptive=True`` (default) it is tuned on the fly by residual balancing (Goldstein,
Li, Yuan, Esser & Baraniuk 2015): when the primal residual exceeds the dual one by
a factor ``1.5``, ``sigma`` shrinks (so ``tau`` grows), and vice versa, by a factor
``1 - alpha`` with ``alpha`` decaying geometrically (0.5, times 0.95 per change),
which keeps the convergence guarantee of the fixed-step method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import math

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.programs.tv import TVProgram
from convexrecon.solvers.base import Solver, State

__all__ = ["PDHGState", "PDHG"]


@dataclass
class PDHGState(State):
    """State of PDHG: dual ``p`` (shape of ``D x``), ``A.N x``, ``D x``, ``D^H p``,
    the current steps and the adaptation factor ``alpha``."""

    p: Any = None
    normal_x: Any = None
    dx: Any = None
    dtp: Any = None
    sigma: float = 0.0
    tau: float = 0.0
    alpha: float = 0.5


class PDHG(Solver[PDHGState]):
    """Condat--Vu primal-dual iteration for a :class:`TVProgram`.

    Args:
        program: the TV program.
        sigma: dual step; default ``L_f / (2 ||D||^2)`` scaled by ``dual_scale``.
        dual_scale: multiplies the default ``sigma`` (the primal/dual balance).
        tau: primal step; default ``0.99 / (L_f / 2 + sigma ||D||^2)`` (a given
            ``tau`` disables ``adaptive``).
        adaptive: residual balancing of ``sigma`` (and ``tau``).
        max_iter, tol, check_every: see :class:`~convexrecon.solvers.base.Solver`.

    ``Result.x`` is the image; ``Result.state.p`` the dual variable.
    """

    def __init__(self, program: TVProgram, *, sigma: float | None = None,
                 tau: float | None = None, dual_scale: float = 1.0, adaptive: bool = True,
                 max_iter: int = 200, tol: float = 0.0, check_every: int = 1) -> None:
        super().__init__(max_iter=max_iter, tol=tol, check_every=check_every)
        if not isinstance(program, TVProgram):
            raise InputError(f"program: expected a TVProgram, got {type(program).__name__}")
        self.program = program
        lf = program.smooth.lipschitz()
        dn2 = program.tv.op_norm2()
        self._lf, self._dn2 = lf, dn2
        self.adaptive = bool(adaptive) and tau is None
        self.sigma = (check_positive(sigma, "sigma") if sigma is not None
                      else check_positive(dual_scale, "dual_scale") * lf / (2.0 * dn2))
        bound = 1.0 / (0.5 * lf + self.sigma * dn2)
        if tau is not None:
            tau = check_positive(tau, "tau")
            if tau > bound:
                raise InputError(f"tau: expected at most 1 / (L_f/2 + sigma ||D||^2) = {bound:g} "
                                 f"for convergence, got {tau:g}")
        self.tau = 0.99 * bound if tau is None else tau

    def init(self, x0: torch.Tensor | None = None, p0: torch.Tensor | None = None) -> PDHGState:
        prog = self.program
        if x0 is None:
            x = prog.zeros()
        else:
            if not isinstance(x0, torch.Tensor) or tuple(x0.shape) != prog.shape:
                raise InputError(f"x0: expected a tensor of shape {prog.shape}, "
                                 f"got {getattr(x0, 'shape', type(x0).__name__)}")
            x = x0.to(prog.dtype).clone()
        dx = prog.tv.D.forward(x)
        p = torch.zeros_like(dx) if p0 is None else prog.tv.project_dual(p0.to(dx.dtype))
        if p.shape != dx.shape:
            raise InputError(f"p0: expected shape {tuple(dx.shape)}, got {tuple(p.shape)}")
        return PDHGState(x=x, p=p, normal_x=prog.smooth.normal(x), dx=dx,
                         dtp=prog.tv.D.adjoint(p), sigma=self.sigma, tau=self.tau)

    def _tau_of(self, sigma: float) -> float:
        return 0.99 / (0.5 * self._lf + sigma * self._dn2)

    def step(self, state: PDHGState) -> PDHGState:
        prog = self.program
        ls, tv = prog.smooth, prog.tv
        sigma, tau = state.sigma, state.tau
        g = ls.grad_from_normal(state.x, state.normal_x)
        x = state.x - tau * (g + state.dtp)
        dx = tv.D.forward(x)
        p = tv.project_dual(state.p + sigma * (2.0 * dx - state.dx))
        nx = ls.normal(x)
        dtp = tv.D.adjoint(p)
        new = PDHGState(x=x, it=state.it + 1, certificate=state.certificate, p=p,
                        normal_x=nx, dx=dx, dtp=dtp, sigma=sigma, tau=tau, alpha=state.alpha)
        if self.adaptive and state.alpha > 1e-3:
            # primal residual (x - x+)/tau - D^H (p - p+) + grad f(x+) - grad f(x)
            rp = (state.x - x) / tau - (state.dtp - dtp) + (nx - state.normal_x)
            if ls.mu:
                rp = rp + ls.mu * (x - state.x)
            rd = (state.p - p) / sigma - (state.dx - dx)
            a, b = float(torch.linalg.vector_norm(rp)), float(torch.linalg.vector_norm(rd))
            if math.isfinite(a) and math.isfinite(b):
                if a > 1.5 * b:
                    new.sigma = sigma * (1.0 - state.alpha)
                elif b > 1.5 * a:
                    new.sigma = sigma / (1.0 - state.alpha)
                if new.sigma != sigma:
                    new.tau = self._tau_of(new.sigma)
                    new.alpha = state.alpha * 0.95
        return new

    def objective(self, state: PDHGState) -> float:
        return self.program.value(state.x, normal_x=state.normal_x, dx=state.dx)

    def certificate(self, state: PDHGState) -> float:
        return self.program.certificate((state.x, state.p), normal_x=state.normal_x, dx=state.dx)
