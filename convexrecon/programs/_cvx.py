"""Helpers for exporting small programs to cvxpy.

cvxpy compiles complex variables slowly, so complex vectors are carried as their
real and imaginary parts (:class:`CvxVector`); complex matrices act through their
real 2x2 block form, batched slices through sparse block-diagonal matrices.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from convexrecon.errors import InputError
from convexrecon.operators.base import Operator, prod

__all__ = ["CVXPY_LIMIT", "CvxVector", "as_cvx_vector", "check_cvxpy_size",
           "dense_normals", "make_variable"]

CVXPY_LIMIT = 4096
"""The largest number of scalar unknowns (complex counting once) ``to_cvxpy`` accepts."""


def check_cvxpy_size(shape: Sequence[int], what: str) -> None:
    """Raise InputError when a variable of ``shape`` is beyond :data:`CVXPY_LIMIT`."""
    n = prod(shape)
    if n > CVXPY_LIMIT:
        raise InputError(
            f"{what}.to_cvxpy: expected at most {CVXPY_LIMIT} unknowns (CVXPY_LIMIT), "
            f"got {n} (variable shape {tuple(shape)}); use a smaller problem"
        )


def _blocks(mats: Sequence[np.ndarray], n_blocks: int):
    """One matrix, or a sparse block diagonal of ``n_blocks`` (``mats`` repeats if single)."""
    import scipy.sparse as sp

    if n_blocks == 1:
        return mats[0]
    mats = list(mats) * n_blocks if len(mats) == 1 else list(mats)
    if len(mats) != n_blocks:
        raise InputError(f"to_cvxpy: expected 1 or {n_blocks} matrices, got {len(mats)}")
    return sp.block_diag(mats, format="csr")


class CvxVector:
    """A flat (C order) cvxpy vector kept as real and imaginary parts.

    ``im`` is ``None`` for a real vector. ``joint`` is, when known, one cvxpy
    variable equal to ``[re; im]`` (quadratic forms then go to the solver directly).
    """

    def __init__(self, re: Any, im: Any | None = None, *, joint: Any | None = None) -> None:
        self.re, self.im, self.joint = re, im, joint

    @property
    def size(self) -> int:
        return int(self.re.size)

    @property
    def is_complex(self) -> bool:
        return self.im is not None

    def apply(self, mats: Sequence[np.ndarray] | np.ndarray) -> "CvxVector":
        """Apply a (complex) matrix to each consecutive block of the vector
        (``mats``: one matrix for every block, or one per block)."""
        if isinstance(mats, np.ndarray):
            mats = [mats]
        n_in = mats[0].shape[1]
        if self.size % n_in:
            raise InputError(f"to_cvxpy: a vector of {self.size} entries does not split into blocks of {n_in}")
        nb = self.size // n_in
        cplx = any(np.iscomplexobj(m) and np.any(m.imag) for m in mats)
        mr = _blocks([np.ascontiguousarray(m.real) for m in mats], nb)
        if not cplx:
            return CvxVector(mr @ self.re, None if self.im is None else mr @ self.im)
        mi = _blocks([np.ascontiguousarray(m.imag) for m in mats], nb)
        if self.im is None:
            return CvxVector(mr @ self.re, mi @ self.re)
        return CvxVector(mr @ self.re - mi @ self.im, mi @ self.re + mr @ self.im)

    def take(self, index: np.ndarray) -> "CvxVector":
        """Entries ``index`` (a flat integer array)."""
        return CvxVector(self.re[index], None if self.im is None else self.im[index])

    def modulus(self):
        """``|v_i|`` elementwise."""
        import cvxpy as cp

        if self.im is None:
            return cp.abs(self.re)
        return cp.norm(cp.vstack([self.re, self.im]), 2, axis=0)

    def hermitian_form(self, mats: Sequence[np.ndarray] | np.ndarray):
        """``sum_b v_b^H M_b v_b`` over consecutive blocks ``v_b`` for Hermitian PSD
        ``M_b`` (one matrix for every block, or one per block)."""
        import cvxpy as cp
        import scipy.sparse as sp

        if isinstance(mats, np.ndarray):
            mats = [mats]
        mats = [0.5 * (m + m.conj().T) for m in mats]
        nb = self.size // mats[0].shape[1]
        if self.joint is None:
            roots = []
            for m in mats:
                ev, evec = np.linalg.eigh(m)
                keep = ev > max(ev.max(), 0.0) * 1e-14
                roots.append(np.sqrt(ev[keep])[:, None] * evec[:, keep].conj().T)
            return self.apply(roots).sum_squares()
        mr = sp.csr_matrix(_blocks([np.ascontiguousarray(m.real) for m in mats], nb))
        if self.im is None:
            big = mr
        else:
            mi = sp.csr_matrix(_blocks([np.ascontiguousarray(m.imag) for m in mats], nb))
            big = sp.bmat([[mr, -mi], [mi, mr]], format="csr")
        return cp.quad_form(self.joint, cp.psd_wrap(big))

    def sum_squares(self):
        import cvxpy as cp

        out = cp.sum_squares(self.re)
        return out if self.im is None else out + cp.sum_squares(self.im)

    def real_inner(self, b: np.ndarray):
        """``Re <b, v>`` for a constant (complex) vector ``b``."""
        b = np.asarray(b).reshape(-1)
        out = np.ascontiguousarray(b.real) @ self.re
        if self.im is not None and np.iscomplexobj(b):
            out = out + np.ascontiguousarray(b.imag) @ self.im
        return out

    def complex_expr(self):
        """The vector as one (possibly complex) cvxpy expression."""
        return self.re if self.im is None else self.re + 1j * self.im


def as_cvx_vector(expr: Any) -> CvxVector:
    """Wrap a flat cvxpy expression (real or complex) unless it is a :class:`CvxVector`."""
    import cvxpy as cp

    if isinstance(expr, CvxVector):
        return expr
    if isinstance(expr, cp.Expression):
        if expr.is_complex():
            return CvxVector(cp.real(expr), cp.imag(expr))
        return CvxVector(expr)
    raise InputError(f"expr: expected a cvxpy expression or CvxVector, got {type(expr).__name__}")


def dense_normals(op: Operator, batch_shape: Sequence[int], *,
                  device=None) -> list[np.ndarray]:
    """The dense normal matrix ``A.N`` of each slice (Hermitian, complex128/float64).

    One matrix when the operator carries no batch dimensions, else one per slice of
    ``batch_shape`` (C order). Built by applying ``op.normal`` to the identity.
    """
    ishape = op.ishape
    n = prod(ishape)
    if n > CVXPY_LIMIT:
        raise InputError(f"to_cvxpy: expected an image of at most {CVXPY_LIMIT} pixels "
                         f"(CVXPY_LIMIT), got {n}")
    basis = torch.eye(n, dtype=op.dtype, device=device)
    basis = basis.reshape(n, *([1] * len(batch_shape)), *ishape)
    with torch.no_grad():
        out = op.normal(basis)
    obatch = out.shape[1:out.ndim - len(ishape)]
    if prod(obatch) == 1:
        mats = [out.reshape(n, n)]
    else:
        out = out.expand(n, *batch_shape, *ishape).reshape(n, -1, n)
        mats = [out[:, b, :] for b in range(out.shape[1])]
    out = []
    for m in mats:
        m = m.T.to(torch.complex128 if op.dtype.is_complex else torch.float64).cpu()
        out.append((0.5 * (m + m.conj().T)).numpy())
    return out


def make_variable(shape: Sequence[int], dtype: torch.dtype, what: str
                  ) -> tuple[CvxVector, Callable[[Any], torch.Tensor]]:
    """A flat cvxpy variable (real and imaginary parts for complex ``dtype``) for a
    tensor of ``shape``, and a function mapping its value back to such a tensor."""
    import cvxpy as cp

    check_cvxpy_size(shape, what)
    n = prod(shape)
    cplx = bool(dtype.is_complex)
    u = cp.Variable(2 * n if cplx else n)
    vec = CvxVector(u[:n], u[n:] if cplx else None, joint=u)

    def back(device=None) -> torch.Tensor:
        if u.value is None:
            raise InputError(f"{what}.to_cvxpy: the problem has not been solved (no value)")
        val = np.asarray(u.value, dtype=np.float64)
        if cplx:
            val = val[:n] + 1j * val[n:]
        return torch.as_tensor(val.reshape(tuple(shape))).to(device=device, dtype=dtype)

    return vec, back
