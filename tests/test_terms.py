"""Terms of convex programs: proxes (optimality, Moreau, cvxpy), LeastSquares, exports."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from convex_helpers import DT, FDStandIn, SenseStandIn, birdcage_maps, cartesian_mask, crandn
from convexrecon.errors import InputError
from convexrecon.operators.base import Dense
from convexrecon.operators.linalg import to_dense
from convexrecon.operators.wavelet import Wavelet
from convexrecon.programs._cvx import CVXPY_LIMIT, make_variable
from convexrecon.programs.terms import (
    GroupL1, L1, LeastSquares, NonNegative, Nuclear, WaveletL1, soft_threshold,
)
from convexrecon.programs.tv import TV


def _wavelet(shape):
    return Wavelet(shape, wavelet="db2", levels=2, dtype=DT)


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))


def _terms():
    return {
        "l1": (L1(0.7), (3, 5)),
        "group-l1": (GroupL1(0.9, axis=-1), (4, 3)),
        "group-l1-2axes": (GroupL1(0.5, axis=(0, 2)), (2, 3, 2)),
        "nuclear": (Nuclear(0.8), (2, 4, 3)),
        "wavelet-l1": (WaveletL1(0.3, wavelet=_wavelet((8, 8))), (2, 8, 8)),
    }


NORM_TERMS = sorted(_terms())


@pytest.mark.parametrize("name", NORM_TERMS)
def test_prox_optimality(name):
    """(x - z)/t is a subgradient of g at z = prox: dual norm <= 1 and <v, z> = g(z)."""
    term, shape = _terms()[name]
    x = 1.5 * crandn(*shape, seed=3)
    t = 0.8
    z = term.prox(x, t)
    v = (x - z) / t
    assert term.dual_norm(v) <= 1 + 1e-10
    lhs = float(torch.sum((v.conj() * z).real))
    assert abs(lhs - float(term.value(z))) <= 1e-10 * max(1.0, abs(lhs))


def _project_dual(name, term, v):
    """Projection onto {dual_norm <= 1} by hand (to check the Moreau identity)."""
    lam = term.lam
    if name == "l1":
        return v / (v.abs() / lam).clamp_min(1)
    if name.startswith("group-l1"):
        nrm = torch.sqrt((v.abs() ** 2).sum(dim=term.axis, keepdim=True))
        return v / (nrm / lam).clamp_min(1)
    if name == "nuclear":
        u, s, vh = torch.linalg.svd(v, full_matrices=False)
        return (u * s.clamp(max=lam).to(v.dtype).unsqueeze(-2)) @ vh
    c = term.W.forward(v)
    return term.W.adjoint(c / (c.abs() / lam).clamp_min(1))


@pytest.mark.parametrize("name", NORM_TERMS)
def test_moreau_identity(name):
    term, shape = _terms()[name]
    x = 2.0 * crandn(*shape, seed=5)
    t = 0.6
    recon = term.prox(x, t) + t * _project_dual(name, term, x / t)
    assert _rel(recon, x) < 1e-12


@pytest.mark.parametrize("name", NORM_TERMS)
def test_prox_matches_cvxpy(name):
    term, shape = _terms()[name]
    x = 1.5 * crandn(*shape, seed=7)
    t = 0.7
    var, back = make_variable(shape, DT, name)
    g, cons = term.to_cvxpy(var, shape)
    xv = x.reshape(-1).numpy()
    obj = t * g + 0.5 * (cp.sum_squares(var.re - xv.real) + cp.sum_squares(var.im - xv.imag))
    cp.Problem(cp.Minimize(obj), cons).solve(solver="CLARABEL", tol_gap_abs=1e-10,
                                              tol_gap_rel=1e-10, tol_feas=1e-10)
    assert _rel(back(), term.prox(x, t)) < 1e-6


@pytest.mark.parametrize("name", NORM_TERMS)
def test_to_cvxpy_value_matches(name):
    term, shape = _terms()[name]
    x = crandn(*shape, seed=11)
    var, _ = make_variable(shape, DT, name)
    g, _ = term.to_cvxpy(var, shape)
    var.joint.value = np.concatenate([x.reshape(-1).real.numpy(), x.reshape(-1).imag.numpy()])
    assert abs(g.value - float(term.value(x))) < 1e-9 * float(term.value(x))


def test_soft_threshold_zero_and_real():
    x = torch.tensor([0.0, 0.5, -2.0, 3.0], dtype=torch.float64)
    assert torch.allclose(soft_threshold(x, 1.0), torch.tensor([0.0, 0.0, -1.0, 2.0], dtype=torch.float64))
    z = torch.zeros(3, dtype=DT)
    assert torch.equal(soft_threshold(z, 0.1), z)


def test_tuple_variables_leafwise():
    term = GroupL1(0.5, axis=-1)
    u, v = crandn(3, 4, seed=1), crandn(2, 4, seed=2)
    pu, pv = term.prox((u, v), 0.3)
    assert torch.allclose(pu, term.prox(u, 0.3)) and torch.allclose(pv, term.prox(v, 0.3))
    assert abs(float(term.value((u, v))) - float(term.value(u) + term.value(v))) < 1e-12
    # tuple export
    var1, _ = make_variable((3, 4), DT, "u")
    var2, _ = make_variable((2, 4), DT, "v")
    g, _ = term.to_cvxpy((var1, var2), ((3, 4), (2, 4)))
    var1.joint.value = np.concatenate([u.reshape(-1).real.numpy(), u.reshape(-1).imag.numpy()])
    var2.joint.value = np.concatenate([v.reshape(-1).real.numpy(), v.reshape(-1).imag.numpy()])
    assert abs(g.value - float(term.value((u, v)))) < 1e-9


def test_real_dtype_prox():
    x = torch.randn(5, 3, dtype=torch.float64)
    z = L1(0.4).prox(x, 1.0)
    assert z.dtype == torch.float64
    assert torch.allclose(z, torch.sign(x) * (x.abs() - 0.4).clamp_min(0))
    zn = Nuclear(0.0).prox(x, 1.0)
    assert zn.dtype == torch.float64 and torch.allclose(zn, x)


def test_nonnegative():
    x = crandn(4, 4, seed=2)
    term = NonNegative()
    z = term.prox(x, 1.0)
    assert torch.equal(z.imag, torch.zeros_like(z.imag)) and bool((z.real >= 0).all())
    assert torch.allclose(z.real, x.real.clamp_min(0))
    assert float(term.value(z)) == 0.0 and float(term.value(x)) == float("inf")
    var, back = make_variable((4, 4), DT, "nn")
    _, cons = term.to_cvxpy(var, (4, 4))
    xv = x.reshape(-1).numpy()
    obj = cp.sum_squares(var.re - xv.real) + cp.sum_squares(var.im - xv.imag)
    cp.Problem(cp.Minimize(obj), cons).solve(solver="CLARABEL")
    assert _rel(back(), z) < 1e-6


def _ls_problem(seed=0, weights=None, mu=0.0):
    h = w = 8
    maps = birdcage_maps(3, h, w)
    A = SenseStandIn(maps, cartesian_mask(h, w, seed=seed))
    y = crandn(3, h, w, seed=seed + 1)
    return A, y, LeastSquares(A, y, weights=weights, mu=mu)


@pytest.mark.parametrize("mu", [0.0, 0.3])
def test_least_squares_value_grad(mu):
    A, y, ls = _ls_problem(mu=mu)
    x = crandn(8, 8, seed=4)
    r = A(x) - y
    ref = 0.5 * float((r.abs() ** 2).sum()) + 0.5 * mu * float((x.abs() ** 2).sum())
    v, g = ls.value_and_grad(x)
    assert abs(float(v) - ref) < 1e-12 * ref
    assert abs(float(ls.value(x)) - ref) < 1e-12 * ref
    # the gradient against torch's autograd of the value written from the forward map
    # only (for a real loss of complex x, autograd gives the conjugate-Wirtinger
    # gradient, which is A^H r + mu x), and against a central finite difference
    xa = x.clone().requires_grad_(True)
    loss = 0.5 * (A(xa) - y).abs().pow(2).sum() + 0.5 * mu * xa.abs().pow(2).sum()
    (auto,) = torch.autograd.grad(loss, xa)
    assert _rel(g, auto) < 1e-12
    assert _rel(ls.grad(x), auto) < 1e-12
    d = crandn(8, 8, seed=5)
    h = 1e-6
    fd = (float(ls.value(x + h * d)) - float(ls.value(x - h * d))) / (2 * h)
    assert abs(fd - float(torch.real(torch.vdot(g.flatten(), d.flatten())))) < 1e-6 * abs(fd)


def test_least_squares_weights():
    wts = torch.rand(3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    A, y, ls = _ls_problem(weights=wts)
    x = crandn(8, 8, seed=4)
    r = A(x) - y
    ref = 0.5 * float((wts * r.abs() ** 2).sum())
    assert abs(float(ls.value(x)) - ref) < 1e-12 * ref
    assert _rel(ls.grad(x), A.H(wts * r)) < 1e-12
    with pytest.raises(InputError, match="weights"):
        LeastSquares(A, y, weights=-wts)


def test_least_squares_lipschitz_and_errors():
    A, y, ls = _ls_problem(mu=0.5)
    lmax = float(torch.linalg.eigvalsh(to_dense(A.N)).max())
    assert lmax + 0.5 <= ls.lipschitz() <= 1.02 * lmax + 0.5
    assert LeastSquares(A, y, lipschitz=2.0, mu=0.5).lipschitz() == 2.5
    with pytest.raises(InputError, match="y"):
        LeastSquares(A, y[..., :4])
    with pytest.raises(InputError, match="A"):
        LeastSquares("not an operator", y)
    with pytest.raises(InputError, match="lam"):
        L1(-1.0)
    with pytest.raises(InputError, match="axis"):
        GroupL1(1.0, axis="rows")
    with pytest.raises(InputError, match="wavelet"):
        WaveletL1(1.0, wavelet=np.eye(3))


@pytest.mark.parametrize("mu", [0.0, 0.2])
def test_least_squares_to_cvxpy_value(mu):
    A, y, ls = _ls_problem(mu=mu)
    x = crandn(8, 8, seed=9)
    var, _ = make_variable((8, 8), DT, "ls")
    obj, _ = ls.to_cvxpy(var, (8, 8))
    var.joint.value = np.concatenate([x.reshape(-1).real.numpy(), x.reshape(-1).imag.numpy()])
    assert abs(obj.value - float(ls.value(x))) < 1e-9 * float(ls.value(x))


def test_real_least_squares_to_cvxpy():
    g = torch.Generator().manual_seed(0)
    A = Dense(torch.randn(7, 5, dtype=torch.float64, generator=g))
    y = torch.randn(2, 7, dtype=torch.float64, generator=g)
    ls = LeastSquares(A, y)
    x = torch.randn(2, 5, dtype=torch.float64, generator=g)
    var, _ = make_variable((2, 5), torch.float64, "ls")
    obj, _ = ls.to_cvxpy(var, (2, 5))
    var.joint.value = x.reshape(-1).numpy()
    assert abs(obj.value - float(ls.value(x))) < 1e-9 * float(ls.value(x))


@pytest.mark.parametrize("isotropic", [True, False])
def test_tv_term(isotropic):
    D = FDStandIn((6, 6))
    tv = TV(0.4, op=D, isotropic=isotropic)
    x = crandn(2, 6, 6, seed=1)
    dx = D(x)
    ref = (torch.sqrt((dx.abs() ** 2).sum(-3)).sum() if isotropic else dx.abs().sum()) * 0.4
    assert abs(float(tv.value(x)) - float(ref)) < 1e-12
    p = tv.project_dual(3 * crandn(2, 2, 6, 6, seed=2))
    assert float(tv.pixel_norms(p).max()) <= 0.4 * (1 + 1e-12)
    var, _ = make_variable((2, 6, 6), DT, "tv")
    obj, _ = tv.to_cvxpy(var, (2, 6, 6))
    var.joint.value = np.concatenate([x.reshape(-1).real.numpy(), x.reshape(-1).imag.numpy()])
    assert abs(obj.value - float(ref)) < 1e-9 * float(ref)
    assert 8.0 <= tv.op_norm2() <= 8.0 * 1.02
    with pytest.raises(InputError, match="op"):
        TV(0.1, op=Dense(torch.eye(3, dtype=DT)))


def test_cvxpy_size_limit():
    with pytest.raises(InputError, match="CVXPY_LIMIT"):
        make_variable((CVXPY_LIMIT + 1,), DT, "big")
