"""The protocol every optimisation solver follows.

A solver is *how* a program is minimised; it holds no model state. It exposes

* ``init(x0, **warm) -> State`` (``warm``: a solver's own warm starts, e.g. ADMM's
  ``dual``)
* ``step(state) -> State``
* ``done(state) -> bool``
* ``run(x0=None, callback=None, **warm) -> Result``

Everything a run changes lives in its ``State``; the solver object holds options
and precomputed structure only, so one solver can run many times.

``State`` and ``History`` are typed dataclasses. Variables are a tensor or a tuple
of tensors (a small pytree); :mod:`convexrecon.tree` maps over them.

Subclasses implement ``init``, ``step``, ``objective`` and ``certificate``, and
may refine ``done``, ``converged`` (extra conditions such as feasibility) and
``solution`` (the result's variable, e.g. cast back to the program's dtype);
``run`` is shared.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError

__all__ = ["State", "History", "Result", "Solver", "Variable"]

Variable = Any  # torch.Tensor | tuple[torch.Tensor, ...]


@dataclass
class State:
    """The base state: the current iterate and the iteration count.

    ``certificate`` is the last evaluated relative optimality measure
    (``inf`` until first evaluated).
    """

    x: Variable
    it: int = 0
    certificate: float = math.inf


S = TypeVar("S", bound=State)


@dataclass
class History:
    """Per-evaluation record: iteration, objective, certificate, elapsed seconds."""

    iteration: list[int] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    certificate: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)

    def append(self, it: int, objective: float, certificate: float, elapsed: float) -> None:
        self.iteration.append(int(it))
        self.objective.append(float(objective))
        self.certificate.append(float(certificate))
        self.time.append(float(elapsed))

    def __len__(self) -> int:
        return len(self.iteration)


@dataclass
class Result:
    """What ``run`` returns: the solution, its history and the final state."""

    x: Variable
    history: History
    state: State
    converged: bool


class Solver(Generic[S]):
    """Base class of iterative solvers.

    Args (keyword-only in subclasses):
        max_iter: iteration limit.
        tol: stop when the program's relative certificate is at most ``tol``
            (``0`` disables, so exactly ``max_iter`` iterations run).
        check_every: evaluate objective and certificate every this many
            iterations (``0`` disables evaluation during the run; the final
            iterate is always evaluated).
    """

    def __init__(self, *, max_iter: int = 100, tol: float = 0.0, check_every: int = 1) -> None:
        if int(max_iter) < 0:
            raise InputError(f"max_iter: expected an integer >= 0, got {max_iter!r}")
        if int(check_every) < 0:
            raise InputError(f"check_every: expected an integer >= 0, got {check_every!r}")
        self.max_iter = int(max_iter)
        self.tol = check_positive(tol, "tol", strict=False)
        self.check_every = int(check_every)

    # -- hooks --------------------------------------------------------------------
    def init(self, x0: Variable | None = None, **warm: Any) -> S:
        raise NotImplementedError

    def step(self, state: S) -> S:
        raise NotImplementedError

    def objective(self, state: S) -> float:
        """Objective value at ``state.x``."""
        raise NotImplementedError

    def certificate(self, state: S) -> float:
        """Relative optimality measure at ``state.x`` (0 at the optimum)."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------
    def done(self, state: S) -> bool:
        """True when ``max_iter`` is reached or the certificate is below ``tol``."""
        return state.it >= self.max_iter or (self.tol > 0 and state.certificate <= self.tol)

    def converged(self, state: S) -> bool:
        """Whether ``state`` meets the tolerance (``tol > 0`` and the certificate
        at most ``tol``)."""
        return self.tol > 0 and state.certificate <= self.tol

    def solution(self, state: S) -> Variable:
        """The result's variable at ``state`` (``state.x``)."""
        return state.x

    def run(self, x0: Variable | None = None,
            callback: Callable[[S], Any] | None = None, **warm: Any) -> Result:
        """Iterate from ``x0`` (``warm``: further warm starts, passed to ``init``)
        until ``done``; ``callback(state)`` after each step."""
        history = History()
        t0 = time.perf_counter()
        with torch.no_grad():
            state = self.init(x0, **warm)
            while not self.done(state):
                state = self.step(state)
                if self.check_every and state.it % self.check_every == 0:
                    self._record(state, history, t0)
                if callback is not None:
                    callback(state)
            if not history.iteration or history.iteration[-1] != state.it:
                self._record(state, history, t0)
        return Result(x=self.solution(state), history=history, state=state,
                      converged=self.converged(state))

    def _record(self, state: S, history: History, t0: float) -> None:
        elapsed = time.perf_counter() - t0
        state.certificate = float(self.certificate(state))
        history.append(state.it, float(self.objective(state)), state.certificate, elapsed)
