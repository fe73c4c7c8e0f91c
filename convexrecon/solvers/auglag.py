"""Augmented Lagrangian for the cone-constrained convolutional two-layer program.

:class:`ConvReLUAugLag` minimises
:class:`~convexrecon.programs.relu.ConvTwoLayerReLUCone` by an augmented Lagrangian
on the cone constraints ``(2 D_i - 1) * conv(X, V_ic) >= 0`` (and ``W``), with the
project's FISTA (exact group soft-thresholding prox, gradient restart) on each
subproblem, warm started at the previous outer iterate, its step ``1 / (2 ||A||^2 +
rho ||K||^2)`` from the Lipschitz constant of the rho-dependent smooth part. Every
piece of the run lives in its :class:`AugLagState` (variables, multipliers, penalty,
its cap, the last gap and violation, the start time); warm starts go through
``init(x0, multipliers=...)``.

**Penalty policy.** The multipliers are updated after every subproblem; the penalty
``rho`` starts at ``2 ||A||^2 / ||K||^2`` (the penalty part of the Lipschitz constant
equals the data part) and doubles only when the relative violation is the larger
part of the certificate *and* did not halve since the previous outer iteration. The
subproblems get a fixed number of FISTA iterations, so each one is solved only
approximately; the multiplier update ``mu - rho z`` scales that error by ``rho``, and
an inaccurate ``mu`` is what the duality gap measures. The previous rule (double
whenever the violation did not halve) drove ``rho`` to its 1000-fold cap within a
dozen outer iterations on a layer-wise step: the inner steps shrank a thousandfold
and the relative gap climbed to about 0.9 and stayed there. Growing ``rho`` only
while the violation dominates keeps the two parts of the certificate roughly
balanced. (It is not monotone: on a layer-wise step without data consistency, a run
of doublings while the primal was infeasible, its gap clipped at 0, let the gap jump
back to about 0.2 before it fell again. Waiting 5 outer iterations between doublings
avoided that there, but slowed the small cvxpy-checked problems 2-fold.) The cap,
1000 times the start, is relative to the data Lipschitz constant and only a
safeguard.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.programs.composite import CompositeProgram, ProxTerm, SmoothTerm
from convexrecon.programs.relu.blocks import FILTER_DIMS, group_norms, prox_group
from convexrecon.programs.relu.conv_cone import ConvTwoLayerReLUCone
from convexrecon.solvers.base import Solver, State
from convexrecon.solvers.fista import FISTA

__all__ = ["ConvReLUAugLag", "AugLagState"]


class _ALSmooth(SmoothTerm):
    """Data term plus the augmented-Lagrangian penalty, on stacked ``(2, P, Co, C, k, k)``."""

    def __init__(self, prog: ConvTwoLayerReLUCone, mu: torch.Tensor, rho: float, lip: float) -> None:
        self.prog, self.mu, self.rho, self._lip = prog, mu, rho, lip

    def value_and_grad(self, s):
        p = self.prog
        z = p.conv(s)
        e = p.predict_from_conv(z) - p.Y
        act = (self.mu - self.rho * p.sign * z).clamp(min=0)
        val = 0.5 * e.pow(2).sum() + (act.pow(2).sum() - self.mu.pow(2).sum()) / (2 * self.rho)
        gz = p.predict_from_conv_adjoint(e) - p.sign * act
        return val, p.conv_adjoint(gz)

    def value(self, s):
        return self.value_and_grad(s)[0]

    def grad(self, s):
        return self.value_and_grad(s)[1]

    def lipschitz(self) -> float:
        return self._lip


class _GroupPenalty(ProxTerm):
    """``beta`` times the sum of the filters' norms, with its exact prox."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def value(self, s):
        return self.beta * group_norms(s, FILTER_DIMS).sum()

    def prox(self, s, step: float):
        return prox_group(s, step * self.beta, FILTER_DIMS)


class _ALProgram(CompositeProgram):
    def zeros(self):
        raise InputError("x0: the AL subproblem needs a starting point")


@dataclass
class AugLagState(State):
    """Outer state: stacked variable ``s``, multipliers ``mu``, penalty ``rho`` (and
    its cap ``rho_cap``), the relative ``violation`` and duality ``gap`` of ``(s, mu)``
    (``inf`` before the first step), start time ``t0``."""

    s: Any = None
    mu: Any = None
    rho: float = 1.0
    rho_cap: float = math.inf
    violation: float = math.inf
    gap: float = math.inf
    t0: float = 0.0


class ConvReLUAugLag(Solver[AugLagState]):
    """Augmented Lagrangian for :class:`~convexrecon.programs.relu.ConvTwoLayerReLUCone`
    (FISTA subproblems).

    Args:
        program: the cone program.
        tol: stop when ``max(gap, violation) <= tol``.
        max_outer: outer iterations (multiplier updates).
        inner_iter: FISTA iterations per subproblem.
        rho: starting penalty (default ``2 ||A||^2 / ||K||^2``); doubled when the
            relative violation exceeds the relative gap and did not halve (while
            above ``tol / 10``; at most 1000-fold; module docstring).
        time_budget: stop after this many seconds (``None``: no limit).

    ``init(x0, multipliers=mu)`` warm-starts from a previous state's ``mu``; the
    multipliers of a run are ``result.state.mu`` (:meth:`multipliers`).
    """

    def __init__(self, program: ConvTwoLayerReLUCone, *, tol: float = 1e-3, max_outer: int = 50,
                 inner_iter: int = 50, rho: float | None = None,
                 time_budget: float | None = None) -> None:
        super().__init__(max_iter=max_outer, tol=tol, check_every=1)
        if not isinstance(program, ConvTwoLayerReLUCone):
            raise InputError(f"program: expected a ConvTwoLayerReLUCone, got {type(program).__name__}")
        self.program = program
        self.inner_iter = int(inner_iter)
        self.rho0 = None if rho is None else check_positive(rho, "rho")
        self.time_budget = None if time_budget is None else check_positive(time_budget, "time_budget")

    def init(self, x0=None, *, multipliers: torch.Tensor | None = None) -> AugLagState:
        p = self.program
        x0 = p.zeros() if x0 is None else x0
        s = p._stack(x0).clone()
        n, co, h, w = p.op.oshape
        shape = (n, 2, p.op.n_patterns, co, h, w)
        if multipliers is None:
            mu = torch.zeros(shape, dtype=s.dtype, device=s.device)
        elif not isinstance(multipliers, torch.Tensor) or tuple(multipliers.shape) != shape:
            raise InputError(f"multipliers: expected a tensor of shape {shape}, got "
                             f"{tuple(getattr(multipliers, 'shape', ())) or type(multipliers).__name__}")
        else:
            mu = multipliers.to(s).clamp(min=0)
        ld = 2.0 * p.data_lipschitz()
        rho = self.rho0 if self.rho0 is not None else ld / p.k_norm2()
        return AugLagState(x=(s[0], s[1]), s=s, mu=mu, rho=rho, rho_cap=1e3 * rho,
                           t0=time.perf_counter())

    def step(self, state: AugLagState) -> AugLagState:
        p = self.program
        lip = 2.0 * p.data_lipschitz() + state.rho * p.k_norm2()
        sub = _ALProgram(_ALSmooth(p, state.mu, state.rho, lip), _GroupPenalty(p.beta))
        s = FISTA(sub, max_iter=self.inner_iter, tol=0.0, check_every=0).run(state.s).x
        x = (s[0], s[1])
        z = p.conv(s)  # one convolution serves the multiplier update and the certificate
        mu = (state.mu - state.rho * (z * p.sign)).clamp(min=0)
        kkt = p.kkt(x, multipliers=mu, conv_x=z)
        viol, gap = kkt.violation, kkt.gap
        grow = (viol > gap and viol > 0.5 * state.violation and viol > 0.1 * self.tol
                and state.rho < state.rho_cap)
        rho = min(2.0 * state.rho, state.rho_cap) if grow else state.rho
        return AugLagState(x=x, it=state.it + 1, certificate=state.certificate,
                           s=s, mu=mu, rho=rho, rho_cap=state.rho_cap, violation=viol, gap=gap,
                           t0=state.t0)

    def done(self, state: AugLagState) -> bool:
        if self.time_budget is not None and time.perf_counter() - state.t0 > self.time_budget:
            return True
        return super().done(state)

    def objective(self, state: AugLagState) -> float:
        return self.program.value(state.x)

    def certificate(self, state: AugLagState) -> float:
        """``max(gap, violation)`` of ``(x, mu)`` (the program's certificate; a step
        has already evaluated it)."""
        if math.isfinite(state.gap) and math.isfinite(state.violation):
            return max(state.gap, state.violation)
        return self.program.certificate(state.x, multipliers=state.mu)

    def multipliers(self, state: AugLagState) -> torch.Tensor:
        """The cone multipliers ``(N, 2, P, Co, H, W) >= 0`` at ``state``."""
        return state.mu
