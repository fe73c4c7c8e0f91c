"""One entry point: ``solve(program, *, method="auto", **opts) -> SolveResult``.

``solve`` dispatches through a registry keyed by program *type* (the most derived
registered class in the program's MRO wins; :func:`register` adds an entry).
``method="auto"`` picks the fastest applicable solver:

==========================================  =================================
program                                     solver
==========================================  =================================
``GatedReLU`` (data matrix)                 ADMM, exact factorised steps
``TwoLayerReLU``, n <= 3000                 primal-dual interior point, one
                                            output column at a time
``TwoLayerReLU``, n > 3000                  ADMM with the cone split
``ConvGatedReLU`` (convolutional)           FISTA with restart
``ConvTwoLayerReLUCone``                    augmented Lagrangian (FISTA inner)
any other ``CompositeProgram``              FISTA with restart
==========================================  =================================

Other methods: ``"admm"``, ``"ipm"`` (cone form; several output columns are
solved one at a time, :class:`~convexrecon.solvers.columns.Columnwise`), ``"fista"``,
``"minibatch"`` (stochastic proximal: data matrices, and images for the
convolutional programs), ``"auglag"`` (conv cone form), ``"cvxpy"`` (exact
reference; option ``solver="CLARABEL"|"SCS"``). Options are forwarded to the
solver's constructor and unknown ones raise InputError. Every two-layer program
(dense and convolutional) gets the pattern-sufficiency ratio (``max ||A'^T lam|| /
beta`` over fresh gates) in ``result.pattern_ratio``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

from convexrecon._checks import check_choice
from convexrecon.errors import InputError
from convexrecon.programs.composite import CompositeProgram
from convexrecon.programs.relu import ConvGatedReLU, ConvTwoLayerReLUCone, GatedReLU, TwoLayerReLU
from convexrecon.solvers.admm_relu import ADMMGated, ADMMReLU
from convexrecon.solvers.auglag import ConvReLUAugLag
from convexrecon.solvers.base import Result
from convexrecon.solvers.columns import Columnwise
from convexrecon.solvers.cvxpy_reference import cvxpy_reference
from convexrecon.solvers.fista import FISTA
from convexrecon.solvers.ipm_relu import IPMReLU
from convexrecon.solvers.minibatch import MiniBatchProx
from convexrecon.solvers.minibatch_conv import MiniBatchConv

__all__ = ["solve", "SolveResult", "METHODS", "register", "Entry"]

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


@dataclass(frozen=True)
class Entry:
    """How :func:`solve` treats one program type.

    ``methods`` maps a method name to the solver class (built as ``cls(program,
    **opts)``, or by ``build(cls, program, opts)`` when given); ``auto(program)``
    names the default method; ``pattern_ratio(program, result)`` the
    pattern-sufficiency ratio (``None``: not reported). ``"cvxpy"`` always applies.
    """

    methods: dict[str, type]
    auto: Callable[[Any], str]
    pattern_ratio: Callable[[Any, Result], float] | None = None
    build: Callable[[type, Any, dict], Any] | None = None


_REGISTRY: dict[type, Entry] = {}


def register(program_type: type, entry: Entry) -> None:
    """Register (or replace) how :func:`solve` handles ``program_type`` and its
    subclasses (unless a subclass has its own entry)."""
    if not isinstance(program_type, type):
        raise InputError(f"program_type: expected a class, got {program_type!r}")
    _REGISTRY[program_type] = entry


def _entry(program: Any) -> tuple[type | None, Entry | None]:
    for cls in type(program).__mro__:
        if cls in _REGISTRY:
            return cls, _REGISTRY[cls]
    return None, None


def _check_opts(cls: type, opts: dict) -> None:
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in opts if k not in params or k in ("self", "program"))
    if unknown and not accepts_any:
        allowed = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY)
        raise InputError(f"opts: unknown option(s) {unknown} for {cls.__name__}; "
                         f"expected some of {allowed}")


def _build(cls: type, program: Any, opts: dict) -> Any:
    _check_opts(cls, opts)
    try:
        return cls(program, **opts)
    except TypeError as exc:
        raise InputError(f"opts: unknown option for {cls.__name__} ({exc})") from exc


def _build_cone(cls: type, program: TwoLayerReLU, opts: dict) -> Any:
    """The IPM solves one output column per run: several go through Columnwise."""
    if cls is IPMReLU and program.data.c > 1:
        _check_opts(cls, opts)
        try:
            return Columnwise(program, solver=cls, **opts)
        except TypeError as exc:
            raise InputError(f"opts: unknown option for {cls.__name__} ({exc})") from exc
    return _build(cls, program, opts)


def _gated_ratio(program: GatedReLU, res: Result) -> float:
    fit = getattr(res.state, "AU", None)  # ADMM's fit A u: its residual is the dual
    dual = None if fit is None else program.data.Y - fit.to(program.data.Y)
    return float(program.pattern_check(res.x, dual=dual))


def _ratio(program: Any, res: Result) -> float:
    return float(program.pattern_check(res.x))


register(GatedReLU, Entry(
    methods={"admm": ADMMGated, "fista": FISTA, "minibatch": MiniBatchProx},
    auto=lambda p: "admm", pattern_ratio=_gated_ratio))
register(TwoLayerReLU, Entry(
    methods={"admm": ADMMReLU, "ipm": IPMReLU, "minibatch": MiniBatchProx},
    auto=lambda p: "ipm" if p.data.n <= IPM_MAX_ROWS else "admm",
    pattern_ratio=_ratio, build=_build_cone))
register(ConvGatedReLU, Entry(
    methods={"fista": FISTA, "minibatch": MiniBatchConv},
    auto=lambda p: "fista", pattern_ratio=_ratio))
register(ConvTwoLayerReLUCone, Entry(
    methods={"auglag": ConvReLUAugLag, "minibatch": MiniBatchConv},
    auto=lambda p: "auglag", pattern_ratio=_ratio))
register(CompositeProgram, Entry(methods={"fista": FISTA}, auto=lambda p: "fista"))


def _applicable(entry: Entry | None) -> set[str]:
    if entry is None:
        return {"cvxpy"}
    return {"auto", "cvxpy", *entry.methods}


def solve(program: Any, *, method: str = "auto", x0: Any = None,
          callback: Callable[[Any], Any] | None = None, dual: Any = None,
          **opts: Any) -> SolveResult:
    """Minimise ``program`` with the fastest applicable solver (or ``method``).

    Args:
        program: a program (two-layer, convolutional or classical composite).
        method: one of :data:`METHODS`.
        x0: warm start in the program's variable format.
        callback: called with the solver state after each step.
        dual: warm-start dual (ADMM only; from a previous run's ``solver.dual(state)``).
        **opts: solver options (e.g. ``tol``, ``max_iter``, ``rho``); unknown
            options raise InputError.

    Returns:
        :class:`SolveResult` with ``.x`` and ``.history``.
    """
    check_choice(method, METHODS, "method")
    _, entry = _entry(program)
    if method != "auto" and method not in _applicable(entry):
        raise InputError(f"method: {method!r} does not apply to {type(program).__name__}; "
                         f"applicable: {sorted(_applicable(entry))}")
    if method == "auto":
        if entry is None:
            raise InputError(f"program: expected a two-layer, convolutional or composite "
                             f"program, got {type(program).__name__}")
        method = entry.auto(program)
    if method == "cvxpy":
        if x0 is not None or dual is not None or callback is not None:
            raise InputError("x0/dual/callback: not supported by method='cvxpy'")
        res = _build_call(cvxpy_reference, program, opts)
    else:
        cls = entry.methods[method]
        solver = (entry.build or _build)(cls, program, opts)
        if dual is not None:
            if "dual" not in inspect.signature(solver.init).parameters:
                raise InputError(f"dual: only method='admm' accepts a dual warm start, "
                                 f"got {method!r}")
            res = solver.run(x0, callback, dual=dual)
        else:
            res = solver.run(x0, callback)
    out = SolveResult(x=res.x, history=res.history, state=res.state,
                      converged=res.converged, method=method)
    if entry is not None and entry.pattern_ratio is not None:
        out.pattern_ratio = entry.pattern_ratio(program, res)
    return out


def _build_call(fn: Callable, program: Any, opts: dict) -> Result:
    params = inspect.signature(fn).parameters
    unknown = sorted(k for k in opts if k not in params or k == "program")
    if unknown:
        allowed = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY)
        raise InputError(f"opts: unknown option(s) {unknown} for {fn.__name__}; "
                         f"expected some of {allowed}")
    return fn(program, **opts)
