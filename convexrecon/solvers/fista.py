"""ISTA and FISTA (with adaptive restart) on any :class:`CompositeProgram`.

The hot loop costs one application of the smooth term's gradient and one prox per
iteration. For a :class:`~convexrecon.programs.terms.LeastSquares` data term the
gradient is affine, ``grad f(v) = A.N v - A^H y (+ mu v)``, and the loop applies
``A.N`` to the new iterate ``x_{k+1}`` only: the extrapolated point's
``A.N y_{k+1} = A.N x_{k+1} + beta (A.N x_{k+1} - A.N x_k)`` follows by linearity.
Every iterate's ``A.N x`` is then at hand, so objective and certificate checks
(``check_every``) cost no extra ``A.N``, and the function-value restart is free.

Restart (O'Donoghue & Candes, 2015): ``"gradient"`` restarts the momentum when
``Re<y_k - x_{k+1}, x_{k+1} - x_k> > 0``; ``"function"`` when the objective goes up.

Variables may be tensors or tuples of tensors (generic smooth terms), real or
complex; step sizes and certificates of batched problems are global.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from convexrecon._checks import check_choice, check_positive
from convexrecon.errors import InputError
from convexrecon.programs.composite import CompositeProgram
from convexrecon.programs.terms import LeastSquares
from convexrecon.solvers.base import Solver, State, Variable
from convexrecon.tree import tree_inner, tree_map, tree_map2

__all__ = ["ProxGradState", "ISTA", "FISTA"]


@dataclass
class ProxGradState(State):
    """State of ISTA/FISTA.

    Attributes:
        y: the extrapolated point (``x`` for ISTA and right after a restart).
        t: the momentum parameter.
        step: the step size in use.
        normal_x: ``A.N x`` (least-squares data terms only, else ``None``).
        normal_y: ``A.N y`` (least-squares data terms only, else ``None``).
        reg_value: ``g(x)`` when the prox gave it for free, else ``None``.
        objective_value: ``F(x)`` when known (function restart), else ``None``.
        restarts: how many times the momentum was restarted.
    """

    y: Variable = None
    t: float = 1.0
    step: float = 0.0
    normal_x: Any = None
    normal_y: Any = None
    reg_value: Any = None
    objective_value: float | None = None
    restarts: int = 0


_RESTARTS = ("gradient", "function", "none")


class _ProxGradient(Solver[ProxGradState]):
    """Shared forward-backward iteration; ``accelerate`` selects FISTA."""

    accelerate = False

    def __init__(self, program: CompositeProgram, *, max_iter: int = 100, tol: float = 0.0,
                 check_every: int = 1, step: float | None = None,
                 restart: bool | str = "none") -> None:
        super().__init__(max_iter=max_iter, tol=tol, check_every=check_every)
        if not isinstance(program, CompositeProgram):
            raise InputError(f"program: expected a CompositeProgram, got {type(program).__name__}")
        self.program = program
        self.step_size = None if step is None else check_positive(step, "step")
        if restart is True:
            restart = "gradient"
        elif restart is False or restart is None:
            restart = "none"
        self.restart = check_choice(str(restart), _RESTARTS, "restart")
        self._ls = program.smooth if isinstance(program.smooth, LeastSquares) else None
        # programs whose value/certificate take normal_x= (RegularizedLeastSquares)
        self._rich = self._ls is not None and hasattr(program, "duality_gap")
        reg = program.reg
        self._prox_value = getattr(reg, "prox_with_value", None) if reg is not None else None

    # -- helpers ------------------------------------------------------------------
    def _start(self, x0: Variable | None) -> Variable:
        if x0 is None:
            zeros = getattr(self.program, "zeros", None)
            if zeros is None:
                raise InputError("x0: expected a starting point (this program has no zeros()), got None")
            return zeros()
        check = getattr(self.program, "check_x", None)
        if check is not None:
            check(x0, "x0")
        return tree_map(lambda v: v.clone(), x0)

    def _prox(self, z: Variable, step: float, *, with_value: bool) -> tuple[Variable, Any]:
        """The prox, and the regulariser's value at its output when ``with_value``
        (only iterations that are evaluated, or function restarts, need it)."""
        reg = self.program.reg
        if reg is None:
            return z, 0.0
        if with_value and self._prox_value is not None:
            return self._prox_value(z, step)
        return reg.prox(z, step), None

    def _full_value(self, x, nx, gv) -> float:
        if self._rich:
            return self.program.value(x, normal_x=nx, reg_value=gv)
        return self.program.value(x)

    # -- protocol -----------------------------------------------------------------
    def init(self, x0: Variable | None = None) -> ProxGradState:
        x = self._start(x0)
        step = self.step_size if self.step_size is not None else 1.0 / self.program.smooth.lipschitz()
        nx = self._ls.normal(x) if self._ls is not None else None
        state = ProxGradState(x=x, y=x, step=step, normal_x=nx, normal_y=nx)
        if self.restart == "function":
            state.objective_value = self._full_value(x, nx, None)
        return state

    def step(self, state: ProxGradState) -> ProxGradState:
        step, x, y = state.step, state.x, state.y
        if self._ls is not None:
            g = self._ls.grad_from_normal(y, state.normal_y)
        else:
            g = self.program.smooth.grad(y)
        z = tree_map2(lambda a, b: a - step * b, y, g)
        evaluated = bool(self.check_every) and (state.it + 1) % self.check_every == 0
        x_new, gv = self._prox(z, step, with_value=evaluated or self.restart == "function")
        nx_new = self._ls.normal(x_new) if self._ls is not None else None
        new = ProxGradState(x=x_new, it=state.it + 1, certificate=state.certificate, y=x_new,
                            t=state.t, step=step, normal_x=nx_new, normal_y=nx_new,
                            reg_value=gv, restarts=state.restarts)
        if not self.accelerate:
            return new
        d = tree_map2(lambda a, b: a - b, x_new, x)
        t = state.t
        if self.restart == "gradient":
            if float(tree_inner(tree_map2(lambda a, b: a - b, y, x_new), d)) > 0:
                t, new.restarts = 1.0, new.restarts + 1
        elif self.restart == "function":
            new.objective_value = self._full_value(x_new, nx_new, gv)
            if state.objective_value is not None and new.objective_value > state.objective_value:
                t, new.restarts = 1.0, new.restarts + 1
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_new
        new.t = t_new
        if beta > 0:
            new.y = tree_map2(lambda a, b: a + beta * b, x_new, d)
            if nx_new is not None:
                new.normal_y = nx_new + beta * (nx_new - state.normal_x)
        return new

    def objective(self, state: ProxGradState) -> float:
        if state.objective_value is not None:
            return state.objective_value
        return self._full_value(state.x, state.normal_x, state.reg_value)

    def certificate(self, state: ProxGradState) -> float:
        if self._rich:
            return self.program.certificate(state.x, normal_x=state.normal_x,
                                            reg_value=state.reg_value)
        return self.program.certificate(state.x)


class ISTA(_ProxGradient):
    """Proximal gradient descent ``x <- prox_{s g}(x - s grad f(x))``.

    Args:
        program: a :class:`CompositeProgram`.
        max_iter: iteration limit.
        tol: stop when the certificate is at most ``tol`` (0: run ``max_iter``).
        check_every: evaluate objective and certificate every this many iterations
            (0: only at the end).
        step: the step size (default ``1 / program.smooth.lipschitz()``).
    """

    accelerate = False

    def __init__(self, program: CompositeProgram, *, max_iter: int = 100, tol: float = 0.0,
                 check_every: int = 1, step: float | None = None) -> None:
        super().__init__(program, max_iter=max_iter, tol=tol, check_every=check_every,
                         step=step, restart="none")


class FISTA(_ProxGradient):
    """Accelerated proximal gradient (Beck & Teboulle) with adaptive restart.

    Args:
        program: a :class:`CompositeProgram`.
        restart: ``True``/``"gradient"`` (default), ``"function"``, or
            ``False``/``"none"``.
        max_iter, tol, check_every, step: as for :class:`ISTA`.
    """

    accelerate = True

    def __init__(self, program: CompositeProgram, *, restart: bool | str = True,
                 max_iter: int = 100, tol: float = 0.0, check_every: int = 1,
                 step: float | None = None) -> None:
        super().__init__(program, max_iter=max_iter, tol=tol, check_every=check_every,
                         step=step, restart=restart)
