"""Convex two-layer ReLU programs on data matrices.

Two separate program classes share one pattern data class
(:mod:`convexrecon.programs.relu.patterns`: patterns and the maps ``A`` and ``A^T``;
block norms and proxes in :mod:`convexrecon.programs.relu.blocks`), with no mode flags:

* :class:`GatedReLU`: ``min 1/2 ||sum_i D_i X U_i - Y||^2 + beta sum_i ||U_i||``,
  unconstrained, one block ``U_i`` (``d x c``) per pattern. For one output column
  the penalty is the group (Euclidean) norm; for several columns it is the nuclear
  norm, which is exactly the convex form of a gated network with vector outputs.
* :class:`TwoLayerReLU`: the cone-constrained form
  ``min 1/2 ||sum_i D_i X (v_i - w_i) - y||^2 + beta sum_i (||v_i|| + ||w_i||)``
  subject to ``(2 D_i - I) X v_i >= 0`` and ``(2 D_i - I) X w_i >= 0``. With several
  output columns the exact program is one scalar program per column (a block-sparse
  last layer), solved jointly here as independent columns with the group norm taken
  per pattern and per column.

Variables: ``GatedReLU`` takes a tensor ``U`` of shape ``(P, d, c)``;
``TwoLayerReLU`` a tuple ``(V, W)`` of two such tensors. ``c = 1`` when ``y`` is a
vector. Patterns are ``prog.D``, a boolean tensor ``(n, P)``.

The certificates are relative: the duality gap for the gated form, the KKT triple
(violation, stationarity, complementarity) for the ReLU form; see
:mod:`convexrecon.programs.relu.certificates`. Both programs carry the family's
shared members: ``gates``, ``beta_max()``, ``set_beta``, ``certificate``,
``pattern_check``, ``kkt`` (a :class:`~convexrecon.programs.relu.certificates.KKT`)
and ``recover_network``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.programs.base import Program
from convexrecon.programs.composite import CompositeProgram, ProxTerm, SmoothTerm
from convexrecon.programs.relu.blocks import group_norms, nuclear_norms, prox_nuclear
from convexrecon.programs.relu.certificates import (KKT, GapResult, estimate_multipliers,
                                                    fresh_ratio, gated_dual_point, gated_gap,
                                                    gated_kkt, relu_gap, relu_kkt)
from convexrecon.programs.relu.cvxpy_export import gated_to_cvxpy, relu_to_cvxpy
from convexrecon.programs.relu.limits import CVXPY_SIZE_LIMIT
from convexrecon.programs.relu.networks import GatedNet, TwoLayerNet, gated_network, relu_network
from convexrecon.programs.relu.patterns import Patterns, _PatternData

__all__ = ["GatedReLU", "TwoLayerReLU"]


# --------------------------------------------------------------------------------------
# Gated ReLU: a composite program (FISTA applies)
# --------------------------------------------------------------------------------------
class _PatternLeastSquares(SmoothTerm):
    """``1/2 ||sum_i D_i X U_i - Y||^2`` as a smooth term."""

    def __init__(self, data: _PatternData) -> None:
        self.data = data

    def value(self, U: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.sum((self.data.apply(U) - self.data.Y) ** 2)

    def grad(self, U: torch.Tensor) -> torch.Tensor:
        return self.data.adjoint(self.data.apply(U) - self.data.Y)

    def value_and_grad(self, U: torch.Tensor):
        R = self.data.apply(U) - self.data.Y
        return 0.5 * torch.sum(R ** 2), self.data.adjoint(R)

    def lipschitz(self) -> float:
        return self.data.lipschitz_ls()


class _BlockPenalty(ProxTerm):
    """``beta sum_i ||U_i||`` with the group norm (``c = 1``) or nuclear norm
    (``beta`` read from the pattern data, so ``set_beta`` reaches it)."""

    def __init__(self, data: _PatternData) -> None:
        self.data = data

    @property
    def beta(self) -> float:
        return self.data.beta

    def value(self, U: torch.Tensor) -> torch.Tensor:
        return self.beta * nuclear_norms(U).sum()

    def prox(self, U: torch.Tensor, step: float) -> torch.Tensor:
        return prox_nuclear(U, step * self.beta)


class _PatternViews:
    """Views of the pattern data ``self.data`` shared by both program forms."""

    data: "_PatternData"

    @property
    def D(self) -> torch.Tensor:
        """Patterns, bool ``(n, P)``."""
        return self.data.D

    @property
    def beta(self) -> float:
        """The penalty weight."""
        return self.data.beta

    @property
    def gates(self) -> torch.Tensor | None:
        """The gate vectors ``(P, d)``, one per pattern (``None`` for user-given
        patterns without gates)."""
        g = self.data.patterns.gates
        return None if g is None else g.T

    def set_beta(self, beta: float) -> None:
        """Change the penalty weight (e.g. to a fraction of :meth:`beta_max`)."""
        self.data.beta = check_positive(beta, "beta")

    def beta_max(self) -> float:
        """``max_i ||X^T D_i Y||`` (spectral norm for the gated form with several
        outputs, else per column): at or above it, zero is optimal."""
        G = self.data.adjoint(self.data.Y)  # (P, d, c)
        if isinstance(self, GatedReLU) and self.data.c > 1:
            return float(torch.linalg.matrix_norm(G, ord=2).max())
        return float(group_norms(G).max())


class GatedReLU(_PatternViews, CompositeProgram):
    """The convex gated-ReLU program (see the module docstring).

    Args:
        X: data ``(n, d)`` (append a column of ones for a bias).
        y: targets ``(n,)`` or ``(n, c)``.
        n_patterns: number of gates to sample (duplicates/all-zero dropped).
        beta: penalty weight, > 0.
        seed / generator: randomness of the gates.
        patterns: explicit :class:`Patterns` (overrides sampling).
    """

    def __init__(self, X: Any, y: Any, *, n_patterns: int | None = None, beta: float,
                 seed: int | None = 0, generator: torch.Generator | None = None,
                 patterns: Patterns | None = None) -> None:
        self.data = _PatternData(X, y, n_patterns=n_patterns, beta=beta, seed=seed,
                                 generator=generator, patterns=patterns)
        super().__init__(_PatternLeastSquares(self.data), _BlockPenalty(self.data))

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "GatedReLU":
        """A copy of the program on ``device`` and/or in real ``dtype``."""
        new = copy.copy(self)
        new.data = self.data.to(device, dtype)
        new.smooth = _PatternLeastSquares(new.data)
        new.reg = _BlockPenalty(new.data)
        return new

    def zeros(self) -> torch.Tensor:
        """The zero variable ``(P, d, c)``."""
        return self.data.zeros()

    def predict(self, U: torch.Tensor) -> torch.Tensor:
        """Convex model's predictions on the training data."""
        return self.data.output(self.data.apply(self.data.check_blocks(U, "x")))

    def value(self, U: torch.Tensor) -> float:
        U = self.data.check_blocks(U, "x")
        return float(self.smooth.value(U) + self.reg.value(U))

    def certificate(self, U: torch.Tensor, *, dual: torch.Tensor | None = None) -> float:
        """Relative duality gap ``(P(U) - D(lam)) / max(|P|, |D|)``.

        ``lam`` is the best feasible multiple of the residual ``Y - A U`` or of the
        optional candidate ``dual`` (``(n, c)``); any candidate is scaled into the
        dual feasible set first, so the gap is always a valid bound.
        """
        return gated_gap(self, self.data.check_blocks(U, "x"), dual=dual).relative

    def kkt(self, U: torch.Tensor, *, dual: torch.Tensor | None = None) -> KKT:
        """:class:`KKT` with the relative duality gap (``dual`` as :meth:`certificate`)."""
        return gated_kkt(self, self.data.check_blocks(U, "x"), dual=dual)

    def recover_network(self, U: torch.Tensor, *, tol: float = 0.0) -> GatedNet:
        """The gated network of ``U``: a neuron per singular value above ``tol`` of
        each block, behind its gate (InputError for patterns without gates)."""
        return gated_network(self.data, self.data.check_blocks(U, "x"), tol=tol)

    def pattern_check(self, U: torch.Tensor, *, dual: torch.Tensor | None = None,
                      n_fresh: int = 1000, seed: int = 12345) -> float:
        """``max ||X^T D lam|| / beta`` over fresh gates (> 1 + tol: more patterns
        needed); ``lam`` as in :meth:`certificate` (``dual``: a solver's candidate)."""
        lam = gated_dual_point(self, self.data.check_blocks(U, "x"), dual=dual)
        return fresh_ratio(self.data, lam, n_fresh=n_fresh, seed=seed)

    def to_cvxpy(self, *, max_size: int = CVXPY_SIZE_LIMIT):
        """``(problem, to_x)``; InputError naming ``max_size`` when too large."""
        return gated_to_cvxpy(self, max_size=max_size)


# --------------------------------------------------------------------------------------
# Cone-constrained ReLU
# --------------------------------------------------------------------------------------
class TwoLayerReLU(_PatternViews, Program):
    """The convex (cone-constrained) two-layer ReLU program; variables ``(V, W)``.

    Arguments as :class:`GatedReLU`. ``certificate(x)`` is the maximum of the
    relative KKT triple (see :meth:`kkt`); ``kkt(x, multipliers=...)`` accepts the
    constraint multipliers ``(mu_v, mu_w)`` (each ``(n, P, c)``, >= 0) when a solver
    has them, and otherwise estimates them by a small non-negative least-squares fit.
    """

    def __init__(self, X: Any, y: Any, *, n_patterns: int | None = None, beta: float,
                 seed: int | None = 0, generator: torch.Generator | None = None,
                 patterns: Patterns | None = None) -> None:
        self.data = _PatternData(X, y, n_patterns=n_patterns, beta=beta, seed=seed,
                                 generator=generator, patterns=patterns)
        self.E = 2.0 * self.data.Dm - 1.0  # (n, P), entries +-1

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "TwoLayerReLU":
        """A copy of the program on ``device`` and/or in real ``dtype``."""
        new = copy.copy(self)
        new.data = self.data.to(device, dtype)
        new.E = 2.0 * new.data.Dm - 1.0
        return new

    def zeros(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The zero variable ``(V, W)``."""
        return self.data.zeros(), self.data.zeros()

    def column(self, j: int) -> "TwoLayerReLU":
        """The one-output program of column ``j`` (same ``X``, patterns and ``beta``).

        Every column has its own block norms and cone constraints, so the program
        is the sum of its columns' programs: its optimum is theirs stacked.
        """
        new = copy.copy(self)
        new.data = self.data.column(j)
        return new

    def _check(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, tuple) or len(x) != 2:
            raise InputError(f"x: expected a tuple (V, W), got {type(x).__name__}")
        return self.data.check_blocks(x[0], "x[0] (V)"), self.data.check_blocks(x[1], "x[1] (W)")

    def predict(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Convex model's predictions on the training data."""
        V, W = self._check(x)
        return self.data.output(self.data.apply(V - W))

    def slack(self, U: torch.Tensor) -> torch.Tensor:
        """``(2 D_i - I) X U_i`` for every block: ``(P, d, c) -> (n, P, c)`` (>= 0 feasible)."""
        return self.E.unsqueeze(-1) * self.data.xu(U)

    def value(self, x: tuple[torch.Tensor, torch.Tensor]) -> float:
        """Objective value (constraints are not included; see :meth:`kkt`)."""
        V, W = self._check(x)
        R = self.data.apply(V - W) - self.data.Y
        pen = group_norms(V).sum() + group_norms(W).sum()
        return float(0.5 * torch.sum(R ** 2) + self.data.beta * pen)

    def violation(self, x: tuple[torch.Tensor, torch.Tensor]) -> float:
        """Largest constraint violation, relative to ``max |y|``."""
        V, W = self._check(x)
        scale = max(float(self.data.Y.abs().max()), 1e-300)
        worst = max(float(torch.clamp(-self.slack(V), min=0).max()),
                    float(torch.clamp(-self.slack(W), min=0).max()))
        return worst / scale

    def kkt(self, x: tuple[torch.Tensor, torch.Tensor], *, multipliers=None) -> KKT:
        """The relative KKT triple, a :class:`KKT`."""
        return relu_kkt(self, self._check(x), multipliers=multipliers)

    def gap(self, x: tuple[torch.Tensor, torch.Tensor], *, multipliers=None,
            dual: torch.Tensor | None = None) -> GapResult:
        """Relative duality gap at ``x`` (a :class:`GapResult`); multipliers as
        :meth:`kkt`, ``dual`` an optional ``(n, c)`` candidate for the residual part.
        Valid with the primal value at ``x``: read it with :meth:`violation`."""
        x = self._check(x)
        if multipliers is None:
            multipliers = estimate_multipliers(self, x)
        return relu_gap(self, x, multipliers=multipliers, dual=dual)

    def certificate(self, x: tuple[torch.Tensor, torch.Tensor], *, multipliers=None) -> float:
        """``max(violation, stationarity, complementarity)`` of :meth:`kkt`."""
        return self.kkt(x, multipliers=multipliers).max

    def pattern_check(self, x: tuple[torch.Tensor, torch.Tensor], *, n_fresh: int = 1000,
                      seed: int = 12345) -> float:
        """``max ||X^T D lam|| / beta`` over fresh gates, ``lam = y - y_hat``.

        Conservative for the ReLU form (it ignores the cone multipliers): a value
        at most ``1`` proves the sampled patterns suffice.
        """
        V, W = self._check(x)
        lam = self.data.Y - self.data.apply(V - W)
        return fresh_ratio(self.data, lam, n_fresh=n_fresh, seed=seed)

    def to_cvxpy(self, *, max_size: int = CVXPY_SIZE_LIMIT):
        """``(problem, to_x)``; InputError naming ``max_size`` when too large."""
        return relu_to_cvxpy(self, max_size=max_size)

    def recover_network(self, x: tuple[torch.Tensor, torch.Tensor], *,
                        tol: float = 0.0) -> TwoLayerNet:
        """The ReLU network of ``(V, W)``: a neuron per block of norm above ``tol``
        (it reproduces :meth:`predict` where the cone constraints hold)."""
        V, W = self._check(x)
        return relu_network(self.data, V, W, tol=tol)
