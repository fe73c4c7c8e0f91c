"""Solver cores of the iterative reconstructions, on an already scaled problem.

Each takes the scaled operator and data and returns the solution on the
reconstruction grid (scaled). The public builders wrap them with input parsing,
scaling and cropping; :func:`convexrecon.recon.choose_lambda` calls them on
training subsets of the samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from convexrecon.errors import InputError
from convexrecon.operators.base import Operator

__all__ = ["Progress", "METHODS", "solve", "check_iters", "make_wavelet"]

# the scaled operator has lambda_max(A.N) = 1 by the power method, which approaches
# from below: 1% headroom, as LeastSquares.lipschitz() itself uses
_LIPSCHITZ = 1.01


@dataclass
class Progress:
    """What a reconstruction's ``callback`` receives after every iteration.

    Attributes:
        it: iterations done.
        max_iter: the iteration limit.
        x: the current iterate (scaled problem, reconstruction grid).
        certificate: the solver's last relative optimality measure (refreshed every
            ``check_every`` iterations; ``inf`` before the first).
        state: the solver's own state object.
    """

    it: int
    max_iter: int
    x: Any
    certificate: float
    state: Any
    _objective: Callable[[], float] = field(repr=False, default=lambda: float("nan"))
    _cached: float | None = field(repr=False, default=None)

    @property
    def objective(self) -> float:
        """The objective of the scaled problem at ``x`` (computed on first access)."""
        if self._cached is None:
            self._cached = float(self._objective())
        return self._cached


def check_iters(max_iter: Any) -> int:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise InputError(f"max_iter: expected an int >= 1, got {max_iter!r}")
    return max_iter


def make_wavelet(grid, *, wavelet: str, levels: int, dtype) -> Operator:
    from convexrecon.operators.wavelet import Wavelet

    return Wavelet(grid, wavelet=wavelet, levels=levels, dtype=dtype)


def _run(solver, max_iter: int, x0, callback):
    if callback is None:
        return solver.run(x0)

    def hook(state):
        callback(Progress(it=int(state.it), max_iter=max_iter, x=state.x,
                          certificate=float(state.certificate), state=state,
                          _objective=lambda: solver.objective(state)))

    return solver.run(x0, callback=hook)


def _l1_wavelet(op, y, lam, *, max_iter, tol, x0, callback, wavelet, levels, check_every,
                cycle_spin=None):
    from convexrecon.programs.l1 import L1WaveletProgram
    from convexrecon.solvers.fista import FISTA

    W = make_wavelet(op.ishape, wavelet=wavelet, levels=levels, dtype=op.dtype)
    prog = L1WaveletProgram(op, y, lam, W, lipschitz=_LIPSCHITZ)
    slices = prog.smooth.aty.ndim - len(op.ishape)  # every slice is its own system
    solver = FISTA(prog, max_iter=max_iter, tol=tol, check_every=check_every, batch_dims=slices,
                   cycle_spin=cycle_spin)
    return _run(solver, max_iter, x0, callback).x


def _sense(op, y, lam, *, max_iter, tol, x0, callback, check_every, **_):
    from convexrecon.programs.l1 import TikhonovProgram
    from convexrecon.solvers.cg import CG

    prog = TikhonovProgram(op, y, mu=lam, lipschitz=_LIPSCHITZ)
    slices = prog.smooth.aty.ndim - len(op.ishape)  # every slice is its own system
    solver = CG.from_program(prog, max_iter=max_iter, tol=tol, check_every=check_every,
                             batch_dims=slices)
    return _run(solver, max_iter, x0, callback).x


def _tv(op, y, lam, *, max_iter, tol, x0, callback, check_every, **_):
    from convexrecon.operators.finite_diff import FiniteDifference
    from convexrecon.programs.tv import TVProgram
    from convexrecon.solvers.pdhg import PDHG

    D = FiniteDifference(op.ishape, dtype=op.dtype)
    prog = TVProgram(op, y, lam, D, lipschitz=_LIPSCHITZ)
    solver = PDHG(prog, max_iter=max_iter, tol=tol, check_every=check_every)
    return _run(solver, max_iter, x0, callback).x


METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "l1_wavelet": _l1_wavelet,
    "sense": _sense,
    "tv": _tv,
}


def solve(method: str, op: Operator, y: torch.Tensor, lam: float, *, max_iter: int,
          tol: float = 0.0, x0: torch.Tensor | None = None, callback=None,
          check_every: int = 0, **opts) -> torch.Tensor:
    """Solve the scaled problem of ``method`` with weight ``lam``."""
    return METHODS[method](op, y, lam, max_iter=max_iter, tol=tol, x0=x0, callback=callback,
                           check_every=check_every, **opts)
