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
from convexrecon.operators.linalg import power_method
from convexrecon.programs._cvx import CvxVector, as_cvx_vector, dense_normals
from convexrecon.programs.composite import ProxTerm, SmoothTerm
from convexrecon.tree import tree_map

__all__ = [
    "LeastSquares", "L1", "GroupL1", "Nuclear", "WaveletL1", "NonNegative",
    "soft_threshold", "group_soft_threshold", "singular_value_threshold", "CvxpyTerm",
]

CvxpyTerm = tuple[Any, list]  # (cvxpy expression or 0.0, list of constraints)


def _rinner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re <a, b>`` summed over everything."""
    if a.is_complex():
        return torch.sum(a.real * b.real) + torch.sum(a.imag * b.imag)
    return torch.sum(a * b)


def _sumsq(a: torch.Tensor) -> torch.Tensor:
    return _rinner(a, a)


def _tiny(x: torch.Tensor) -> float:
    return float(torch.finfo(x.real.dtype if x.is_complex() else x.dtype).tiny)


def soft_threshold(x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Complex soft threshold on the modulus: ``x * max(1 - t/|x|, 0)`` (also real)."""
    mag = x.abs().clamp_min_(_tiny(x))
    return x * (1.0 - t / mag).clamp_min_(0.0)


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
            lam = power_method(self.op.N, iters=self.power_iters, tol=1e-7,
                               batch=self.batch_shape, device=self.aty.device)
            self._lip = 1.01 * lam
        return self._lip + self.mu

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
    """A norm-like prox term ``lam * ||x||``; leafwise over tuple variables."""

    def __init__(self, lam: float) -> None:
        self.lam = check_positive(lam, "lam", strict=False)

    def _value1(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _prox1(self, x: torch.Tensor, t: float) -> torch.Tensor:
        raise NotImplementedError

    def _dual1(self, v: torch.Tensor) -> float:
        raise NotImplementedError

    def value(self, x) -> torch.Tensor:
        return sum(self.lam * self._value1(v) for v in _leaves(x))

    def prox(self, x, step: float):
        return tree_map(lambda v: self._prox1(v, step * self.lam), x)

    def prox_with_value(self, x, step: float):
        """``(prox(x, step), value(prox(x, step)))``; overridden where it is free."""
        z = self.prox(x, step)
        return z, self.value(z)

    def dual_norm(self, v) -> float:
        """The dual norm of ``v`` for this term: ``g*`` is the indicator of
        ``dual_norm <= 1`` (``inf`` if ``lam == 0`` and ``v != 0``)."""
        d = max(self._dual1(u) for u in _leaves(v))
        if self.lam == 0:
            return 0.0 if d == 0 else float("inf")
        return d / self.lam


class L1(_NormTerm):
    """``lam * sum |x_i|`` (the modulus for complex entries)."""

    def _value1(self, x):
        return torch.sum(x.abs())

    def _prox1(self, x, t):
        return soft_threshold(x, t)

    def _dual1(self, v):
        return float(v.abs().max()) if v.numel() else 0.0

    def to_cvxpy(self, expr, shape) -> CvxpyTerm:
        import cvxpy as cp

        return sum(self.lam * cp.sum(v.modulus()) for v, _ in _cvx_leaves(expr, shape)), []


class GroupL1(_NormTerm):
    """``lam * sum_groups ||x_group||_2`` with groups running along ``axis``.

    Args:
        lam: weight.
        axis: the dimension(s) a group runs along (negative = from the end), e.g.
            ``axis=-1`` for rows of a matrix.
    """

    def __init__(self, lam: float, *, axis: int | Sequence[int]) -> None:
        super().__init__(lam)
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        if not axes or not all(isinstance(a, int) for a in axes):
            raise InputError(f"axis: expected an int or a tuple of ints, got {axis!r}")
        self.axis = axes

    def _norms(self, x):
        return torch.sqrt(_abs2(x).sum(dim=self.axis))

    def _value1(self, x):
        return torch.sum(self._norms(x))

    def _prox1(self, x, t):
        return group_soft_threshold(x, t, self.axis)

    def _dual1(self, v):
        return float(self._norms(v).max()) if v.numel() else 0.0

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

    def _value1(self, x):
        return torch.sum(torch.linalg.svdvals(x))

    def _prox1(self, x, t):
        return singular_value_threshold(x, t)[0]

    def _dual1(self, v):
        return float(torch.linalg.matrix_norm(v, ord=2).max()) if v.numel() else 0.0

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

    def _value1(self, x):
        return torch.sum(self.W.forward(x).abs())

    def _prox1(self, x, t):
        return self.W.adjoint(soft_threshold(self.W.forward(x), t))

    def _dual1(self, v):
        return float(self.W.forward(v).abs().max())

    def prox_with_value(self, x, step: float):
        # W x_new = soft(W x) because W is orthogonal: the value costs no transform
        c = soft_threshold(self.W.forward(x), step * self.lam)
        return self.W.adjoint(c), self.lam * torch.sum(c.abs())

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

    def _violation(self, x: torch.Tensor) -> float:
        v = float((-x.real).clamp_min(0).max()) if x.numel() else 0.0
        if x.is_complex() and x.numel():
            v = max(v, float(x.imag.abs().max()))
        return v

    def value(self, x) -> torch.Tensor:
        for v in _leaves(x):
            if v.numel() and self._violation(v) > self.tol * max(1.0, float(v.abs().max())):
                return torch.tensor(float("inf"))
        return torch.tensor(0.0)

    def prox(self, x, step: float):
        def clamp(v):
            if v.is_complex():
                return torch.complex(v.real.clamp_min(0), torch.zeros_like(v.real))
            return v.clamp_min(0)
        return tree_map(clamp, x)

    def prox_with_value(self, x, step: float):
        return self.prox(x, step), torch.tensor(0.0)

    def to_cvxpy(self, expr, shape) -> CvxpyTerm:
        import cvxpy as cp

        cons = []
        for v, _ in _cvx_leaves(expr, shape):
            cons.append(v.re >= 0)
            if v.im is not None:
                cons.append(v.im == 0)
        return 0.0, cons


# -- TV: used through its conjugate -------------------------------------------------
