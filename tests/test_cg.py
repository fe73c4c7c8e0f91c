"""Conjugate gradients on batches of independent systems, and the differentiable
solve :func:`~convexrecon.solvers.cg.cg_solve` against dense solves and gradcheck."""

from __future__ import annotations

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.operators.base import Dense
from convexrecon.solvers.cg import CG, cg_solve


def spd(n: int, cond: float, seed: int, dtype=torch.complex128) -> torch.Tensor:
    """A Hermitian positive definite ``n x n`` matrix with condition number ``cond``."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=dtype))
    ev = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    return (Q * ev.to(dtype)) @ Q.mH


def rhs(shape, seed: int, dtype=torch.complex128) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_independent_systems_each_reach_the_tolerance():
    M = spd(12, 1e3, 0)
    b = rhs((3, 12), 1)
    b[1] *= 1e-6   # a tiny system: it must still reach the relative tolerance
    b[2] = 0.0     # a solved system: it stays at zero
    res = CG(Dense(M), b, mu=0.1, batch_dims=1, max_iter=200, tol=1e-10).run()
    ref = torch.linalg.solve(M + 0.1 * torch.eye(12, dtype=M.dtype), b.T).T
    assert res.converged
    for k in range(2):
        assert torch.linalg.vector_norm(res.x[k] - ref[k]) <= 1e-8 * torch.linalg.vector_norm(ref[k])
    assert torch.count_nonzero(res.x[2]) == 0
    assert res.state.rr.shape == (3,)
    assert res.state.certificate <= 1e-10  # the largest relative residual


def test_each_system_stops_at_its_own_tolerance_as_if_alone():
    """A system that reaches its tolerance is left as it is while the others go on, so a
    batch gives the one-by-one results. Rounding decides the last iteration (CPUs and
    BLAS differ by one or two), so iteration counts agree within a margin and the
    solutions within the solver tolerance."""
    n, tol = 30, 1e-6
    Q, _ = torch.linalg.qr(rhs((n, n), 3))
    M = (Q * torch.logspace(0, 3, n, dtype=torch.float64).to(Q.dtype)) @ Q.mH
    # system 0 lies nearly in two eigenvectors (two steps reach the tolerance, not
    # the solution), system 1 does not
    b = torch.stack([Q[:, 0] + 2 * Q[:, 5] + 1e-7 * rhs((n,), 4), rhs((n,), 5)])
    both = CG(Dense(M), b, batch_dims=1, max_iter=200, tol=tol).run()
    its = []
    for k in (0, 1):
        one = CG(Dense(M), b[k], max_iter=200, tol=tol).run()
        its.append(one.state.it)
        res = torch.linalg.vector_norm(b[k] - M @ both.x[k]) / torch.linalg.vector_norm(b[k])
        assert res <= tol  # each system of the batch meets its own tolerance
        err = torch.linalg.vector_norm(both.x[k] - one.x) / torch.linalg.vector_norm(one.x)
        # system 0 stops after two steps in both runs; had the batch gone on iterating
        # it, its point would move by far more than rounding (it is only 1e-6 accurate)
        assert err <= (1e-11 if k == 0 else tol)
    assert its[0] + 10 < its[1]
    assert abs(its[1] - both.state.it) <= 2


def test_batch_dims_is_checked():
    M = spd(4, 10.0, 0)
    for bad in (-1, 2, 1.0, True):
        with pytest.raises(InputError, match="batch_dims"):
            CG(Dense(M), rhs((3, 4), 0), batch_dims=bad)


def test_cg_solve_matches_the_dense_solve_and_its_gradients():
    M = spd(6, 50.0, 2)
    H = Dense(M)
    b = rhs((2, 6), 3).requires_grad_(True)
    mu = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    x = cg_solve(H, b, mu=mu, batch_dims=1, max_iter=100, tol=1e-13)
    loss = (x.abs() ** 2 * torch.arange(1.0, 7.0, dtype=torch.float64)).sum()
    gb, gmu = torch.autograd.grad(loss, (b, mu))
    b2, mu2 = b.detach().clone().requires_grad_(True), mu.detach().clone().requires_grad_(True)
    x2 = torch.linalg.solve(M + mu2 * torch.eye(6, dtype=M.dtype), b2.T).T
    loss2 = (x2.abs() ** 2 * torch.arange(1.0, 7.0, dtype=torch.float64)).sum()
    gb2, gmu2 = torch.autograd.grad(loss2, (b2, mu2))
    assert torch.allclose(x, x2, atol=1e-10)
    assert torch.allclose(gb, gb2, atol=1e-9)
    assert torch.allclose(gmu, gmu2, atol=1e-9)


def test_cg_solve_passes_gradcheck():
    H = Dense(spd(5, 20.0, 4))
    b = rhs((5,), 5).requires_grad_(True)
    mu = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda b, mu: cg_solve(H, b, mu=mu, max_iter=100, tol=1e-14), (b, mu))
    Hr = Dense(spd(5, 20.0, 6, dtype=torch.float64))  # real system, number mu
    br = rhs((2, 5), 7, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda b: cg_solve(Hr, b, mu=0.2, batch_dims=1, max_iter=100, tol=1e-14), (br,))


def test_cg_solve_bad_input():
    H = Dense(spd(4, 10.0, 0))
    with pytest.raises(InputError, match="mu"):
        cg_solve(H, rhs((4,), 0), mu=torch.ones(2, dtype=torch.float64))
    with pytest.raises(InputError, match="mu"):
        cg_solve(H, rhs((4,), 0), mu=-1.0)
    with pytest.raises(InputError, match="op"):
        cg_solve(spd(4, 10.0, 0), rhs((4,), 0))


@pytest.mark.gpu
def test_cg_solve_on_cuda():
    M = spd(6, 50.0, 2).cuda()
    b = rhs((2, 6), 3).cuda().requires_grad_(True)
    x = cg_solve(Dense(M), b, mu=0.3, batch_dims=1, max_iter=100, tol=1e-12)
    x.abs().sum().backward()
    assert x.is_cuda and b.grad is not None and b.grad.is_cuda
