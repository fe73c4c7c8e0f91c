"""Registry-wide operator properties, for every registered operator.

complex128 with a relative tolerance of 1e-10 (the Toeplitz NUFFT normal states
its own, looser, interpolation accuracy in its case); complex64 with 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from registry import load_all
from convexrecon.operators import dot_test, inner
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


@pytest.mark.parametrize("name", NAMES)
def test_composition_adjoint_rule(name):
    """(A @ B).H == B.H @ A.H, with B a random dense map into A's input space."""
    op = CASES[name].factory(torch.complex128)
    from convexrecon.operators import Identity

    b = 0.5 * Identity(op.ishape, dtype=op.dtype)
    comp = op @ b
    y = _rand(op.oshape, op.dtype, 4)
    assert _rel(comp.H(y), b.H(op.H(y))) < 1e-12
    x = _rand(op.ishape, op.dtype, 5)
    lhs = inner(comp(x), y)
    rhs = inner(x, comp.H(y))
    assert abs(complex(lhs - rhs)) <= 1e-10 * abs(complex(lhs)) + 1e-12
