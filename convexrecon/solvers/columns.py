"""Several output columns of the cone-constrained ReLU program, one at a time.

:class:`~convexrecon.programs.relu.TwoLayerReLU` with ``c`` output columns (e.g. the
real and imaginary parts of an image) penalises and constrains every column on its
own: it is the sum of ``c`` one-column programs that share ``X``, the patterns and
``beta`` (the exact per-output program, whose last layer is block sparse;
:meth:`~convexrecon.programs.relu.TwoLayerReLU.column`). :class:`Columnwise` solves
them one after another with a one-column solver, by default the interior-point
method, and stacks the solutions along the last axis. It is a solver on the common
protocol: each ``step`` is one step of the column being solved, and its state holds
the finished columns' states and the current one's.

Certificate. Every column stops on its own relative certificate; the reported one
is the largest. It bounds the whole program's: the relative gap of the sum,
``sum_j gap_j / sum_j p_j`` (every ``p_j >= gap_j >= 0``), is at most
``max_j gap_j / p_j``, and each part of the KKT triple is a maximum over blocks or
a ratio of sums in the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from convexrecon.errors import InputError
from convexrecon.programs.relu import TwoLayerReLU
from convexrecon.solvers.base import Solver, State

__all__ = ["Columnwise", "ColumnsState"]


@dataclass
class ColumnsState(State):
    """``columns``: the finished columns' final solver states; ``sub`` the state of
    the column being solved (index ``j``; ``None`` once all are done); ``it`` the
    columns' total iterations; ``certificate`` and ``violation`` their maxima;
    ``multipliers`` the cone multipliers ``(mu_v, mu_w)`` stacked over columns
    (``None`` if a column's solver has none). ``x`` stacks the finished columns'
    solutions, the current column's iterate and zeros for the columns to come."""

    columns: list[State] = field(default_factory=list)
    sub: State | None = None
    j: int = 0
    checked: int = -1
    x0: Any = None
    solutions: list[Any] = field(default_factory=list)
    column_converged: list[bool] = field(default_factory=list)
    violation: float = math.inf
    multipliers: Any = None


class Columnwise(Solver[ColumnsState]):
    """Solve a :class:`~convexrecon.programs.relu.TwoLayerReLU` column by column.

    Args:
        program: the program (any number of output columns).
        solver: a one-column solver class, constructed as ``solver(column_program,
            **opts)``; by default :class:`~convexrecon.solvers.ipm_relu.IPMReLU`.
        **opts: that solver's options (unknown ones raise InputError when the
            solvers are built, here).

    ``run(x0, callback)`` starts each column's solver from its slice of ``x0`` (if
    any); ``callback`` gets the :class:`ColumnsState` after each step. Each column
    evaluates its certificate at its own solver's ``check_every``; the history
    records the whole program after every step, with the certificate the largest of
    the columns' (``inf`` until the current column has been evaluated).
    """

    def __init__(self, program: TwoLayerReLU, *, solver: type | None = None,
                 **opts: Any) -> None:
        if not isinstance(program, TwoLayerReLU):
            raise InputError(f"program: expected a TwoLayerReLU, got {type(program).__name__}")
        if solver is None:
            from convexrecon.solvers.ipm_relu import IPMReLU
            solver = IPMReLU
        self.program = program
        self.solvers = [solver(program.column(j), **opts) for j in range(program.data.c)]
        super().__init__(max_iter=sum(s.max_iter for s in self.solvers), tol=0.0, check_every=1)

    # -- protocol ---------------------------------------------------------------------
    def init(self, x0: Any = None) -> ColumnsState:
        if x0 is not None:
            x0 = self.program._check(x0)
        st = ColumnsState(x=None, x0=x0)
        self._begin(st)
        return st

    def step(self, st: ColumnsState) -> ColumnsState:
        solver = self.solvers[st.j]
        st.sub = solver.step(st.sub)
        if solver.check_every and st.sub.it % solver.check_every == 0:
            self._check(solver, st.sub, st)
        st.it += 1
        self._advance(st)
        self._stack(st)
        return st

    def done(self, st: ColumnsState) -> bool:
        return st.j >= len(self.solvers)

    def converged(self, st: ColumnsState) -> bool:
        """Only if every column converged."""
        return self.done(st) and all(st.column_converged)

    def objective(self, st: ColumnsState) -> float:
        return self.program.value(st.x)

    def certificate(self, st: ColumnsState) -> float:
        certs = [s.certificate for s in st.columns]
        if st.sub is not None:
            certs.append(st.sub.certificate)
        return max(certs) if certs else math.inf

    def solution(self, st: ColumnsState) -> tuple[torch.Tensor, torch.Tensor]:
        return st.x

    # -- helpers ----------------------------------------------------------------------
    def _column_x0(self, st: ColumnsState, j: int) -> Any:
        if st.x0 is None:
            return None
        V0, W0 = st.x0
        return V0[..., j:j + 1], W0[..., j:j + 1]

    def _begin(self, st: ColumnsState) -> None:
        """Start the column ``st.j`` (and move past columns done at once)."""
        st.sub = self.solvers[st.j].init(self._column_x0(st, st.j))
        st.checked = -1
        self._advance(st)
        self._stack(st)

    @staticmethod
    def _check(solver: Solver, sub: State, st: ColumnsState) -> None:
        sub.certificate = float(solver.certificate(sub))
        st.checked = sub.it

    def _advance(self, st: ColumnsState) -> None:
        """Close the current column when its solver is done; start the next."""
        while st.sub is not None and self.solvers[st.j].done(st.sub):
            solver, sub = self.solvers[st.j], st.sub
            if st.checked != sub.it:
                self._check(solver, sub, st)
            st.columns.append(sub)
            st.solutions.append(solver.solution(sub))
            st.column_converged.append(bool(solver.converged(sub)))
            st.j += 1
            st.sub = None
            if st.j < len(self.solvers):
                st.sub = self.solvers[st.j].init(self._column_x0(st, st.j))
                st.checked = -1
        if st.sub is None:
            self._finish(st)

    def _stack(self, st: ColumnsState) -> None:
        zero = torch.zeros_like(self.program.zeros()[0][..., :1])
        parts = list(st.solutions)
        if st.sub is not None:
            parts.append(tuple(t.to(zero) for t in st.sub.x))
        parts += [(zero, zero)] * (len(self.solvers) - len(parts))
        st.x = tuple(torch.cat([p[k] for p in parts], dim=-1) for k in range(2))

    @staticmethod
    def _finish(st: ColumnsState) -> None:
        st.certificate = max((s.certificate for s in st.columns), default=math.inf)
        st.violation = max((getattr(s, "violation", math.inf) for s in st.columns),
                           default=math.inf)
        mults = [getattr(s, "multipliers", None) for s in st.columns]
        st.multipliers = None if any(m is None for m in mults) else \
            tuple(torch.cat([m[k] for m in mults], dim=-1) for k in range(2))
