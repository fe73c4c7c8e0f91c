"""Several output columns of the cone-constrained ReLU program, one at a time.

:class:`~convexrecon.programs.relu.TwoLayerReLU` with ``c`` output columns (e.g. the
real and imaginary parts of an image) penalises and constrains every column on its
own: it is the sum of ``c`` one-column programs that share ``X``, the patterns and
``beta`` (the exact per-output program, whose last layer is block sparse;
:meth:`~convexrecon.programs.relu.TwoLayerReLU.column`). :class:`Columnwise` solves
them one after another with a one-column solver, by default the interior-point
method, and stacks the solutions along the last axis.

Certificate. Every column stops on its own relative certificate; the reported one
is the largest. It bounds the whole program's: the relative gap of the sum,
``sum_j gap_j / sum_j p_j`` (every ``p_j >= gap_j >= 0``), is at most
``max_j gap_j / p_j``, and each part of the KKT triple is a maximum over blocks or
a ratio of sums in the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from convexrecon.errors import InputError
from convexrecon.programs.relu import TwoLayerReLU
from convexrecon.solvers.base import History, Result, State

__all__ = ["Columnwise", "ColumnsState"]


@dataclass
class ColumnsState(State):
    """``columns``: each column's final solver state; ``it`` their total iterations,
    ``certificate`` and ``violation`` their maxima, ``multipliers`` the cone
    multipliers ``(mu_v, mu_w)`` stacked over columns (``None`` if a column's
    solver has none)."""

    columns: list[State] = field(default_factory=list)
    violation: float = math.inf
    multipliers: Any = None


class Columnwise:
    """Solve a :class:`~convexrecon.programs.relu.TwoLayerReLU` column by column.

    Args:
        program: the program (any number of output columns).
        solver: a one-column solver class, constructed as ``solver(column_program,
            **opts)``; by default :class:`~convexrecon.solvers.ipm_relu.IPMReLU`.
        **opts: that solver's options (unknown ones raise InputError when the
            solvers are built, here).

    ``run(x0, callback)`` passes each column's slice of ``x0`` (if any) and the
    ``callback`` (called with that column's solver state) to the column solvers.
    The result's history lists the columns' histories one after another, with
    iterations counted from the first column's start and each entry's objective
    and certificate those of the column being solved.
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

    def run(self, x0: Any = None, callback: Callable[[Any], Any] | None = None) -> Result:
        """Solve every column; ``converged`` only if every column converged."""
        if x0 is not None:
            V0, W0 = self.program._check(x0)
        history, results, offset, t0 = History(), [], 0, 0.0
        for j, solver in enumerate(self.solvers):
            x0_j = None if x0 is None else (V0[..., j:j + 1], W0[..., j:j + 1])
            res = solver.run(x0_j, callback)
            h = res.history
            for it, obj, cert, t in zip(h.iteration, h.objective, h.certificate, h.time):
                history.append(offset + it, obj, cert, t0 + t)
            offset += res.state.it
            t0 += h.time[-1] if h.time else 0.0
            results.append(res)
        x = tuple(torch.cat([r.x[k] for r in results], dim=-1) for k in range(2))
        states = [r.state for r in results]
        mults = [getattr(s, "multipliers", None) for s in states]
        state = ColumnsState(
            x=x, it=offset, certificate=max(s.certificate for s in states), columns=states,
            violation=max(getattr(s, "violation", math.inf) for s in states),
            multipliers=None if any(m is None for m in mults) else
            tuple(torch.cat([m[k] for m in mults], dim=-1) for k in range(2)))
        return Result(x=x, history=history, state=state,
                      converged=all(r.converged for r in results))
