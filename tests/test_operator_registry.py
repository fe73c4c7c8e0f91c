"""Registry-wide operator properties, for every registered operator.

complex128 with a relative tolerance of 1e-10 (the Toeplitz NUFFT normal states
its own, looser, interpolation accuracy in its case); complex64 with 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from registry import load_all
from convexrecon.operators import Operator, dot_test, inner
from convexrecon.operators.base import prod
from convexrecon.operators.linalg import randn_like_shape

CASES = load_all()
NAMES = sorted(CASES)
PRECISIONS = [(torch.complex128, 1e-10), (torch.complex64, 1e-4)]


def _rand(shape, dtype, seed):
    return randn_like_shape(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))


@pytest.mark.parametrize("dtype,tol", PRECISIONS, ids=["c128", "c64"])
@pytest.mark.parametrize("name", NAMES)
def test_dot(name, dtype, tol):
    case = CASES[name]
    op = case.factory(dtype)
    assert dot_test(op, real=case.real_linear) < tol
    assert dot_test(op, batch=case.batch, real=case.real_linear, seed=1) < tol


@pytest.mark.parametrize("name", NAMES)
def test_linearity(name):
    op = CASES[name].factory(torch.complex128)
    x1, x2 = _rand(op.ishape, op.dtype, 0), _rand(op.ishape, op.dtype, 1)
    a = 0.7 if CASES[name].real_linear else (0.7 - 1.3j)
    assert _rel(op(a * x1 + x2), a * op(x1) + op(x2)) < 1e-10


@pytest.mark.parametrize("name", NAMES)
def test_normal_equals_adjoint_forward(name):
    case = CASES[name]
    op = case.factory(torch.complex128)
    x = _rand((*case.batch, *op.ishape), op.dtype, 2)
    assert _rel(op.normal(x), op.adjoint(op.forward(x))) < case.normal_rtol
    assert _rel(op.N(x), op.H(op(x))) < case.normal_rtol


@pytest.mark.parametrize("name", NAMES)
def test_batch_matches_loop(name):
    """A leading batch dimension is the same as a loop over samples."""
    op = CASES[name].factory(torch.complex128)
    x = _rand((3, *op.ishape), op.dtype, 3)
    y = op(x)
    for i in range(3):
        assert _rel(y[i], op(x[i])) < 1e-12


class _RandomMap(Operator):
    """A random dense complex map ``C^m -> ishape`` (test-local, so the rule is checked
    against plain matrix products, not against the operator algebra itself)."""

    def __init__(self, oshape, *, m, dtype, seed):
        super().__init__((m,), oshape, dtype=dtype)
        self.matrix = _rand((prod(oshape), m), dtype, seed)

    def _forward(self, x):
        return (x @ self.matrix.T).reshape(*x.shape[:-1], *self.oshape)

    def _adjoint(self, y):
        return y.reshape(*y.shape[:-len(self.oshape)], -1) @ self.matrix.conj()


@pytest.mark.parametrize("name", NAMES)
def test_composition_adjoint_rule(name):
    """(A @ B).H == B.H @ A.H and (A @ B).N == B.H A.N B, with B a random dense map
    into A's input space, checked against explicit matrix products."""
    case = CASES[name]
    op = case.factory(torch.complex128)
    cdt = op.dtype if op.dtype.is_complex else torch.complex128
    b = _RandomMap(op.ishape, m=5, dtype=cdt, seed=6)
    if not op.dtype.is_complex:  # a real operator composes with a real map
        b.matrix, b.dtype = b.matrix.real.contiguous(), op.dtype
    assert dot_test(b) < 1e-12
    comp = op @ b
    y = _rand((*case.batch, *op.oshape), op.dtype, 4)
    aty = op.H(y).reshape(*case.batch, -1)
    assert _rel(comp.H(y), aty @ b.matrix.conj()) < 1e-12
    x = _rand((*case.batch, 5), b.dtype, 5)
    bx = (x @ b.matrix.T).reshape(*case.batch, *op.ishape)
    assert _rel(comp(x), op(bx)) < 1e-12
    assert _rel(comp.N(x), op.N(bx).reshape(*case.batch, -1) @ b.matrix.conj()) < case.normal_rtol
    assert dot_test(comp, batch=case.batch, real=case.real_linear) < 1e-10


@pytest.mark.parametrize("name", NAMES)
def test_autograd_apply_gradcheck(name):
    """Gradients of ``autograd_apply`` (backward = the wrapped adjoint) match finite
    differences, for every registered operator (complex128, fast mode)."""
    op = CASES[name].factory(torch.complex128)
    x = _rand(op.ishape, op.dtype, 7).requires_grad_(True)
    assert torch.autograd.gradcheck(op.autograd_apply, (x,), fast_mode=True)
    xb = _rand((*CASES[name].batch, *op.ishape), op.dtype, 8).requires_grad_(True)
    assert torch.autograd.gradcheck(op.autograd_apply, (xb,), fast_mode=True)


_PRECISION = {torch.float32: 32, torch.complex64: 32, torch.float64: 64, torch.complex128: 64}


@pytest.mark.parametrize("name", NAMES)
def test_dtype_rule(name):
    """One dtype rule for every operator: an input of the operator's precision
    (complex, or real with zero imaginary part) is accepted and the output keeps
    that precision; an input of the other precision raises InputError naming the
    expected dtype (no silent cast up or down), for forward, adjoint, normal and
    autograd_apply."""
    from convexrecon.errors import InputError

    for dtype, other in ((torch.complex64, torch.complex128), (torch.complex128, torch.complex64)):
        op = CASES[name].factory(dtype)
        x, y = _rand(op.ishape, dtype, 6), _rand(op.oshape, dtype, 7)
        for fn, v in ((op.forward, x), (op.adjoint, y), (op.normal, x), (op.N, x), (op.H, y),
                      (op.autograd_apply, x)):
            assert _PRECISION[fn(v).dtype] == _PRECISION[dtype]
            assert _PRECISION[fn(v.real).dtype] == _PRECISION[dtype]
            with pytest.raises(InputError, match=str(dtype)):
                fn(v.to(other))
            with pytest.raises(InputError, match="dtype"):
                fn(v.real.to(torch.float16))


@pytest.mark.parametrize("name", NAMES)
def test_to_scipy_matches_to_dense(name):
    """``A.to_scipy()``: matvec, rmatvec and matmat equal the dense matrix (and its
    conjugate transpose) on complex vectors, for every registered operator."""
    import numpy as np
    from scipy.sparse.linalg import LinearOperator

    from convexrecon.operators.linalg import to_dense

    op = CASES[name].factory(torch.complex128)
    lin = op.to_scipy()
    assert isinstance(lin, LinearOperator)
    M = to_dense(op).cpu().numpy()
    assert lin.shape == M.shape and lin.dtype == M.dtype
    rng = np.random.default_rng(0)
    cplx = np.iscomplexobj(M)

    def vec(*shape):
        v = rng.standard_normal(shape)
        return v + 1j * rng.standard_normal(shape) if cplx else v

    x, y, X = vec(M.shape[1]), vec(M.shape[0]), vec(M.shape[1], 3)
    scale = np.linalg.norm(M) + 1e-300
    assert np.linalg.norm(lin.matvec(x) - M @ x) <= 1e-10 * scale * np.linalg.norm(x)
    assert np.linalg.norm(lin.rmatvec(y) - M.conj().T @ y) <= 1e-10 * scale * np.linalg.norm(y)
    assert np.linalg.norm(lin.matmat(X) - M @ X) <= 1e-10 * scale * np.linalg.norm(X)
    assert np.linalg.norm(lin.H @ y - M.conj().T @ y) <= 1e-10 * scale * np.linalg.norm(y)


def test_to_scipy_runs_lsqr_on_sense():
    """scipy's lsqr on a SENSE encoder reaches the least-squares solution."""
    import numpy as np
    from scipy.sparse.linalg import lsqr

    from convexrecon.operators.linalg import to_dense

    op = CASES["sense-2d-poisson"].factory(torch.complex128)
    M = to_dense(op).cpu().numpy()
    y = M @ (np.arange(M.shape[1]) % 7 + 1j).astype(complex)
    x = lsqr(op.to_scipy(), y, atol=1e-12, btol=1e-12, iter_lim=500)[0]
    ref = np.linalg.lstsq(M, y, rcond=None)[0]
    assert np.linalg.norm(M @ x - M @ ref) <= 1e-6 * np.linalg.norm(y)
