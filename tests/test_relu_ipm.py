"""The interior-point solver of the cone-constrained two-layer ReLU program
(:class:`~convexrecon.solvers.ipm_relu.IPMReLU`) against cvxpy, and its SOC helpers."""

from __future__ import annotations

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.programs.relu import GatedReLU, Patterns, TwoLayerReLU
from convexrecon.solvers import soc
from convexrecon.solvers.admm_relu import ADMMReLU
from convexrecon.solvers.columns import Columnwise
from convexrecon.solvers.ipm_relu import IPMReLU
from convexrecon.solvers.solve import solve
from test_relu import cvx_solve, make_data

CASES = [(50, 5, 10, 1e-2, 0), (100, 10, 10, 1e-1, 1), (200, 20, 20, 1e-3, 2)]


@pytest.fixture(scope="module")
def solved():
    """``{case: (program, cvxpy optimum)}``, solved once for the module."""
    out = {}
    for n, d, P, beta, seed in CASES:
        X, y = make_data(n, d, seed=seed)
        prog = TwoLayerReLU(X, y, n_patterns=P, beta=beta, seed=seed)
        problem, _ = cvx_solve(prog)
        out[(n, d, P, beta, seed)] = (prog, problem.value)
    return out


@pytest.mark.parametrize("case", CASES)
def test_ipm_matches_cvxpy(solved, case):
    prog, p_star = solved[case]
    res = IPMReLU(prog).run()
    assert res.converged and not res.state.failed
    val = prog.value(res.x)
    assert abs(val - p_star) <= 1e-4 * p_star
    assert prog.violation(res.x) <= 1e-6
    assert res.state.certificate <= 1e-4
    # the certificate is a valid bound on the true relative gap
    assert res.state.certificate >= (val - p_star) / val - 1e-9
    assert len(res.history) == res.state.it  # bookkeeping: one history row per iteration of this run
    assert res.history.certificate[-1] == res.state.certificate
    V, W = res.x
    assert V.shape == W.shape == (prog.data.P, prog.data.d, 1)


@pytest.mark.parametrize("case", CASES[:2])
def test_ipm_kkt_stop(solved, case):
    prog, p_star = solved[case]
    res = IPMReLU(prog, stop="kkt", tol=1e-4).run()
    assert res.converged
    mult = res.state.multipliers
    assert all(m.shape == (prog.data.n, prog.data.P, 1) and bool((m >= 0).all()) for m in mult)
    assert prog.kkt(res.x, multipliers=mult).max <= 1e-4
    assert abs(prog.value(res.x) - p_star) <= 1e-4 * p_star


def test_ipm_float32_in_float32_out(solved):
    prog, p_star = solved[CASES[0]]
    prog32 = prog.to(dtype=torch.float32)
    res = IPMReLU(prog32).run()
    assert res.converged
    assert all(t.dtype == torch.float32 for t in res.x)
    assert all(m.dtype == torch.float32 for m in res.state.multipliers)
    assert abs(prog.value(tuple(t.double() for t in res.x)) - p_star) <= 1e-4 * p_star


def test_ipm_check_every_and_max_iter(solved):
    prog, _ = solved[CASES[0]]
    res = IPMReLU(prog, check_every=3).run()
    assert res.converged and all(it % 3 == 0 for it in res.history.iteration[:-1])
    short = IPMReLU(prog, max_iter=2).run()
    assert short.state.it == 2 and not short.converged
    assert short.history.iteration == [1, 2]


def test_ipm_without_gates_leaves_point_unrepaired(solved):
    prog, p_star = solved[CASES[0]]
    bare = TwoLayerReLU(prog.data.X, prog.data.Y[:, 0], beta=prog.beta,
                        patterns=Patterns(D=prog.D, gates=None))
    res = IPMReLU(bare, max_iter=60).run()
    # no repair possible: the raw interior-point iterate (nearly feasible) is returned
    assert prog.violation(res.x) < 1e-3
    assert abs(prog.value(res.x) - p_star) <= 1e-3 * p_star


def test_ipm_stops_gracefully_when_factorisation_fails(solved, monkeypatch):
    prog, _ = solved[CASES[0]]
    real = torch.linalg.cholesky_ex

    def failing(A, *args, **kwargs):
        L, info = real(A, *args, **kwargs)
        return L, (info + 1 if A.ndim == 2 else info)  # the n x n kernel "fails"

    monkeypatch.setattr(torch.linalg, "cholesky_ex", failing)
    res = IPMReLU(prog).run()
    assert res.state.failed and res.state.it == 0 and not res.converged


def test_ipm_bad_input():
    X, y = make_data(40, 4)
    prog = TwoLayerReLU(X, y, n_patterns=5, beta=1e-2)
    with pytest.raises(InputError, match="TwoLayerReLU"):
        IPMReLU(GatedReLU(X, y, n_patterns=5, beta=1e-2))
    X2, Y2 = make_data(40, 4, c=2)
    with pytest.raises(InputError, match="Columnwise"):
        IPMReLU(TwoLayerReLU(X2, Y2, n_patterns=5, beta=1e-2))
    with pytest.raises(InputError, match="x0"):
        IPMReLU(prog).run(prog.zeros())
    with pytest.raises(TypeError):
        IPMReLU(prog, rho=1.0)
    for key, value in (("tol", 0.0), ("tol", -1.0), ("feas_tol", 0.0), ("stop", "newton"),
                       ("step_fraction", 1.0), ("step_fraction", 0.0), ("refine", -1),
                       ("max_iter", -1), ("check_every", -2), ("dtype", torch.int64)):
        with pytest.raises(InputError, match=key if key != "dtype" else "dtype"):
            IPMReLU(prog, **{key: value})


def _interior(g: torch.Generator, N: int, m: int) -> torch.Tensor:
    v = torch.randn(N, m, generator=g, dtype=torch.float64)
    v[:, 0] = torch.linalg.vector_norm(v[:, 1:], dim=1) + torch.rand(N, generator=g, dtype=torch.float64) + 0.1
    return v


def test_soc_scaling_and_jordan_algebra():
    g = torch.Generator().manual_seed(0)
    s, z, r = _interior(g, 7, 4), _interior(g, 7, 4), torch.randn(7, 4, generator=g, dtype=torch.float64)
    eta, wb = soc.nt_scaling(s, z)
    assert torch.allclose(soc.jdet(wb), torch.ones(7, dtype=torch.float64))
    lam = soc.w_apply(eta, wb, z)
    assert torch.allclose(lam, soc.w_apply(eta, wb, s, inverse=True))
    assert torch.allclose(soc.w_apply(eta, wb, soc.w_apply(eta, wb, r), inverse=True), r)
    x = soc.jsolve(lam, r)
    assert torch.allclose(soc.jprod(lam, x), r)
    assert torch.allclose(soc.jprod(soc.identity(r), r), r)


def test_soc_and_linear_step_to_boundary():
    g = torch.Generator().manual_seed(1)
    v, dv = _interior(g, 6, 3), torch.randn(6, 3, generator=g, dtype=torch.float64)
    a = soc.soc_step(v, dv)
    if a < float("inf"):
        end = v + a * dv
        assert float(soc.jdet(end).min()) == pytest.approx(0.0, abs=1e-9)
        assert float((end[:, 0] - torch.linalg.vector_norm(end[:, 1:], dim=1)).min()) >= -1e-9
    inside = v + 0.99 * min(a, 1e6) * dv
    assert bool((inside[:, 0] > torch.linalg.vector_norm(inside[:, 1:], dim=1)).all())
    assert soc.soc_step(v, v) == float("inf")
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert soc.lin_step(x, torch.tensor([-2.0, 1.0], dtype=torch.float64)) == 0.5
    assert soc.lin_step(x, torch.ones(2, dtype=torch.float64)) == float("inf")


@pytest.mark.gpu
def test_ipm_runs_on_cuda():
    X, y = make_data(50, 5)
    prog = TwoLayerReLU(X, y, n_patterns=10, beta=1e-2, seed=0)
    ref = IPMReLU(prog).run()
    res = IPMReLU(prog.to(device="cuda")).run()
    assert res.converged and res.x[0].is_cuda
    assert abs(prog.value(tuple(t.cpu() for t in res.x)) - prog.value(ref.x)) <= 1e-6 * prog.value(ref.x)


def test_repair_shifts_along_gates_and_skips_stuck_blocks(solved):
    prog, _ = solved[CASES[0]]
    solver = IPMReLU(prog)
    g = torch.Generator().manual_seed(3)
    U = torch.randn(prog.data.d, 2 * prog.data.P, generator=g, dtype=torch.float64)
    slack = solver.S.G(solver._repair(U))
    eps = 1e-12 * float(solver.S.G(U).abs().max())  # the slack is a recomputed product
    assert float(slack.min()) >= -eps
    # a block whose violated row has X g = 0 cannot be shifted: left as it is
    row = int(torch.argmin(solver.S.G(U)[:, 0]))
    solver.absXg = solver.absXg.clone()
    solver.absXg[row, 0] = 0.0
    fixed = solver._repair(U)
    assert torch.equal(fixed[:, 0], U[:, 0]) and float(solver.S.G(fixed)[:, 1:].min()) >= -eps


def _scaled_pair(kappa: float, sigma: float):
    """A program and its copy with ``(kappa X, sigma y, sigma kappa beta)``: the same
    program in ``u sigma / kappa``."""
    X, Y = make_data(80, 6, seed=5, c=2)
    y = Y[:, 1]
    prog = TwoLayerReLU(X, y, n_patterns=12, beta=1e-2, seed=0)
    scaled = TwoLayerReLU(kappa * X, sigma * y, n_patterns=12, beta=1e-2 * sigma * kappa, seed=0)
    assert torch.equal(scaled.D, prog.D)
    return X, y, prog, scaled


def test_ipm_is_invariant_to_power_of_two_rescaling():
    """Power-of-two factors rescale exactly in floating point, and the IPM divides the
    data by its RMS entries: the rescaled run is the same run, in ``u sigma / kappa``."""
    kappa, sigma = 2.0 ** 7, 2.0 ** -10
    _, _, prog, scaled = _scaled_pair(kappa, sigma)
    a, b = IPMReLU(prog, tol=1e-6).run(), IPMReLU(scaled, tol=1e-6).run()
    assert a.converged and b.converged
    assert abs(a.state.it - b.state.it) <= 1  # exact scaling: the same run up to the last test
    for ua, ub in zip(a.x, b.x):
        assert torch.allclose(ub, ua * (sigma / kappa), rtol=1e-6, atol=1e-9 * sigma / kappa)
    assert scaled.value(b.x) == pytest.approx(sigma ** 2 * prog.value(a.x), rel=1e-6)


def test_ipm_is_invariant_to_the_scale_of_the_data():
    """Any other factors: both runs reach the optimum within the solver tolerance, in a
    similar number of iterations, and a large target with beta kept (which once
    stalled) still solves."""
    kappa, sigma = 100.0, 1e-3
    X, y, prog, scaled = _scaled_pair(kappa, sigma)
    problem, _ = cvx_solve(prog)
    tol = 1e-6
    a, b = IPMReLU(prog, tol=tol).run(), IPMReLU(scaled, tol=tol).run()
    assert a.converged and b.converged
    assert abs(a.state.it - b.state.it) <= 5  # rounding moves the last iterations only
    # each stops at a relative gap <= tol, so each value is within tol of the optimum
    # (the cvxpy value is itself accurate to ~1e-9 relative)
    assert prog.value(a.x) == pytest.approx(problem.value, rel=2 * tol)
    assert scaled.value(b.x) / sigma ** 2 == pytest.approx(problem.value, rel=2 * tol)
    assert prog.violation(a.x) <= 1e-6 and scaled.violation(b.x) <= 1e-6 * sigma / kappa
    big = TwoLayerReLU(X, 30.0 * y, n_patterns=12, beta=1e-2, seed=0)
    problem, _ = cvx_solve(big)
    res = IPMReLU(big, tol=1e-6).run()
    assert res.converged and res.state.it < 50
    assert abs(big.value(res.x) - problem.value) <= 1e-5 * problem.value


# -- several output columns: one interior-point run per column -------------------------
def test_columnwise_matches_cvxpy_on_two_outputs():
    X, Y = make_data(80, 6, seed=5, c=2)
    prog = TwoLayerReLU(X, Y, n_patterns=12, beta=1e-2, seed=0)
    problem, _ = cvx_solve(prog)
    p_star = problem.value
    res = solve(prog, tol=1e-5)
    assert res.method == "ipm" and res.converged
    V, W = res.x
    assert V.shape == W.shape == (prog.data.P, prog.data.d, 2)
    val = prog.value(res.x)
    assert abs(val - p_star) <= 1e-4 * p_star
    assert prog.violation(res.x) <= 1e-6
    st = res.state
    # bookkeeping within this run: the total is its columns' sum, the history ends there
    assert len(st.columns) == 2 and st.it == sum(c.it for c in st.columns)
    assert st.certificate == max(c.certificate for c in st.columns) <= 1e-5
    # the largest column certificate bounds the whole program's suboptimality
    assert (val - p_star) / val <= st.certificate + 1e-9
    assert all(m.shape == (prog.data.n, prog.data.P, 2) for m in st.multipliers)
    assert res.history.iteration == sorted(res.history.iteration)
    assert res.history.iteration[-1] == st.it


def test_column_programs_sum_to_the_program():
    X, Y = make_data(60, 5, seed=6, c=3)
    prog = TwoLayerReLU(X, Y, n_patterns=8, beta=1e-2, seed=0)
    g = torch.Generator().manual_seed(0)
    V, W = (torch.randn(prog.data.block_shape, generator=g, dtype=torch.float64) for _ in range(2))
    parts = [prog.column(j) for j in range(3)]
    assert all(torch.equal(p.D, prog.D) and p.data.c == 1 for p in parts)
    total = sum(p.value((V[..., j:j + 1], W[..., j:j + 1])) for j, p in enumerate(parts))
    assert total == pytest.approx(prog.value((V, W)), rel=1e-12)
    for bad in (-1, 3, 1.0, True):
        with pytest.raises(InputError, match="output column"):
            prog.column(bad)


def test_columnwise_composes_other_solvers_and_checks_options():
    X, Y = make_data(40, 4, seed=7, c=2)
    prog = TwoLayerReLU(X, Y, n_patterns=6, beta=1e-1, seed=0)
    ref = Columnwise(prog).run()
    admm = Columnwise(prog, solver=ADMMReLU, stop="gap", tol=1e-5).run(prog.zeros())
    assert admm.converged and ref.converged
    assert prog.value(admm.x) == pytest.approx(prog.value(ref.x), rel=1e-4)
    with pytest.raises(InputError, match="x0"):
        Columnwise(prog).run(prog.zeros())
    with pytest.raises(InputError, match="unknown option"):
        solve(prog, method="ipm", rho=1.0)
    with pytest.raises(InputError, match="TwoLayerReLU"):
        Columnwise(GatedReLU(X, Y, n_patterns=6, beta=1e-1))


def test_relu_gap_scales_each_output_column_on_its_own():
    """The columns' dual constraints are separate, so each column's dual candidate
    gets its own scale: valid (never above p*) and tight with unequal columns."""
    X, Y = make_data(80, 6, seed=5, c=2)
    prog = TwoLayerReLU(X, Y * torch.tensor([1.0, 30.0], dtype=Y.dtype), n_patterns=12,
                        beta=1e-2, seed=0)
    problem, _ = cvx_solve(prog)
    tol = 1e-7
    res = Columnwise(prog, tol=tol).run()
    gap = prog.gap(res.x, multipliers=res.state.multipliers)
    assert gap.dual <= problem.value * (1 + 1e-9)
    # each column stopped at its own gap <= tol; the whole program's gap, recomputed
    # from the multipliers, is of that order (one common scale gives about 12 tol)
    assert gap.relative <= 3 * tol
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = tuple(torch.randn(prog.data.block_shape, generator=g, dtype=torch.float64)
                  for _ in range(2))
        mult = tuple(torch.rand(prog.data.n, prog.data.P, 2, generator=g, dtype=torch.float64)
                     for _ in range(2))
        assert prog.gap(x, multipliers=mult).dual <= problem.value
