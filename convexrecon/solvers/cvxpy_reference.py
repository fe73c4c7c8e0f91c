"""Exact reference solutions of small programs with cvxpy (CLARABEL or SCS).

``cvxpy_reference(program)`` exports the program (``program.to_cvxpy()``), solves it
with pinned tolerances and returns a :class:`~convexrecon.solvers.base.Result` whose
history holds one entry: the objective as evaluated by ``program.value``, the
program's certificate and the solve time. The raw cvxpy objective, the status and
the solver's own time are kept on the state (:class:`CvxpyState`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from convexrecon._checks import check_choice, check_positive
from convexrecon.errors import InputError
from convexrecon.solvers.base import History, Result, State

__all__ = ["CvxpyState", "cvxpy_reference", "SOLVERS", "solver_options"]

SOLVERS = ("CLARABEL", "SCS")
_DEFAULT_EPS = {"CLARABEL": 1e-9, "SCS": 1e-7}


@dataclass
class CvxpyState(State):
    """The reference solve: cvxpy's own objective, status, solver and time."""

    cvxpy_objective: float = float("nan")
    status: str = ""
    solver: str = ""
    solve_time: float = 0.0


def solver_options(solver: str, eps: float, max_iters: int | None) -> dict:
    """The pinned tolerances passed to the solver.

    CLARABEL: ``tol_gap_abs = tol_gap_rel = tol_feas = eps`` (and ``tol_ktratio``),
    ``max_iter`` (default 200). SCS: ``eps_abs = eps_rel = eps``, ``max_iters``
    (default 100000), no acceleration lookback changes.
    """
    if solver == "CLARABEL":
        return {"tol_gap_abs": eps, "tol_gap_rel": eps, "tol_feas": eps,
                "tol_ktratio": min(1e-6, eps), "max_iter": max_iters or 200}
    return {"eps_abs": eps, "eps_rel": eps, "max_iters": max_iters or 100_000}


def cvxpy_reference(program, *, solver: str = "CLARABEL", eps: float | None = None,
                    max_iters: int | None = None, verbose: bool = False) -> Result:
    """Solve ``program`` exactly with cvxpy.

    Args:
        program: a program with ``to_cvxpy()``, ``value`` and ``certificate``.
        solver: ``"CLARABEL"`` (interior point, default) or ``"SCS"``.
        eps: the pinned tolerance (defaults: 1e-9 for CLARABEL, 1e-7 for SCS).
        max_iters: the solver's iteration limit (defaults in :func:`solver_options`).
        verbose: print the solver's log.

    Returns:
        ``Result(x, history, state, converged)``; ``converged`` is True when cvxpy
        reports ``optimal``. Raises InputError when the solve fails outright.
    """
    import cvxpy as cp

    check_choice(solver, SOLVERS, "solver")
    eps = _DEFAULT_EPS[solver] if eps is None else check_positive(eps, "eps")
    if not hasattr(program, "to_cvxpy"):
        raise InputError(f"program: expected a program with to_cvxpy(), got {type(program).__name__}")
    problem, to_x = program.to_cvxpy()
    t0 = time.perf_counter()
    try:
        problem.solve(solver=solver, verbose=verbose, **solver_options(solver, eps, max_iters))
    except cp.error.SolverError as exc:
        raise InputError(f"solver: {solver} failed on this program ({exc})") from exc
    elapsed = time.perf_counter() - t0
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise InputError(f"solver: {solver} returned status {problem.status!r}; expected optimal")
    x = to_x()
    state = CvxpyState(x=x, it=int(problem.solver_stats.num_iters or 0),
                       cvxpy_objective=float(problem.value), status=str(problem.status),
                       solver=solver, solve_time=elapsed)
    history = History()
    state.certificate = float(program.certificate(x))
    history.append(state.it, float(program.value(x)), state.certificate, elapsed)
    return Result(x=x, history=history, state=state, converged=problem.status == cp.OPTIMAL)
