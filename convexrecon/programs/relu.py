"""Convex two-layer ReLU programs on data matrices.

Two separate program classes share one pattern-sampling helper (no mode flags):

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
:mod:`convexrecon.programs.relu_certificates`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import copy

import torch

from convexrecon._checks import as_tensor, check_finite, check_positive
from convexrecon.errors import InputError
from convexrecon.programs.base import Program
from convexrecon.programs.composite import CompositeProgram, ProxTerm, SmoothTerm
from convexrecon.programs.terms import group_soft_threshold, singular_value_threshold

__all__ = ["Patterns", "sample_patterns", "GatedReLU", "TwoLayerReLU",
           "group_norms", "nuclear_norms", "prox_group", "prox_nuclear"]

CVXPY_SIZE_LIMIT = 400_000


# --------------------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------------------
@dataclass
class Patterns:
    """Activation patterns ``D`` (bool ``(n, P)``) and the gates that made them.

    ``gates`` is ``(d, P)``: column ``i`` is the gate vector ``g_i`` with
    ``D[:, i] = X g_i >= 0``. It may be ``None`` for user-given patterns, in which
    case gated networks cannot be recovered.
    """

    D: torch.Tensor
    gates: torch.Tensor | None


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    return torch.Generator(device="cpu").manual_seed(int(seed if seed is not None else 0))


def sample_patterns(X: torch.Tensor, n_patterns: int, *, seed: int | None = 0,
                    generator: torch.Generator | None = None,
                    drop_zero: bool = True) -> Patterns:
    """Sample ``n_patterns`` Gaussian gates and the distinct patterns they induce.

    Duplicate patterns are dropped (first occurrence kept) and, with ``drop_zero``,
    so are all-zero patterns. The result may therefore hold fewer than
    ``n_patterns`` patterns; InputError if none is left.
    """
    if not isinstance(X, torch.Tensor) or X.ndim != 2:
        raise InputError(f"X: expected a 2-D tensor (n, d), got {getattr(X, 'shape', type(X))}")
    n_patterns = int(n_patterns)
    if n_patterns < 1:
        raise InputError(f"n_patterns: expected an integer >= 1, got {n_patterns}")
    gen = _generator(seed, generator)
    d = X.shape[1]
    gates = torch.randn(d, n_patterns, generator=gen, dtype=torch.float64).to(
        device=X.device, dtype=X.dtype)
    D = X @ gates >= 0
    return _dedupe(D, gates, drop_zero=drop_zero)


def _dedupe(D: torch.Tensor, gates: torch.Tensor | None, *, drop_zero: bool) -> Patterns:
    n, P = D.shape
    keep: list[int] = []
    seen: set[bytes] = set()
    cols = D.T.contiguous().cpu().numpy()
    for i in range(P):
        if drop_zero and not cols[i].any():
            continue
        key = cols[i].tobytes()
        if key in seen:
            continue
        seen.add(key)
        keep.append(i)
    if not keep:
        raise InputError("patterns: expected at least one non-zero pattern, got none "
                         f"(from {P} sampled gates on n={n} rows)")
    idx = torch.tensor(keep, device=D.device)
    return Patterns(D=D[:, idx].contiguous(),
                    gates=None if gates is None else gates[:, idx].contiguous())


# --------------------------------------------------------------------------------------
# Norms and proxes over blocks (P, d, c)
# --------------------------------------------------------------------------------------
def group_norms(U: torch.Tensor) -> torch.Tensor:
    """Euclidean norms over the ``d`` axis: ``(P, d, c) -> (P, c)``."""
    return torch.linalg.vector_norm(U, dim=1)


def nuclear_norms(U: torch.Tensor) -> torch.Tensor:
    """Nuclear norm of each ``(d, c)`` block: ``(P, d, c) -> (P,)``."""
    if U.shape[-1] == 1:
        return group_norms(U)[:, 0]
    return torch.linalg.svdvals(U).sum(dim=-1)


def prox_group(U: torch.Tensor, t: float) -> torch.Tensor:
    """Block soft-thresholding over the ``d`` axis with threshold ``t``."""
    return group_soft_threshold(U, t, dims=(1,))


def prox_nuclear(U: torch.Tensor, t: float) -> torch.Tensor:
    """Singular-value soft-thresholding of each ``(d, c)`` block."""
    if U.shape[-1] == 1:
        return prox_group(U, t)
    return singular_value_threshold(U, t)[0]


# --------------------------------------------------------------------------------------
# Shared data handling and linear maps
# --------------------------------------------------------------------------------------
class _PatternData:
    """Checked data ``X (n, d)``, ``Y (n, c)``, patterns and the maps over blocks."""

    def __init__(self, X: Any, y: Any, *, n_patterns: int | None, beta: float,
                 seed: int | None, generator: torch.Generator | None,
                 patterns: Patterns | None) -> None:
        X = as_tensor(X, "X")
        y = as_tensor(y, "y")
        if X.is_complex() or y.is_complex():
            raise InputError("X, y: expected real tensors (split complex targets into "
                             f"real/imag columns), got {X.dtype} and {y.dtype}")
        if X.ndim != 2:
            raise InputError(f"X: expected shape (n, d), got {tuple(X.shape)}")
        if y.ndim not in (1, 2):
            raise InputError(f"y: expected shape (n,) or (n, c), got {tuple(y.shape)}")
        if y.shape[0] != X.shape[0]:
            raise InputError(f"y: expected {X.shape[0]} rows to match X {tuple(X.shape)}, "
                             f"got {tuple(y.shape)}")
        if X.shape[0] == 0 or X.shape[1] == 0 or (y.ndim == 2 and y.shape[1] == 0):
            raise InputError(f"X, y: expected non-empty data, got X {tuple(X.shape)}, "
                             f"y {tuple(y.shape)}")
        dtype = X.dtype if X.is_floating_point() else torch.float64
        if y.is_floating_point() and X.is_floating_point():
            dtype = torch.promote_types(X.dtype, y.dtype)
        X = check_finite(X.to(dtype), "X")
        y = check_finite(y.to(device=X.device, dtype=dtype), "y")
        self.beta = check_positive(beta, "beta")
        self.scalar_output = y.ndim == 1
        self.X = X
        self.Y = y.reshape(y.shape[0], -1)
        if patterns is None:
            if n_patterns is None:
                raise InputError("n_patterns: expected an integer >= 1 (or patterns=), got None")
            patterns = sample_patterns(X, n_patterns, seed=seed, generator=generator)
        else:
            if not isinstance(patterns, Patterns):
                raise InputError(f"patterns: expected a Patterns, got {type(patterns).__name__}")
            Dp = patterns.D
            if Dp.dtype != torch.bool or Dp.ndim != 2 or Dp.shape[0] != X.shape[0]:
                raise InputError(f"patterns.D: expected a bool tensor ({X.shape[0]}, P), "
                                 f"got {Dp.dtype} {tuple(Dp.shape)}")
            if Dp.shape[1] == 0 or not bool(Dp.any(dim=0).all()):
                raise InputError("patterns.D: expected P >= 1 patterns, none all-zero, "
                                 f"got {Dp.shape[1]} with {int((~Dp.any(dim=0)).sum())} zero")
            g = patterns.gates
            if g is not None and (g.ndim != 2 or g.shape != (X.shape[1], Dp.shape[1])):
                raise InputError(f"patterns.gates: expected shape ({X.shape[1]}, "
                                 f"{Dp.shape[1]}), got {tuple(g.shape)}")
            patterns = Patterns(D=Dp.to(X.device),
                                gates=None if g is None else g.to(X.device, dtype))
        self.patterns = patterns
        self.D = patterns.D
        self.Dm = patterns.D.to(dtype)
        self._lip: float | None = None

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "_PatternData":
        """A copy with the data moved to ``device`` and/or cast to real ``dtype``."""
        if dtype is not None and not dtype.is_floating_point:
            raise InputError(f"dtype: expected a real floating dtype, got {dtype}")
        new = copy.copy(self)
        dev = device if device is not None else self.X.device
        dt = dtype if dtype is not None else self.X.dtype
        new.X = self.X.to(dev, dt)
        new.Y = self.Y.to(dev, dt)
        new.D = self.D.to(dev)
        new.Dm = self.Dm.to(dev, dt)
        g = self.patterns.gates
        new.patterns = Patterns(D=new.D, gates=None if g is None else g.to(dev, dt))
        new._lip = self._lip
        new._kernel_eig = None
        return new

    # sizes
    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def c(self) -> int:
        return self.Y.shape[1]

    @property
    def P(self) -> int:
        return self.D.shape[1]

    @property
    def block_shape(self) -> tuple[int, int, int]:
        """Shape ``(P, d, c)`` of one block variable."""
        return (self.P, self.d, self.c)

    # maps
    def xu(self, U: torch.Tensor) -> torch.Tensor:
        """``X U_i`` for every block: ``(P, d, c) -> (n, P, c)``."""
        P, d, c = U.shape
        return (self.X @ U.permute(1, 0, 2).reshape(d, P * c)).reshape(self.n, P, c)

    def xt(self, Z: torch.Tensor) -> torch.Tensor:
        """``X^T Z_i`` for every block: ``(n, P, c) -> (P, d, c)``."""
        n, P, c = Z.shape
        return (self.X.T @ Z.reshape(n, P * c)).reshape(self.d, P, c).permute(1, 0, 2)

    def apply(self, U: torch.Tensor) -> torch.Tensor:
        """``sum_i D_i X U_i``: ``(P, d, c) -> (n, c)``."""
        return (self.xu(U) * self.Dm.unsqueeze(-1)).sum(dim=1)

    def adjoint(self, R: torch.Tensor) -> torch.Tensor:
        """``X^T D_i R`` for every ``i``: ``(n, c) -> (P, d, c)``."""
        return self.xt(self.Dm.unsqueeze(-1) * R.unsqueeze(1))

    def kernel(self) -> torch.Tensor:
        """``sum_i D_i X X^T D_i = (X X^T) * (D D^T)``, the ``n x n`` Gram of ``apply``."""
        return (self.X @ self.X.T) * (self.Dm @ self.Dm.T)

    def lipschitz_ls(self) -> float:
        """Largest eigenvalue of ``apply^T apply`` (cached)."""
        if self._lip is None:
            if self.n <= 2000:
                self._lip = float(torch.linalg.eigvalsh(self.kernel())[-1])
            else:
                g = torch.Generator(device="cpu").manual_seed(0)
                U = torch.randn(self.block_shape, generator=g, dtype=self.X.dtype).to(self.X.device)
                lam = 0.0
                for _ in range(100):
                    Z = self.adjoint(self.apply(U))
                    new = float(torch.linalg.vector_norm(Z))
                    U = Z / max(new, 1e-300)
                    if abs(new - lam) <= 1e-6 * new:
                        break
                    lam = new
                self._lip = new
        return self._lip

    def check_blocks(self, U: Any, name: str) -> torch.Tensor:
        """Check one block variable of shape ``(P, d, c)``."""
        if not isinstance(U, torch.Tensor) or tuple(U.shape) != self.block_shape:
            raise InputError(f"{name}: expected a tensor of shape {self.block_shape}, "
                             f"got {tuple(getattr(U, 'shape', ())) or type(U).__name__}")
        return U

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.block_shape, dtype=self.X.dtype, device=self.X.device)

    def output(self, F: torch.Tensor) -> torch.Tensor:
        """Return ``(n, c)`` predictions as ``(n,)`` when ``y`` was a vector."""
        return F[:, 0] if self.scalar_output else F


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
    """``beta sum_i ||U_i||`` with the group norm (``c = 1``) or nuclear norm."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

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
        super().__init__(_PatternLeastSquares(self.data), _BlockPenalty(self.data.beta))

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "GatedReLU":
        """A copy of the program on ``device`` and/or in real ``dtype``."""
        new = copy.copy(self)
        new.data = self.data.to(device, dtype)
        new.smooth = _PatternLeastSquares(new.data)
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
        from convexrecon.programs.relu_certificates import gated_gap
        return gated_gap(self, self.data.check_blocks(U, "x"), dual=dual).relative

    def pattern_check(self, U: torch.Tensor, *, dual: torch.Tensor | None = None,
                      n_fresh: int = 1000, seed: int = 12345) -> float:
        """``max ||X^T D lam|| / beta`` over fresh gates (> 1 + tol: more patterns
        needed); ``lam`` as in :meth:`certificate` (``dual``: a solver's candidate)."""
        from convexrecon.programs.relu_certificates import gated_dual_point, fresh_ratio
        lam = gated_dual_point(self, self.data.check_blocks(U, "x"), dual=dual)
        return fresh_ratio(self.data, lam, n_fresh=n_fresh, seed=seed)

    def to_cvxpy(self, *, max_size: int = CVXPY_SIZE_LIMIT):
        """``(problem, to_x)``; InputError naming ``max_size`` when too large."""
        from convexrecon.programs.relu_cvxpy import gated_to_cvxpy
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

    def kkt(self, x: tuple[torch.Tensor, torch.Tensor], *, multipliers=None):
        """The relative KKT triple; returns a :class:`KKTResidual`."""
        from convexrecon.programs.relu_certificates import relu_kkt
        return relu_kkt(self, self._check(x), multipliers=multipliers)

    def gap(self, x: tuple[torch.Tensor, torch.Tensor], *, multipliers=None,
            dual: torch.Tensor | None = None):
        """Relative duality gap at ``x`` (a :class:`GapResult`); multipliers as
        :meth:`kkt`, ``dual`` an optional ``(n, c)`` candidate for the residual part.
        Valid with the primal value at ``x``: read it with :meth:`violation`."""
        from convexrecon.programs.relu_certificates import estimate_multipliers, relu_gap
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
        from convexrecon.programs.relu_certificates import fresh_ratio
        V, W = self._check(x)
        lam = self.data.Y - self.data.apply(V - W)
        return fresh_ratio(self.data, lam, n_fresh=n_fresh, seed=seed)

    def to_cvxpy(self, *, max_size: int = CVXPY_SIZE_LIMIT):
        """``(problem, to_x)``; InputError naming ``max_size`` when too large."""
        from convexrecon.programs.relu_cvxpy import relu_to_cvxpy
        return relu_to_cvxpy(self, max_size=max_size)
