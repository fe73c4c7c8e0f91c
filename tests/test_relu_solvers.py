"""Solvers of the convex two-layer programs against cvxpy; the ``solve`` entry point."""

from __future__ import annotations

import sys

import pytest
import torch

from convexrecon.errors import InputError
from convexrecon.programs import GatedReLU, TwoLayerReLU
from convexrecon.solvers.admm_relu import ADMMGated, ADMMReLU, BlockSystem
from convexrecon.solvers.minibatch import MiniBatchProx
from convexrecon.solvers.solve import SolveResult, solve
from test_relu import cvx_solve, make_data

GATED_CASES = [(50, 5, 0, 1e-2), (120, 12, 1, 1e-2), (200, 25, 2, 1e-1)]
RELU_CASES = [(50, 5, 0, 1e-2), (100, 10, 1, 1e-1)]


@pytest.mark.parametrize("n,d,seed,beta", GATED_CASES)
def test_admm_gated_matches_cvxpy(n, d, seed, beta):
    X, y = make_data(n, d, seed=seed)
    prog = GatedReLU(X, y, n_patterns=15, beta=beta, seed=seed)
    problem, _ = cvx_solve(prog)
    res = ADMMGated(prog, tol=1e-5, max_iter=20000).run()
    assert res.converged and res.state.certificate <= 1e-5
    assert abs(prog.value(res.x) - problem.value) <= 1e-4 * problem.value
    # the solver's gap is a valid bound: never below the true relative gap
    true_gap = (prog.value(res.x) - problem.value) / prog.value(res.x)
    assert res.state.certificate >= true_gap - 1e-7
    # the program's own certificate (no solver information) is valid but looser
    assert true_gap - 1e-7 <= prog.certificate(res.x) <= 1e-3


@pytest.mark.parametrize("n,d,seed,beta", RELU_CASES)
def test_admm_relu_matches_cvxpy(n, d, seed, beta):
    X, y = make_data(n, d, seed=seed)
    prog = TwoLayerReLU(X, y, n_patterns=10, beta=beta, seed=seed)
    problem, _ = cvx_solve(prog)
    res = ADMMReLU(prog, tol=1e-4, feas_tol=1e-7, max_iter=20000).run()
    assert res.converged
    assert abs(prog.value(res.x) - problem.value) <= 1e-4 * problem.value
    assert prog.violation(res.x) < 1e-6
    assert res.state.certificate <= 1e-4


def test_admm_vector_gated_matches_cvxpy():
    X, Y = make_data(60, 5, seed=3, c=2)
    prog = GatedReLU(X, Y, n_patterns=8, beta=1e-2, seed=0)
    problem, _ = cvx_solve(prog)
    res = ADMMGated(prog, tol=1e-5, max_iter=20000).run()
    assert abs(prog.value(res.x) - problem.value) <= 1e-4 * problem.value


def test_block_system_solves_both_paths():
    g = torch.Generator().manual_seed(0)
    for n, P in ((30, 6), (8, 6)):  # Woodbury (n < P d) and primal (n > P d) paths
        d = 3
        X = torch.randn(n, d, generator=g, dtype=torch.float64)
        Ds = (torch.rand(n, P, generator=g) > 0.5).to(torch.float64)
        Ds[:, P // 2:] *= -1
        M = torch.eye(d, dtype=torch.float64) + 0.3 * X.T @ X
        sysm = BlockSystem(X, Ds, M)
        assert sysm.woodbury == (n <= P * d)
        R = torch.randn(P, d, 2, generator=g, dtype=torch.float64)
        U = sysm.solve(R, 0.7)
        back = sysm.adjoint(sysm.apply(U)) + 0.7 * (M @ U)
        assert torch.allclose(back, R, atol=1e-9)


def test_solve_auto_reports_and_warm_starts():
    X, y = make_data(80, 6, seed=4)
    prog = GatedReLU(X, y, n_patterns=12, beta=1e-2, seed=0)
    res = solve(prog, tol=1e-5)
    assert isinstance(res, SolveResult) and res.method == "admm"
    assert res.pattern_ratio > 0 and len(res.history) > 0
    first = res.state.it
    dual = ADMMGated(prog).dual(res.state)
    again = solve(prog, tol=1e-5, x0=res.x, dual=dual)
    assert again.state.it < first
    relu = TwoLayerReLU(X[:40], y[:40], n_patterns=6, beta=1e-1, seed=0)
    r = solve(relu, tol=1e-4)
    assert r.method == "ipm" and r.converged  # one output column: interior point
    two = TwoLayerReLU(X[:40], torch.stack([y[:40], -y[:40]], 1), n_patterns=6,
                       beta=1e-1, seed=0)
    r2 = solve(two, tol=1e-4)
    assert r2.method == "ipm" and r2.converged  # several columns: one IPM run each
    assert len(r2.state.columns) == 2 and r2.x[0].shape[-1] == 2


def test_solve_auto_uses_admm_above_the_ipm_size(monkeypatch):
    solve_mod = sys.modules["convexrecon.solvers.solve"]  # the package re-exports solve()
    X, y = make_data(40, 4, seed=4)
    prog = TwoLayerReLU(X, torch.stack([y, -y], 1), n_patterns=6, beta=1e-1, seed=0)
    monkeypatch.setattr(solve_mod, "IPM_MAX_ROWS", 39)
    r = solve(prog, tol=1e-4, stop="gap")
    assert r.method == "admm" and r.converged and prog.violation(r.x) <= 1e-6


def test_solve_rejects_bad_method_and_options():
    X, y = make_data(40, 4)
    prog = TwoLayerReLU(X, y, n_patterns=5, beta=1e-2)
    with pytest.raises(InputError, match="method"):
        solve(prog, method="newton")
    with pytest.raises(InputError, match="method"):
        solve(prog, method="fista")  # the cone constraints have no cheap prox
    with pytest.raises(InputError, match="unknown option"):
        solve(prog, stepsize=1.0)
    with pytest.raises(InputError, match="program"):
        solve(object())
    with pytest.raises(InputError, match="alpha"):
        solve(prog, alpha=3.0)


def test_solve_fista_and_cvxpy_on_gated():
    X, y = make_data(60, 5, seed=5)
    prog = GatedReLU(X, y, n_patterns=8, beta=5e-2, seed=0)
    ref = solve(prog, method="cvxpy")
    fista = solve(prog, method="fista", max_iter=20000, tol=1e-7)
    assert abs(prog.value(fista.x) - ref.history.objective[-1]) <= 1e-4 * ref.history.objective[-1]


@pytest.mark.parametrize("cls", [GatedReLU, TwoLayerReLU])
def test_minibatch_approaches_optimum(cls):
    X, y = make_data(300, 6, seed=6)
    prog = cls(X, y, n_patterns=8, beta=1e-1, seed=0)
    ref = solve(prog, tol=1e-5)
    p_star = prog.value(ref.x)
    res = MiniBatchProx(prog, batch_size=50, epochs=40, seed=0).run()
    val = prog.value(res.x)
    assert val <= 1.06 * p_star  # stochastic: approximate by design
    assert val < prog.value(prog.zeros())
    assert len(res.history) == 1  # full-data certificate at the end
    if cls is TwoLayerReLU:
        assert prog.violation(res.x) < 0.25  # quadratic penalty: approximately feasible
