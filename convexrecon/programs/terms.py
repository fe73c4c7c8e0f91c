"""The terms programs are built from.

* :class:`LeastSquares` -- the smooth data term ``1/2 ||A x - y||_W^2 + mu/2 ||x||^2``
  (in :mod:`convexrecon.programs.least_squares`, re-exported here). It only ever
  applies the operator's (cheap, specialised) normal ``A.N``.
* Prox-friendly terms (:class:`L1`, :class:`GroupL1`, :class:`Nuclear`,
  :class:`WaveletL1`, :class:`NonNegative`). Norm-like terms also give their dual
  norm (``dual_norm``), which duality-gap certificates use.
* :class:`TV` -- ``lam ||D x||_{2,1}``; not prox-friendly, PDHG uses the prox of
  its conjugate (a projection).

Every term exports itself to cvxpy with ``to_cvxpy(expr, shape)``: ``expr`` is the
*flattened* (C order) cvxpy variable of shape ``shape`` (batch dimensions included),
and the result is ``(objective_expression, constraints)``. Proxes map over tuple
variables leaf by leaf (the value is the sum over leaves).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator, prod
from convexrecon.programs._cvx import CvxVector, as_cvx_vector
from convexrecon.programs._systems import per_system, system_max, system_sum
from convexrecon.programs.composite import ProxTerm
# the data term lives in least_squares.py; these names stay importable from here
from convexrecon.programs.least_squares import (  # noqa: F401
    CvxpyTerm, LeastSquares, _rinner, _sumsq, _Weighted,
)
from convexrecon.tree import tree_map

__all__ = [
    "LeastSquares", "L1", "GroupL1", "Nuclear", "WaveletL1", "NonNegative",
    "soft_threshold", "group_soft_threshold", "singular_value_threshold", "CvxpyTerm",
]


def _tiny(x: torch.Tensor) -> float:
    return float(torch.finfo(x.real.dtype if x.is_complex() else x.dtype).tiny)


def soft_threshold(x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Complex soft threshold on the modulus: ``x * max(1 - t/|x|, 0)`` (also real)."""
    mag = x.abs().clamp_min_(_tiny(x))
    return x * (1.0 - t / mag).clamp_min_(0.0)


def soft_threshold_(x: torch.Tensor, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`soft_threshold` in place (``x`` is overwritten and returned) with the new
    moduli ``max(|x| - t, 0)`` (so the L1 norm of the result costs one sum)."""
    mag = x.abs()
    new = (mag - t).clamp_min_(0.0)
    x.mul_(new / mag.clamp_min_(_tiny(x)))
    return x, new


def group_soft_threshold(x: torch.Tensor, t: float, dims: Sequence[int]) -> torch.Tensor:
    """Shrink the 2-norm of each group (groups run along ``dims``) by ``t``."""
    norm = torch.sqrt(_abs2(x).sum(dim=tuple(dims), keepdim=True)).clamp_min_(_tiny(x))
    return x * (1.0 - t / norm).clamp_min_(0.0)


def singular_value_threshold(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink the singular values of the matrices in the last two dimensions by ``t``.

    Returns ``(out, s)``: the thresholded matrices and their singular values (so the
    nuclear norm of ``out`` is ``s.sum()`` with no second SVD).
    """
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    s = (s - t).clamp_min_(0.0)
    return (u * s.to(u.dtype).unsqueeze(-2)) @ vh, s


def _abs2(x: torch.Tensor) -> torch.Tensor:
    return x.real * x.real + x.imag * x.imag if x.is_complex() else x * x


def _leaves(x) -> list:
    return list(x) if isinstance(x, tuple) else [x]


def _cvx_leaves(expr, shape) -> list[tuple[CvxVector, tuple[int, ...]]]:
    """Pair flat cvxpy vectors with their shapes (tuple variables: tuples of both)."""
    if isinstance(expr, (tuple, list)):
        if not isinstance(shape, (tuple, list)) or len(shape) != len(expr):
            raise InputError(f"shape: expected one shape per leaf ({len(expr)}), got {shape!r}")
        return [(as_cvx_vector(e), tuple(s)) for e, s in zip(expr, shape)]
    return [(as_cvx_vector(expr), tuple(shape))]


# -- prox-friendly terms ------------------------------------------------------------
class _NormTerm(ProxTerm):
    """A norm-like prox term ``lam * ||x||``; leafwise over tuple variables.

    Every method takes an optional ``batch_dims = k``: the first ``k`` axes of each
    leaf index independent systems, ``value`` and ``dual_norm_per_system`` then give
    one value per system, and ``step`` may be a tensor of shape ``batch[:k]`` (one
    step per system).
    """

    def __init__(self, lam: float) -> None:
        self.lam = check_positive(lam, "lam", strict=False)

    def _value1(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The norm of every system of ``x`` (shape ``x.shape[:k]``)."""
        raise NotImplementedError

    def _prox1(self, x: torch.Tensor, t) -> torch.Tensor:
        """The prox with threshold ``t`` (a number, or per system, broadcast to ``x``)."""
        raise NotImplementedError

    def _dual1(self, v: torch.Tensor, k: int) -> torch.Tensor:
        """The dual norm of every system of ``v`` (shape ``v.shape[:k]``)."""
        raise NotImplementedError

    def value(self, x, batch_dims: int = 0) -> torch.Tensor:
        return sum(self.lam * self._value1(v, batch_dims) for v in _leaves(x))

    def prox(self, x, step):
        return tree_map(lambda v: self._prox1(v, per_system(step, v) * self.lam), x)

    def prox_with_value(self, x, step, batch_dims: int = 0):
        """``(prox(x, step), value(prox(x, step)))``; overridden where it is free."""
        z = self.prox(x, step)
        return z, self.value(z, batch_dims)

    def dual_norm_per_system(self, v, batch_dims: int) -> torch.Tensor:
        """The dual norm of every system of ``v`` (``g*`` is the indicator of
        ``dual_norm <= 1``; ``inf`` where ``lam == 0`` and ``v != 0``)."""
        leaves = [self._dual1(u, batch_dims) for u in _leaves(v)]
        d = leaves[0]
        for u in leaves[1:]:
            d = torch.maximum(d, u)
        d = d.double()
        if self.lam == 0:
            return torch.where(d == 0, torch.zeros_like(d), torch.full_like(d, float("inf")))
        return d / self.lam

    def dual_norm(self, v) -> float:
        """The dual norm of ``v`` for this term: ``g*`` is the indicator of
        ``dual_norm <= 1`` (``inf`` if ``lam == 0`` and ``v != 0``)."""
        return float(self.dual_norm_per_system(v, 0))


class L1(_NormTerm):
    """``lam * sum |x_i|`` (the modulus for complex entries)."""

    def _value1(self, x, k):
        return system_sum(x.abs(), k)

    def _prox1(self, x, t):
        return soft_threshold(x, t)

    def _dual1(self, v, k):
        return system_max(v.abs(), k)

    def to_cvxpy(self, expr, shape) -> CvxpyTerm:
        import cvxpy as cp

        return sum(self.lam * cp.sum(v.modulus()) for v, _ in _cvx_leaves(expr, shape)), []


class GroupL1(_NormTerm):
    """``lam * sum_groups ||x_group||_2`` with groups running along ``axis``.

    Args:
        lam: weight.
        axis: the dimension(s) a group runs along (negative = from the end), e.g.
            ``axis=-1`` for rows of a matrix. With ``batch_dims = k`` the axes must
            lie after the first ``k``.
    """

    def __init__(self, lam: float, *, axis: int | Sequence[int]) -> None:
        super().__init__(lam)
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        if not axes or not all(isinstance(a, int) for a in axes):
            raise InputError(f"axis: expected an int or a tuple of ints, got {axis!r}")
        self.axis = axes

    def _norms(self, x, keepdim: bool = False):
        return torch.sqrt(_abs2(x).sum(dim=self.axis, keepdim=keepdim))

    def _value1(self, x, k):
        return system_sum(self._norms(x, keepdim=True), k)

    def _prox1(self, x, t):
        return group_soft_threshold(x, t, self.axis)

    def _dual1(self, v, k):
        return system_max(self._norms(v, keepdim=True), k)

    def to_cvxpy(self, expr, shape) -> CvxpyTerm:
        import cvxpy as cp

        total = 0.0
        for v, shp in _cvx_leaves(expr, shape):
            nd = len(shp)
            axes = sorted({a % nd for a in self.axis})
            rest = [d for d in range(nd) if d not in axes]
            idx = np.arange(prod(shp)).reshape(shp).transpose(*rest, *axes)
            m = prod([shp[a] for a in axes])
            g = v.take(idx.reshape(-1))
            parts = [cp.reshape(g.re, (idx.size // m, m), order="C")]
            if g.im is not None:
                parts.append(cp.reshape(g.im, (idx.size // m, m), order="C"))
            total = total + self.lam * cp.sum(cp.norm(cp.hstack(parts), 2, axis=1))
        return total, []


class Nuclear(_NormTerm):
    """``lam * sum_i sigma_i(X)`` of the matrices in the last two dimensions
    (batched); the prox is singular value thresholding."""

    def _value1(self, x, k):
        return system_sum(torch.linalg.svdvals(x), k)

    def _prox1(self, x, t):
        if isinstance(t, torch.Tensor):
            t = t.squeeze(-1)  # broadcast against the singular values (one axis fewer)
        return singular_value_threshold(x, t)[0]

    def _dual1(self, v, k):
        return system_max(torch.linalg.matrix_norm(v, ord=2).unsqueeze(-1), k)

    def to_cvxpy(self, expr, shape) -> CvxpyTerm:
        import cvxpy as cp

        total = 0.0
        for v, shp in _cvx_leaves(expr, shape):
            e = v.complex_expr()
            if len(shp) < 2:
                raise InputError(f"shape: expected matrices (at least 2-D), got {shp}")
            m, n = shp[-2:]
            for k in range(prod(shp) // (m * n)):
                mat = cp.reshape(e[k * m * n:(k + 1) * m * n], (m, n), order="C")
                total = total + self.lam * cp.normNuc(mat)
        return total, []


class WaveletL1(_NormTerm):
    """``lam * ||W x||_1`` with ``W`` an orthogonal operator (``W^H W = W W^H = I``);
    the prox ``W^H soft(W x)`` is then exact.

    Args:
        lam: weight.
        wavelet: the orthogonal operator ``W`` (e.g.
            ``convexrecon.operators.wavelet.Wavelet``).
    """

    def __init__(self, lam: float, *, wavelet: Operator) -> None:
        super().__init__(lam)
        if not isinstance(wavelet, Operator):
            raise InputError(f"wavelet: expected an orthogonal Operator, got {type(wavelet).__name__}")
        self.W = wavelet

    def _value1(self, x, k):
        return system_sum(self.W.forward(x).abs(), k)

    def _coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """``W x`` in a tensor of its own (thresholded in place)."""
        c = self.W.forward(x)
        if c.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
            c = c.clone()  # an operator that returns (a view of) its input
        return c

    def _shrink(self, x, t, shift=None):
        """``(S^-1 W^H soft(W S x, t), new moduli)``: fused by the transform when it
        can (:meth:`~convexrecon.operators.wavelet.Wavelet.shrink`)."""
        fused = getattr(self.W, "shrink", None)
        if fused is not None:
            return fused(x, t, shift=shift)
        axes = self.shift_period()[0] if shift is not None and any(shift) else None
        xs = torch.roll(x, shifts=tuple(shift), dims=axes) if axes else x
        c, mag = soft_threshold_(self._coefficients(xs), t)
        out = self.W.adjoint(c)
        return (torch.roll(out, shifts=tuple(-s for s in shift), dims=axes) if axes else out), mag

    def _prox1(self, x, t):
        return self._shrink(x, t)[0]

    def _dual1(self, v, k):
        return system_max(self.W.forward(v).abs(), k)

    def shift_period(self) -> tuple[tuple[int, ...], int]:
        """``(axes, period)`` of the cycle-spinning shifts: the transformed axes of a
        periodized wavelet, whose ``2**levels`` circular shifts per axis are the
        distinct ones. InputError for an operator without ``axes`` and ``levels``."""
        axes, levels = getattr(self.W, "axes", None), getattr(self.W, "levels", None)
        if axes is None or not isinstance(levels, int):
            raise InputError(f"wavelet: random shifts need a multilevel Wavelet (axes, levels), "
                             f"got {type(self.W).__name__}")
        return tuple(axes), 2 ** levels

    def prox_shifted(self, x, step, shift):
        """The prox of ``lam ||W S x||_1`` with ``S`` the circular shift by ``shift``
        along the transformed axes (cycle spinning): ``S^-1 W^H soft(W S x)``, exact
        because ``W S`` is orthogonal too."""
        axes, _ = self.shift_period()
        shift = tuple(int(s) for s in shift)
        if len(shift) != len(axes):
            raise InputError(f"shift: expected one shift per axis {axes}, got {shift}")
        return self._shrink(x, per_system(step, x) * self.lam, shift)[0]

    def prox_with_value(self, x, step, batch_dims: int = 0):
        # W x_new = soft(W x) because W is orthogonal: the value costs no transform
        out, mag = self._shrink(x, per_system(step, x) * self.lam)
        return out, self.lam * system_sum(mag, batch_dims)

    def to_cvxpy(self, expr, shape) -> CvxpyTerm:
        import cvxpy as cp

        from convexrecon.operators.linalg import to_dense

        wd = to_dense(self.W).cpu().numpy()
        return self.lam * cp.sum(as_cvx_vector(expr).apply(wd).modulus()), []


class NonNegative(ProxTerm):
    """The indicator of ``x >= 0``; for complex ``x``: real, non-negative values.

    Args:
        tol: the violation (relative to ``max(1, max|x|)``) still counted feasible
            by :meth:`value` (solutions from cvxpy are feasible only to tolerance).
    """

    def __init__(self, *, tol: float = 1e-6) -> None:
        self.tol = check_positive(tol, "tol", strict=False)

    def _infeasible(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Per system (shape ``x.shape[:k]``): is the violation above tolerance?"""
        v = system_max((-x.real).clamp_min(0), k)
        if x.is_complex():
            v = torch.maximum(v, system_max(x.imag.abs(), k))
        return v > self.tol * system_max(x.abs(), k).clamp_min(1.0)

    def value(self, x, batch_dims: int = 0) -> torch.Tensor:
        bad = None
        for v in _leaves(x):
            b = self._infeasible(v, batch_dims)
            bad = b if bad is None else bad | b
        return torch.where(bad, float("inf"), 0.0).to(torch.float64)

    def prox(self, x, step: float):
        def clamp(v):
            if v.is_complex():
                return torch.complex(v.real.clamp_min(0), torch.zeros_like(v.real))
            return v.clamp_min(0)
        return tree_map(clamp, x)

    def prox_with_value(self, x, step, batch_dims: int = 0):
        z = self.prox(x, step)
        lead = _leaves(z)[0].shape[:batch_dims]
        return z, torch.zeros(lead, dtype=torch.float64, device=_leaves(z)[0].device)

    def to_cvxpy(self, expr, shape) -> CvxpyTerm:
        import cvxpy as cp

        cons = []
        for v, _ in _cvx_leaves(expr, shape):
            cons.append(v.re >= 0)
            if v.im is not None:
                cons.append(v.im == 0)
        return 0.0, cons
