"""The terms programs are built from.

* :class:`LeastSquares` -- the smooth data term ``1/2 ||A x - y||_W^2 + mu/2 ||x||^2``.
  It only ever applies the operator's (cheap, specialised) normal ``A.N``:
  ``A^H y`` and ``||y||^2`` are computed once, and the value comes from
  ``1/2 <x, A.N x> - Re<x, A^H y> + 1/2 ||y||^2`` so that value and gradient share
  one ``A.N``.
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

from typing import Any, Sequence

import numpy as np
import torch

from convexrecon._checks import check_positive, check_trailing_shape
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator, prod
from convexrecon.programs._cvx import CvxVector, as_cvx_vector, dense_normals
from convexrecon.programs._systems import (
    per_system, power_method_per_system, system_max, system_rinner, system_sum, system_sumsq,
)
from convexrecon.programs.composite import ProxTerm, SmoothTerm
from convexrecon.tree import real_inner, tree_map

__all__ = [
    "LeastSquares", "L1", "GroupL1", "Nuclear", "WaveletL1", "NonNegative",
    "soft_threshold", "group_soft_threshold", "singular_value_threshold", "CvxpyTerm",
]

CvxpyTerm = tuple[Any, list]  # (cvxpy expression or 0.0, list of constraints)


def _rinner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re <a, b>`` summed over everything (:func:`convexrecon.tree.real_inner`)."""
    return real_inner(a, b)


def _sumsq(a: torch.Tensor) -> torch.Tensor:
    return _rinner(a, a)


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


class _Weighted(Operator):
    """``diag(sqrt(w)) A`` for real non-negative data weights ``w`` on the output."""

    def __init__(self, a: Operator, weights: torch.Tensor) -> None:
        super().__init__(a.ishape, a.oshape, dtype=a.dtype)
        self.a = a
        self.w = weights
        self.sqrt_w = torch.sqrt(weights)

    def _forward(self, x):
        return self.sqrt_w * self.a._forward(x)

    def _adjoint(self, y):
        return self.a._adjoint(self.sqrt_w * y)

    def _normal(self, x):
        return self.a._adjoint(self.w * self.a._forward(x))


# -- smooth data term ---------------------------------------------------------------
class LeastSquares(SmoothTerm):
    """``1/2 ||A x - y||_W^2 + mu/2 ||x||^2`` through the operator's normal only.

    Args:
        A: the encoding operator.
        y: data of shape ``(*batch, *A.oshape)``.
        weights: optional real non-negative weights broadcastable to ``y`` (the
            operator is wrapped as ``sqrt(W) A``; its specialised normal is lost).
        mu: Tikhonov weight ``>= 0``.
        lipschitz: a known Lipschitz constant of ``A.N`` (skips the power method);
            ``mu`` is added to it.
        power_iters: iterations of the power method for :meth:`lipschitz`.
    """

    def __init__(self, A: Operator, y: torch.Tensor, *, weights: torch.Tensor | None = None,
                 mu: float = 0.0, lipschitz: float | None = None, power_iters: int = 100) -> None:
        if not isinstance(A, Operator):
            raise InputError(f"A: expected an Operator, got {type(A).__name__}")
        if not isinstance(y, torch.Tensor):
            raise InputError(f"y: expected a tensor, got {type(y).__name__}")
        check_trailing_shape(y, A.oshape, "y")
        if y.is_complex() and not A.dtype.is_complex:
            raise InputError(f"y: expected a real tensor for the real operator {A.name}, got {y.dtype}")
        y = y.to(A.dtype)
        self.mu = check_positive(mu, "mu", strict=False)
        if weights is not None:
            if not isinstance(weights, torch.Tensor) or weights.is_complex():
                raise InputError(f"weights: expected a real tensor, got {getattr(weights, 'dtype', type(weights))}")
            if bool((weights < 0).any()):
                raise InputError("weights: expected non-negative values, got negative entries")
            try:
                torch.broadcast_shapes(weights.shape, y.shape)
            except RuntimeError as exc:
                raise InputError(f"weights: expected a shape broadcastable to {tuple(y.shape)}, "
                                 f"got {tuple(weights.shape)}") from exc
            w = weights.to(device=y.device, dtype=y.real.dtype)
            A = _Weighted(A, w)
            y = torch.sqrt(w) * y
        self.op: Operator = A
        self.y = y
        with torch.no_grad():
            self.aty = A.adjoint(y)
            self.y_norm2 = float(_sumsq(y))
        self.batch_shape: tuple[int, ...] = tuple(self.aty.shape[: self.aty.ndim - len(A.ishape)])
        self.shape: tuple[int, ...] = (*self.batch_shape, *A.ishape)
        self._lip = None if lipschitz is None else check_positive(lipschitz, "lipschitz")
        self._lips: dict[int, torch.Tensor] = {}
        self._ynorms: dict[int, torch.Tensor] = {}
        self.power_iters = int(power_iters)

    # the affine gradient ``grad = H x - A^H y`` with ``H = A.N + mu I``
    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A.N x`` (without ``mu``)."""
        return self.op.normal(x)

    def grad_from_normal(self, x: torch.Tensor, nx: torch.Tensor) -> torch.Tensor:
        """The gradient given ``nx = A.N x``."""
        g = nx - self.aty
        return g + self.mu * x if self.mu else g

    def value_from_normal(self, x: torch.Tensor, nx: torch.Tensor) -> torch.Tensor:
        """The value given ``nx = A.N x`` (no operator application)."""
        v = 0.5 * _rinner(x, nx) - _rinner(x, self.aty) + 0.5 * self.y_norm2
        return v + 0.5 * self.mu * _sumsq(x) if self.mu else v

    def y_norm2_per_system(self, batch_dims: int) -> torch.Tensor:
        """``||y||^2`` of every system (float64, shape ``batch_shape[:batch_dims]``)."""
        if batch_dims not in self._ynorms:
            n = len(self.op.oshape)
            yy = system_sumsq(self.y, self.y.ndim - n).double()  # y's own batch shape
            yy = yy.expand(self.batch_shape) if yy.shape != self.batch_shape else yy
            self._ynorms[batch_dims] = system_sum(yy, batch_dims)
        return self._ynorms[batch_dims]

    def values_from_normal(self, x: torch.Tensor, nx: torch.Tensor, batch_dims: int) -> torch.Tensor:
        """The value of every system given ``nx = A.N x`` (float64, shape
        ``batch_shape[:batch_dims]``)."""
        k = batch_dims
        v = (0.5 * system_rinner(x, nx, k).double() - system_rinner(x, self.aty, k).double()
             + 0.5 * self.y_norm2_per_system(k))
        return v + 0.5 * self.mu * system_sumsq(x, k).double() if self.mu else v

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.value_from_normal(x, self.op.normal(x))

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.grad_from_normal(x, self.op.normal(x))

    def value_and_grad(self, x: torch.Tensor):
        nx = self.op.normal(x)
        return self.value_from_normal(x, nx), self.grad_from_normal(x, nx)

    def lipschitz(self) -> float:
        """``lambda_max(A.N) + mu`` by the power method (cached), times 1.01 for safety
        (the power method approaches from below); a given ``lipschitz`` is used as is."""
        if self._lip is None:
            self._lip = float(self.lipschitz_per_system(0)) - self.mu
        return self._lip + self.mu

    def lipschitz_per_system(self, batch_dims: int) -> torch.Tensor:
        """The Lipschitz constant of every system's gradient (float64, shape
        ``batch_shape[:batch_dims]``): a batched power method
        (:func:`~convexrecon.programs._systems.power_method_per_system`, each system
        as if alone), times 1.01, plus ``mu``; a given ``lipschitz`` for every system."""
        if batch_dims not in self._lips:
            shape = self.batch_shape[:batch_dims]
            if self._lip is not None:
                lam = torch.full(shape, self._lip, dtype=torch.float64, device=self.aty.device)
            else:
                lam = 1.01 * power_method_per_system(
                    self.op.N, self.batch_shape, batch_dims, iters=self.power_iters, tol=1e-7,
                    device=self.aty.device)
            self._lips[batch_dims] = lam
        return self._lips[batch_dims] + self.mu

    def to_cvxpy(self, expr, shape: Sequence[int], *, basis: np.ndarray | None = None) -> CvxpyTerm:
        """``1/2 <x, A.N x> - Re<A^H y, x> + 1/2||y||^2 + mu/2||x||^2`` with the dense
        normal of each slice: exactly this term.

        ``basis``: optional matrix ``B`` (``n x n``, ``n = prod(A.ishape)``); the
        cvxpy vector then holds coefficients ``c`` with ``x = B c`` per slice.
        """
        if tuple(shape) != self.shape:
            raise InputError(f"shape: expected the data term's variable shape {self.shape}, got {tuple(shape)}")
        vec = as_cvx_vector(expr)
        mats = dense_normals(self.op, self.batch_shape, device=self.aty.device)
        n = prod(self.op.ishape)
        b = self.aty.detach().cpu().numpy().reshape(-1, n)
        if self.mu:
            mats = [m + self.mu * np.eye(n) for m in mats]
        if basis is not None:
            bh = basis.conj().T
            mats = [bh @ m @ basis for m in mats]
            b = b @ basis.conj()
        obj = 0.5 * vec.hermitian_form(mats) - vec.real_inner(b) + 0.5 * self.y_norm2
        return obj, []


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


# -- TV: used through its conjugate -------------------------------------------------
