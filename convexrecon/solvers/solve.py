"""One entry point: ``solve(program, *, method="auto", **opts) -> Result``.

``method="auto"`` picks the fastest applicable solver:

==========================================  =================================
program                                     solver
==========================================  =================================
``GatedReLU`` (data matrix)                 ADMM, exact factorised steps
``TwoLayerReLU``, n <= 3000                 primal-dual interior point, one
                                            output column at a time
``TwoLayerReLU``, n > 3000                  ADMM with the cone split
``ConvTwoLayerReLU`` (convolutional)        FISTA with restart
``ConvTwoLayerReLUCone``                    augmented Lagrangian (FISTA inner)
any other ``CompositeProgram``              FISTA with restart
==========================================  =================================

Other methods: ``"admm"``, ``"ipm"`` (cone form; several output columns are
solved one at a time, :class:`~convexrecon.solvers.columns.Columnwise`), ``"fista"``,
``"minibatch"`` (stochastic proximal, data matrices), ``"auglag"`` (conv cone form),
``"cvxpy"`` (exact reference; option
``solver="CLARABEL"|"SCS"``). Options are forwarded to the solver's constructor and
unknown ones raise InputError. Two-layer programs get the pattern-sufficiency ratio
(``max ||X^T D lam|| / beta`` over fresh gates) in ``result.pattern_ratio``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

from convexrecon._checks import check_choice
from convexrecon.errors import InputError
from convexrecon.programs.composite import CompositeProgram
from convexrecon.solvers.base import Result

__all__ = ["solve", "SolveResult", "METHODS"]

METHODS = ("auto", "admm", "ipm", "fista", "minibatch", "auglag", "cvxpy")

IPM_MAX_ROWS = 3000
"""``auto`` uses the interior-point method on the cone form up to this many rows (its
``n x n`` factorisation per iteration grows like ``n^3``), ADMM beyond."""


@dataclass
class SolveResult(Result):
    """:class:`Result` plus the method used and, for two-layer programs, the
    pattern-sufficiency ratio (``> 1 + tol``: sample more patterns)."""

    method: str = ""
    pattern_ratio: float = math.nan


def _kind(program: Any) -> str:
    name = type(program).__name__
    from convexrecon.programs.relu import GatedReLU, TwoLayerReLU
    if isinstance(program, GatedReLU):
        return "gated"
    if isinstance(program, TwoLayerReLU):
        return "relu"
    if name == "ConvTwoLayerReLUCone":
        return "conv_cone"
    if isinstance(program, CompositeProgram):
        return "composite"
    return "other"


_AUTO = {"gated": "admm", "relu": "ipm", "conv_cone": "auglag", "composite": "fista"}


def _build(cls: type, program: Any, opts: dict) -> Any:
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in opts if k not in params or k in ("self", "program"))
    if unknown and not accepts_any:
        allowed = sorted(k for k, p in params.items()
                         if p.kind is p.KEYWORD_ONLY)
        raise InputError(f"opts: unknown option(s) {unknown} for {cls.__name__}; "
                         f"expected some of {allowed}")
    from convexrecon.solvers.columns import Columnwise
    from convexrecon.solvers.ipm_relu import IPMReLU
    try:
        if cls is IPMReLU and program.data.c > 1:  # one output column per run
            return Columnwise(program, solver=cls, **opts)
        return cls(program, **opts)
    except TypeError as exc:
        raise InputError(f"opts: unknown option for {cls.__name__} ({exc})") from exc


def _solver_class(kind: str, method: str) -> type:
    if method == "admm":
        from convexrecon.solvers.admm_relu import ADMMGated, ADMMReLU
        if kind == "gated":
            return ADMMGated
        if kind == "relu":
            return ADMMReLU
    elif method == "ipm":
        if kind == "relu":
            from convexrecon.solvers.ipm_relu import IPMReLU
            return IPMReLU
    elif method == "fista":
        if kind in ("gated", "composite"):
            from convexrecon.solvers.fista import FISTA
            return FISTA
    elif method == "minibatch":
        if kind in ("gated", "relu"):
            from convexrecon.solvers.minibatch import MiniBatchProx
            return MiniBatchProx
    elif method == "auglag":
        if kind == "conv_cone":
            from convexrecon.programs.relu_conv_cone import ConvReLUAugLag
            return ConvReLUAugLag
    raise InputError(f"method: {method!r} does not apply to this program (kind {kind!r}); "
                     f"applicable: {sorted(_applicable(kind))}")


def _applicable(kind: str) -> set[str]:
    return {"gated": {"auto", "admm", "fista", "minibatch", "cvxpy"},
            "relu": {"auto", "admm", "ipm", "minibatch", "cvxpy"},
            "conv_cone": {"auto", "auglag", "cvxpy"},
            "composite": {"auto", "fista", "cvxpy"}}.get(kind, {"cvxpy"})


def solve(program: Any, *, method: str = "auto", x0: Any = None,
          callback: Callable[[Any], Any] | None = None, dual: Any = None,
          **opts: Any) -> SolveResult:
    """Minimise ``program`` with the fastest applicable solver (or ``method``).

    Args:
        program: a program (two-layer, convolutional or classical composite).
        method: one of :data:`METHODS`.
        x0: warm start in the program's variable format.
        callback: called with the solver state after each step.
        dual: warm-start dual (ADMM only; from a previous ``result.state``).
        **opts: solver options (e.g. ``tol``, ``max_iter``, ``rho``); unknown
            options raise InputError.

    Returns:
        :class:`SolveResult` with ``.x`` and ``.history``.
    """
    check_choice(method, METHODS, "method")
    kind = _kind(program)
    if method != "auto" and method not in _applicable(kind):
        raise InputError(f"method: {method!r} does not apply to {type(program).__name__}; "
                         f"applicable: {sorted(_applicable(kind))}")
    if method == "auto":
        if kind not in _AUTO:
            raise InputError(f"program: expected a two-layer, convolutional or composite "
                             f"program, got {type(program).__name__}")
        method = _AUTO[kind]
        if kind == "relu" and program.data.n > IPM_MAX_ROWS:
            method = "admm"
    if method == "cvxpy":
        from convexrecon.solvers.cvxpy_reference import cvxpy_reference
        if x0 is not None or dual is not None or callback is not None:
            raise InputError("x0/dual/callback: not supported by method='cvxpy'")
        res = _build_call(cvxpy_reference, program, opts)
    else:
        solver = _build(_solver_class(kind, method), program, opts)
        if dual is not None:
            if method != "admm":
                raise InputError(f"dual: only method='admm' accepts a dual warm start, got {method!r}")
            res = solver.run(x0, callback, dual=dual)
        else:
            res = solver.run(x0, callback)
    out = SolveResult(x=res.x, history=res.history, state=res.state,
                      converged=res.converged, method=method)
    if kind == "gated":
        fit = getattr(res.state, "AU", None)  # ADMM's fit A u: its residual is the dual
        dual = None if fit is None else program.data.Y - fit.to(program.data.Y)
        out.pattern_ratio = float(program.pattern_check(res.x, dual=dual))
    elif kind == "relu":
        out.pattern_ratio = float(program.pattern_check(res.x))
    return out


def _build_call(fn: Callable, program: Any, opts: dict) -> Result:
    params = inspect.signature(fn).parameters
    unknown = sorted(k for k in opts if k not in params or k == "program")
    if unknown:
        allowed = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY)
        raise InputError(f"opts: unknown option(s) {unknown} for {fn.__name__}; "
                         f"expected some of {allowed}")
    return fn(program, **opts)
