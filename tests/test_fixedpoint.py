"""Fixed-point solvers: exact answers on linear contractions, acceleration, Broyden's
inverse Jacobian, per-sample batching, guards and input checks."""

from __future__ import annotations

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.fixedpoint import SOLVERS, anderson, anderson_coefficients, broyden, picard


def _contraction(d: int, rho: float, seed: int, *, n: int = 1, dtype=torch.float64):
    """``n`` linear maps ``z -> M_i z + b_i`` with spectral radius/norm ``rho``."""
    g = torch.Generator().manual_seed(seed)
    ms, bs = [], []
    for _ in range(n):
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        s = rho * torch.linspace(0.2, 1.0, d, dtype=torch.float64)
        q2, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        ms.append(q @ torch.diag(s) @ q2)
        bs.append(torch.randn(d, generator=g, dtype=torch.float64))
    M = torch.stack(ms).to(dtype)
    b = torch.stack(bs).to(dtype)
    f = lambda z: torch.einsum("nij,nj->ni", M, z) + b  # noqa: E731
    zstar = torch.linalg.solve(torch.eye(d, dtype=dtype) - M, b.unsqueeze(-1)).squeeze(-1)
    return f, M, b, zstar


@pytest.mark.parametrize("name", ["picard", "anderson", "broyden"])
def test_linear_contraction_reaches_the_solution(name):
    f, M, b, zstar = _contraction(12, 0.8, seed=1, n=3)
    z, stats = SOLVERS[name](f, torch.zeros_like(b), max_iter=400, tol=1e-11, stop="abs")
    assert stats.converged.all(), stats.reason
    assert torch.allclose(z, zstar, atol=1e-9)
    assert (stats.best_residual <= 1e-11).all()
    # the reported residual is that of the returned iterate
    assert torch.allclose(torch.linalg.vector_norm(f(z) - z, dim=1), stats.best_residual, atol=1e-14)


def test_anderson_and_broyden_need_fewer_iterations_than_picard():
    f, M, b, zstar = _contraction(30, 0.9, seed=2, n=2)
    its = {}
    for name in ("picard", "anderson", "broyden"):
        z, s = SOLVERS[name](f, torch.zeros_like(b), max_iter=1000, tol=1e-8, stop="abs")
        assert s.converged.all()
        its[name] = s.iterations
    assert (its["anderson"] < its["picard"]).all(), its
    assert (its["broyden"] < its["picard"]).all(), its


def test_broyden_inverse_approaches_inverse_of_j_minus_i():
    d = 8
    f, M, b, zstar = _contraction(d, 0.95, seed=3, n=1)
    z, s = broyden(f, torch.zeros_like(b), max_iter=200, tol=1e-13, stop="abs", memory=50)
    assert torch.allclose(z, zstar, atol=1e-10)
    eye = torch.eye(d, dtype=torch.float64)
    B = s.inverse_jacobian.to_dense()[0]
    target = torch.linalg.inv(M[0] - eye)
    # B moved from its start -I towards (J - I)^-1 (on a linear map Broyden is exact
    # only on the directions it explored, so no tight bound is claimed)
    err = torch.linalg.matrix_norm(B - target)
    err0 = torch.linalg.matrix_norm(-eye - target)
    assert err < 0.8 * err0, (float(err), float(err0))
    # sign and transpose as SHINE uses them: -B^T g ~ (I - J^T)^-1 g, closer than
    # JFB's g and than the transposed estimate -B g
    G = torch.randn(40, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u_ift = torch.linalg.solve(eye - M[0].T, G.T).T
    rel = lambda u: ((u - u_ift).norm(dim=1) / u_ift.norm(dim=1)).mean()  # noqa: E731
    u_shine = -torch.stack([s.inverse_jacobian.rmatvec(g[None])[0] for g in G])
    u_wrong = -torch.stack([s.inverse_jacobian.matvec(g[None])[0] for g in G])
    assert rel(u_shine) < rel(G) and rel(u_shine) < rel(u_wrong), (rel(u_shine), rel(G), rel(u_wrong))
    assert (torch.einsum("nd,nd->n", u_shine, u_ift) > 0).float().mean() > 0.9


def test_broyden_inverse_is_exact_in_one_dimension():
    # a secant update is exact for a 1-D linear map: B = 1 / (m - 1) per sample
    m = torch.tensor([[0.3], [-0.6], [0.9]], dtype=torch.float64)
    z, s = broyden(lambda z: m * z + 1.0, torch.zeros(3, 1, dtype=torch.float64), max_iter=20,
                   tol=1e-14, stop="abs")
    B = s.inverse_jacobian.to_dense()[:, 0, 0]
    assert torch.allclose(B, 1.0 / (m[:, 0] - 1.0), rtol=1e-8)


def test_broyden_secant_condition_of_last_step():
    # the Broyden update makes B map the last residual change onto the last step
    f, M, b, zstar = _contraction(8, 0.6, seed=4, n=1)
    seen = []
    f_rec = lambda z: (seen.append(z.clone()), f(z))[1]  # noqa: E731
    z, s = broyden(f_rec, torch.zeros_like(b), max_iter=3, tol=0.0, stop="abs", memory=10)
    z1, z2 = seen[-2], seen[-1]
    dg = (f(z2) - z2) - (f(z1) - z1)
    # the returned B is the one at the best iterate, which is the last one here
    assert int(s.best_iter[0]) == 3
    assert torch.allclose(s.inverse_jacobian.matvec(dg), z2 - z1, atol=1e-10)


@pytest.mark.parametrize("name", ["picard", "anderson", "broyden"])
def test_batched_equals_one_by_one(name):
    # samples of very different difficulty stop at different iterations
    f1, M1, b1, _ = _contraction(10, 0.3, seed=5)
    f2, M2, b2, _ = _contraction(10, 0.95, seed=6)
    M = torch.cat([M1, M2])
    b = torch.cat([b1, b2])
    f = lambda z: torch.einsum("nij,nj->ni", M, z) + b  # noqa: E731
    kw = dict(max_iter=300, tol=1e-9, stop="rel")
    z, s = SOLVERS[name](f, torch.zeros_like(b), **kw)
    for i, fi in enumerate((f1, f2)):
        zi, si = SOLVERS[name](fi, torch.zeros_like(b[i:i + 1]), **kw)
        assert torch.allclose(z[i:i + 1], zi, atol=1e-9 * zi.norm())
        assert abs(int(s.iterations[i]) - int(si.iterations[0])) <= 1
        assert s.reason[i] == si.reason[0]
    assert int(s.iterations[0]) < int(s.iterations[1])
    # residual traces: NaN after the easy sample stopped
    k0 = int(s.iterations[0])
    assert torch.isnan(s.residuals[k0 + 1:, 0]).all()
    assert torch.isfinite(s.residuals[: k0 + 1, 0]).all()


@pytest.mark.parametrize("name", ["picard", "anderson", "broyden"])
def test_complex_and_multiple_batch_dims(name):
    d = 6
    g = torch.Generator().manual_seed(7)
    M = 0.5 * torch.randn(2, 3, d, d, generator=g, dtype=torch.complex128) / d ** 0.5
    b = torch.randn(2, 3, d, generator=g, dtype=torch.complex128)
    f = lambda z: torch.einsum("abij,abj->abi", M, z) + b  # noqa: E731
    z, s = SOLVERS[name](f, torch.zeros_like(b), max_iter=300, tol=1e-11, stop="abs", batch_dims=2)
    zstar = torch.linalg.solve(torch.eye(d, dtype=torch.complex128) - M, b.unsqueeze(-1)).squeeze(-1)
    assert z.dtype == torch.complex128 and z.shape == b.shape
    assert s.iterations.shape == (2, 3) and s.residuals.shape[1:] == (2, 3)
    assert torch.allclose(z, zstar, atol=1e-9)


def test_flat_vector_with_batch_dim_one_for_admm():
    f, M, b, zstar = _contraction(20, 0.9, seed=8)
    z, s = anderson(f, torch.zeros(1, 20, dtype=torch.float64), tol=1e-10, stop="abs", max_iter=200)
    assert z.shape == (1, 20) and torch.allclose(z, zstar, atol=1e-8)


@pytest.mark.parametrize("name", ["picard", "anderson", "broyden"])
def test_divergence_and_nan_are_detected(name):
    grow = lambda z: 3.0 * z + 1.0  # noqa: E731  (not a contraction)
    z, s = SOLVERS[name](grow, torch.ones(2, 4, dtype=torch.float64), max_iter=500, tol=1e-12,
                         divergence=1e3)
    if name == "picard":
        assert s.diverged.all(), s.reason
        # the returned iterate is the lowest-residual one, the start
        assert torch.allclose(z, torch.ones(2, 4, dtype=torch.float64))
    nan_after = lambda z: torch.where(z.abs() > 0.5, torch.full_like(z, float("nan")), 0.5 * z + 0.3)  # noqa: E731
    z, s = SOLVERS[name](nan_after, torch.zeros(2, 3, dtype=torch.float64), max_iter=50, tol=1e-12)
    assert s.diverged.all(), s.reason
    assert torch.isfinite(z).all()


def test_anderson_survives_singular_least_squares():
    # f(z) = const: after one step every residual difference is the same -> singular Gram
    c = torch.arange(5, dtype=torch.float64)[None].repeat(2, 1)
    z, s = anderson(lambda z: c.clone(), torch.zeros(2, 5, dtype=torch.float64), lam=0.0,
                    tol=1e-12, stop="abs")
    assert torch.allclose(z, c) and s.converged.all()
    gram = torch.zeros(2, 3, 3, dtype=torch.float64)
    gram[0] = torch.ones(3, 3)  # rank one, no regularisation
    coef = anderson_coefficients(gram, torch.ones(2, 3, dtype=torch.float64),
                                 torch.tensor([3, 0]), lam=0.0)
    assert torch.isfinite(coef).all() and (coef[1] == 0).all()


def test_stop_modes_and_lowest_residual_iterate():
    f, M, b, zstar = _contraction(10, 0.5, seed=9, n=1)
    z, s = picard(f, torch.zeros_like(b), max_iter=100, tol=1e-3, stop="rel")
    assert s.converged.all() and float(s.best_rel_residual[0]) <= 1e-3
    z2, s2 = picard(f, torch.zeros_like(b), max_iter=100, tol=1e-3, stop="abs")
    assert float(s2.best_residual[0]) <= 1e-3
    # best_residual is the minimum of the trace
    trace = s.residuals[:, 0]
    assert float(s.best_residual[0]) == pytest.approx(float(trace[torch.isfinite(trace)].min()))
    summary = s.summary()
    assert summary["converged"] == 1 and summary["samples"] == 1


@pytest.mark.parametrize("bad, match", [
    (dict(max_iter=-1), "max_iter"), (dict(tol=-1.0), "tol"), (dict(stop="max"), "stop"),
    (dict(batch_dims=5), "batch_dims"), (dict(divergence=0.5), "divergence"),
])
def test_bad_options_raise_input_error(bad, match):
    with pytest.raises(InputError, match=match):
        picard(lambda z: z, torch.zeros(2, 3), **bad)


def test_bad_map_output_and_solver_options():
    with pytest.raises(InputError, match="f: expected"):
        anderson(lambda z: z[:1], torch.zeros(2, 3))
    with pytest.raises(InputError, match="memory"):
        broyden(lambda z: z, torch.zeros(2, 3), memory=0)
    with pytest.raises(InputError, match="beta"):
        anderson(lambda z: z, torch.zeros(2, 3), beta=0.0)
    with pytest.raises(InputError, match="z0"):
        picard(lambda z: z, torch.zeros(2, 3, dtype=torch.long))


def test_anderson_memory_host_solve_equals_the_batched_torch_solve():
    """On the CPU a few samples take the numpy path; it must give the coefficients
    of the batched torch solve (the path of larger batches and of GPUs)."""
    from convexrecon.fixedpoint.anderson import _coefficients_host
    g = torch.Generator().manual_seed(4)
    dG = torch.randn(3, 4, 50, generator=g, dtype=torch.float64)
    gram, rhs = dG @ dG.mT, torch.randn(3, 4, generator=g, dtype=torch.float64)
    host = _coefficients_host(gram, rhs, lam=1e-6)
    full = anderson_coefficients(gram, rhs, torch.full((3,), 4), lam=1e-6)
    assert torch.allclose(host, full, rtol=1e-9, atol=1e-12)


def test_anderson_memory_flat_vector_is_a_batch_of_one():
    """ADMM's use: a flat vector pushed step by step extrapolates like row 0 of a
    batch, and an empty memory gives None (the caller's plain step)."""
    from convexrecon.fixedpoint import AndersonMemory
    f, M, b, zstar = _contraction(12, 0.9, seed=2, n=2)
    flat, batch = AndersonMemory(3), AndersonMemory(3)
    x = torch.zeros_like(b)
    for k in range(15):
        g = f(x) - x
        flat.push(x[0], g[0])
        batch.push(x, g)
        assert (flat.extrapolate() is None) == (k == 0)  # no difference stored yet
        x = batch.mix()
        assert torch.allclose(flat.mix(), x[0], rtol=1e-12, atol=1e-14)
    z = torch.zeros_like(b)
    for _ in range(15):
        z = f(z)  # Picard, the same number of maps
    assert float((f(x) - x).norm()) < 0.3 * float((f(z) - z).norm())  # and it accelerates
    with pytest.raises(InputError, match="memory"):
        AndersonMemory(0)
